"""`lab work next|done|give-up`: how an agent the runner did not start does a worker's job."""
from __future__ import annotations

import shlex

import click

from .context import Context, emit_json, pass_ctx


@click.group("work")
def work_group() -> None:
    """Take an assigned experiment as an outside worker (roles.worker: off) and hand it back.

    \b
    lab work next          claim the oldest assigned entry: its id, worktree, entry file, environment
    lab work done ID       check the change in its worktree and set it ready
    lab work give-up ID    hand it back, cancelled, with --reason
    """


@work_group.command("next")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for agents.")
@pass_ctx
def work_next(ctx: Context, as_json: bool) -> None:
    """Claim the oldest assigned entry for this worker ($LAB_AGENT_ID, else user@host); exit 1 if none."""
    from ..roles import work
    entry = work.next_entry(ctx.lab, work.worker_name())
    if entry is None:
        emit_json(None) if as_json else click.echo("no assigned experiment is waiting")
        raise SystemExit(1)
    env = work.environment(ctx.lab, entry)
    if as_json:
        emit_json({"id": entry.id, "worktree": env["LAB_WORKTREE"], "entry": env["LAB_ENTRY"],
                   "change": entry.change, "base": entry.base, "env": env})
        return
    click.echo(f"{entry.id}\t{env['LAB_WORKTREE']}\t{ctx.lab.rel(entry.path)}")
    for name, value in env.items():
        click.echo(f"export {name}={shlex.quote(value)}")


@work_group.command("done")
@click.argument("exp_id")
@pass_ctx
def work_done(ctx: Context, exp_id: str) -> None:
    """Commit the worktree's change, check it against the gates, and set the entry ready."""
    from ..roles import work
    entry = work.done(ctx.lab, exp_id)
    click.echo(f"{entry.id}: assigned -> ready")


@work_group.command("give-up")
@click.argument("exp_id")
@click.option("--reason", required=True, help="Why the change could not be made.")
@pass_ctx
def work_give_up(ctx: Context, exp_id: str, reason: str) -> None:
    """Hand the entry back: cancelled, with the reason in its history."""
    from ..roles import work
    entry = work.give_up(ctx.lab, exp_id, reason)
    click.echo(f"{entry.id}: assigned -> cancelled ({reason})")
