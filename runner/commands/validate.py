"""`lab validate`: every state file against its schema; never writes.

git, pyarrow and the loop are not imported here: pre-commit runs this on every commit."""
from __future__ import annotations

import sys
import time

import click

from ..validation.validate import validate
from .context import Context, emit_json, pass_ctx


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
        for warning in report.warnings:
            click.echo(f"warning: {warning}")
        click.echo(f"{report.summary()} in {elapsed:.2f}s")
    sys.exit(0 if report.ok else 1)
