"""`lab sync` and `lab compact`: sharing a lab through a remote, and folding its small table files."""
from __future__ import annotations

import click

from ..errors import LabError
from .context import Context, pass_ctx


def _held(ctx: Context):
    """The runner lock: a running runner syncs and compacts by itself."""
    from ..loop.run import runner_lock
    lock = runner_lock(ctx.lab)
    if not lock.acquire(blocking=False):
        raise LabError("a runner holds this lab: it syncs by itself (`lab run --sync-every`) and its "
                       "compaction owner compacts", ctx.lab.rel(ctx.lab.locks / "runner.lock"))
    return lock


@click.command("sync")
@click.option("--remote", default="origin", show_default=True, help="The remote whose branch to merge and push to.")
@pass_ctx
def sync_command(ctx: Context, remote: str) -> None:
    """Fetch the remote's branch, merge it, judge again, push (retrying a lost race).

    State documents both sides changed keep the remote's version; a merged main
    whose target is new gets a baseline at once; a promotion of ours whose target
    the remote's replaced in a conflict is queued again on the merged main.
    """
    from ..loop.passlog import Committer
    from ..loop.sync import Sync

    lock = _held(ctx)
    try:
        done = Sync(ctx.lab, Committer(ctx.lab), remote).run()
    finally:
        lock.release()
    merged = sum(len(m.incoming) for m in done.merged)
    click.echo(f"lab sync: {remote}: merged {merged} commit(s), pushed")
    for path in sorted({p for m in done.merged for p in m.target_lost}):
        click.echo(f"  {path}: both sides changed it; the remote's version is main's now")
    for exp_id in done.requeued:
        click.echo(f"  queued again on the merged main: {exp_id}")
    if done.baseline:
        click.echo(f"  main's target is new: queued its baseline {done.baseline}")


@click.command("compact")
@pass_ctx
def compact_command(ctx: Context) -> None:
    """Fold every committed file of the scores and events tables into one part each.

    A part is named by its content: two labs that compact the same rows write the
    same file, and compactions of different rows still merge as files.
    """
    from ..repo import gitops
    from ..state.compact import compact, migrate

    lock = _held(ctx)
    try:
        changed = migrate(ctx.lab) + compact(ctx.lab, full=True)
        if changed:
            gitops.commit_paths(ctx.lab.root, changed, f"lab: compact the tables ({len(changed)} files)")
    finally:
        lock.release()
    click.echo(f"lab compact: {len(changed)} file(s) changed" if changed else "lab compact: nothing to compact")
