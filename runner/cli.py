"""The `lab` command line. Each command group lives in runner/commands/."""
from __future__ import annotations

import sys

import click

from . import __version__
from .commands import core, kernel, papers, query, run, skills
from .commands import report as report_commands
from .errors import LabError


class LabGroup(click.Group):
    """Prints a LabError as one `path:line: field: message` line, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LabError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=LabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lab")
@click.option("-C", "directory", default=None, metavar="DIR",
              help="Run as if started in DIR (the lab is found from there upwards).")
@click.pass_context
def main(ctx: click.Context, directory: str | None) -> None:
    """benchlab: a git-native lab where coding agents do AI systems engineering.

    All state is files in this repo: lab.yaml, hypotheses/, queue/, experiments/.
    """
    ctx.obj = core.Context(directory)


for command in (*core.COMMANDS, *run.COMMANDS, *report_commands.COMMANDS, kernel.kernel, query.query_command,
                papers.papers_group, skills.skills_group):
    main.add_command(command)


if __name__ == "__main__":
    main()
