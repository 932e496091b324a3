"""The `lab` command line. Each command group lives in runner/commands/."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .commands import (
    demo,
    finetune,
    hypothesis,
    init,
    kernel,
    papers,
    query,
    queue,
    report,
    reproduce,
    run,
    schema,
    skills,
    status,
    sync,
    validate,
    work,
)
from .commands.context import Context
from .errors import LabError, describe, write_crash_log

# optional packages and the extra that installs each (pyproject.toml)
EXTRAS = {"plotly": "report", "matplotlib": "report", "duckdb": "query", "trackio": "trackio", "torch": "torch",
          "ninja": "torch", "kernels": "kernels", "liger_kernel": "kernels", "transformers": "finetune",
          "trl": "finetune", "datasets": "finetune", "peft": "finetune", "accelerate": "finetune",
          "optuna": "search"}


class LabGroup(click.Group):
    """Every failure ends as one line: a LabError as `path:line: field: message` (exit 2),
    anything unexpected as what failed plus the log holding its traceback (exit 3)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LabError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into a line
            extra = EXTRAS.get((getattr(exc, "name", None) or "").split(".")[0])
            if isinstance(exc, ModuleNotFoundError) and extra:
                click.echo(f"error: this command needs {exc.name}, which is not installed: "
                           f"pip install 'benchlab[{extra}]'", err=True)
                sys.exit(2)
            start = Path(ctx.obj.directory) if getattr(ctx.obj, "directory", None) else None
            log = write_crash_log(exc, sys.argv[1:], start)
            click.echo(f"error: {describe(exc)} (traceback in {log})", err=True)
            sys.exit(3)


@click.group(cls=LabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lab")
@click.option("-C", "directory", default=None, metavar="DIR",
              help="Run as if started in DIR (the lab is found from there upwards).")
@click.pass_context
def main(ctx: click.Context, directory: str | None) -> None:
    """benchlab: a git-native lab where coding agents do AI systems engineering.

    All state is files in this repo: lab.yaml, hypotheses/, queue/, experiments/.
    """
    ctx.obj = Context(directory)


for command in (init.init_command, validate.validate_command, status.status_command, hypothesis.hypothesis_group,
                queue.queue_group, run.run_command, run.baseline_command, demo.demo_command, query.query_command,
                papers.papers_group, skills.skills_group, report.report_command, report.serve_command,
                work.work_group, kernel.kernel, finetune.finetune_group, schema.schema_group,
                reproduce.reproduce_command, sync.sync_command, sync.compact_command):
    main.add_command(command)


if __name__ == "__main__":
    main()
