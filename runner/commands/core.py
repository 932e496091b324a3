"""Core commands: init, validate, status, hypothesis, queue, schema."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from ..lab import Lab
from ..errors import LabError
from ..scaffold import init_lab, template_names
from ..validation.validate import validate

# git, pyarrow and the state helpers are imported inside the commands that need
# them: `lab validate` runs on every commit (pre-commit) and must start fast.


class Context:
    def __init__(self, directory: str | None):
        self.directory = directory
        self._lab: Lab | None = None

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            self._lab = Lab.find(self.directory)
        return self._lab


pass_ctx = click.make_pass_decorator(Context)


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--template", type=click.Choice(template_names()), default="tiny-gpt", show_default=True,
              help="tiny-gpt: the embedded default target; blank: bring your own script.")
@click.option("--name", help="The lab's name (default: the directory's name).")
@click.option("--force", is_flag=True, help="Scaffold into a non-empty directory.")
def init_command(directory: str, template: str, name: str | None, force: bool) -> None:
    """Scaffold a new lab in DIRECTORY as a new git repo with a first commit."""
    kept: list[str] = []
    root = init_lab(Path(directory), template=template, name=name, force=force, kept=kept)
    click.echo(f"initialised lab in {root} (template {template})")
    if kept:
        tops = dict.fromkeys(k.split("/")[0] + ("/" if "/" in k else "") for k in kept)
        click.echo(f"kept {len(kept)} existing file(s) unchanged in: {', '.join(tops)}")
    click.echo(f"next: cd {directory} && lab status")


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for agents.")
@pass_ctx
def validate_command(ctx: Context, paths: tuple[str, ...], as_json: bool) -> None:
    """Validate lab state files (all of them, or those under PATHS); never writes.

    Checks lab.yaml, hypotheses/, queue/, experiments/ (YAML against schemas/,
    ids, cross-references, Parquet against its Arrow schema), skills/*/SKILL.md
    and kernels/*/build.toml. Prints one `path:line: field: message` line per
    problem and a one-line summary; exit 0 when clean, 1 on any problem.
    """
    started = time.perf_counter()
    report = validate(ctx.lab.root, list(paths) or None)
    elapsed = time.perf_counter() - started
    if as_json:
        emit_json({**report.to_dict(), "seconds": round(elapsed, 3)})
    else:
        for problem in report.problems:
            click.echo(str(problem))
        click.echo(f"{report.summary()} in {elapsed:.2f}s")
    sys.exit(0 if report.ok else 1)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for agents.")
@click.option("--watch", is_flag=True, help="A live view: running jobs and progress, queue, best, events.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between frames (--watch).")
@pass_ctx
def status_command(ctx: Context, as_json: bool, watch: bool, interval: float) -> None:
    """A short summary: hypotheses, queue, finished experiments, best score, recent events."""
    if watch:
        from ..report.live import watch as live_view
        live_view(ctx.lab, interval)
        return
    from ..report.status import collect, render
    info = collect(ctx.lab)
    emit_json(info) if as_json else click.echo(render(info))


def _change(params: tuple[str, ...], instructions: str | None, file: str | None) -> dict:
    change = {}
    if params:
        from ..state.create import parse_params
        change["params"] = parse_params(params)
    if instructions:
        change["instructions"] = instructions
    if file:
        change["file"] = file
    return change


@click.group("hypothesis")
def hypothesis_group() -> None:
    """Create hypotheses (hypotheses/<id>.yaml)."""


@hypothesis_group.command("new")
@click.option("--title", required=True)
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter override (repeatable).")
@click.option("--instructions", help="Free-text instructions for a worker.")
@click.option("--file", help="The editable file the parameters live in.")
@click.option("--rationale", default="")
@click.option("--expected", default="")
@click.option("--source", "source_kind", type=click.Choice(["paper", "idea-library", "result", "human"]),
              default="human", show_default=True)
@click.option("--ref", default=None, help="Source reference, e.g. arXiv:1711.05101.")
@click.option("--author", default="human", show_default=True)
@pass_ctx
def hypothesis_new(ctx, title, params, instructions, file, rationale, expected, source_kind, ref, author):
    """Write a new proposed hypothesis with a collision-free id."""
    from ..state.create import new_hypothesis
    change = _change(params, instructions, file)
    if not change:
        raise click.UsageError("give at least one --param or --instructions")
    source = {"kind": source_kind, **({"ref": ref} if ref else {})}
    hyp_id, path = new_hypothesis(ctx.lab, title, change, author=author, rationale=rationale,
                                  source=source, expected=expected)
    click.echo(f"{hyp_id}\t{ctx.lab.rel(path)}")


@click.group("queue")
def queue_group() -> None:
    """Create queue entries (queue/<id>.yaml)."""


@queue_group.command("add")
@click.option("--hypothesis", "hyp_id", required=True, help="The hypothesis this experiment tests.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Override the hypothesis's change (repeatable).")
@click.option("--instructions")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--wave", type=int, default=0)
@click.option("--base", default=None, help="Base commit (default: main's HEAD).")
@pass_ctx
def queue_add(ctx, hyp_id, params, instructions, priority, wave, base):
    """Queue one experiment against one base commit."""
    from ..state.create import load_hypothesis, new_experiment
    lab = ctx.lab
    hypothesis = load_hypothesis(lab, hyp_id)
    change = _change(params, instructions, None) or hypothesis.get("change") or {}
    explicit_base = base is not None
    base = _base_commit(lab, base or "HEAD")
    if not explicit_base:
        from ..loop.promotion import base_commit
        base = base_commit(lab, base)  # the commit that last changed the target: "same base" = same code
    exp_id, path = new_experiment(lab, hyp_id, change, base, priority=priority, wave=wave,
                                  by=os.environ.get("LAB_ROLE", "human"))
    click.echo(f"{exp_id}\t{lab.rel(path)}")


def _base_commit(lab: Lab, ref: str) -> str:
    """The full commit id of `ref`, or one clear error."""
    import git

    from ..repo import gitops
    try:
        return gitops.run_git(lab.root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except git.GitCommandError:
        hint = " (the repository has no commit yet)" if ref == "HEAD" else ""
        raise LabError(f"cannot resolve {ref!r} to a commit{hint}", field="base") from None


@click.group("schema")
def schema_group() -> None:
    """Show the lab's schemas."""


@schema_group.command("tables")
def schema_tables() -> None:
    """Print the Arrow schemas of the Parquet tables as Markdown (schemas/tables.md)."""
    from ..files.tables import tables_markdown
    click.echo(tables_markdown(), nl=False)


COMMANDS = (init_command, validate_command, status_command, hypothesis_group, queue_group, schema_group)
