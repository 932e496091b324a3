"""`lab hypothesis new`: a proposed hypothesis with a collision-free id."""
from __future__ import annotations

import click

from .changes import change_from_options
from .context import pass_ctx


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
    change = change_from_options(params, instructions, file)
    if not change:
        raise click.UsageError("give at least one --param or --instructions")
    source = {"kind": source_kind, **({"ref": ref} if ref else {})}
    hyp_id, path = new_hypothesis(ctx.lab, title, change, author=author, rationale=rationale,
                                  source=source, expected=expected)
    click.echo(f"{hyp_id}\t{ctx.lab.rel(path)}")
