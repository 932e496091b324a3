"""`lab hypothesis new` and `lab hypothesis review`: write an idea, judge one."""
from __future__ import annotations

import os

import click

from ..validation.schema import load as load_schema
from .changes import change_from_options
from .context import pass_ctx

SOURCES = load_schema("hypothesis")["properties"]["source"]["properties"]["kind"]["enum"]


def acting_as(default: str) -> str:
    """Who acts: the role the runner gave this process ($LAB_ROLE), else `default`."""
    return os.environ.get("LAB_ROLE") or default


@click.group("hypothesis")
def hypothesis_group() -> None:
    """Write hypotheses (hypotheses/<id>.yaml) and judge them."""


@hypothesis_group.command("new")
@click.option("--title", required=True)
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter override (repeatable).")
@click.option("--instructions", help="Free-text instructions for a worker.")
@click.option("--file", help="The editable file the parameters live in.")
@click.option("--rationale", default="")
@click.option("--expected", default="")
@click.option("--source", "source_kind", type=click.Choice(SOURCES), default="human", show_default=True,
              help="Where the idea comes from (the hypothesis schema's list).")
@click.option("--ref", default=None, help="Source reference, e.g. arXiv:1711.05101.")
@click.option("--author", default=None, help="Who writes it [default: $LAB_ROLE, else human].")
@pass_ctx
def hypothesis_new(ctx, title, params, instructions, file, rationale, expected, source_kind, ref, author):
    """Write a new proposed hypothesis with a collision-free id."""
    from ..state.create import new_hypothesis
    change = change_from_options(params, instructions, file)
    if not change:
        raise click.UsageError("give at least one --param or --instructions")
    source = {"kind": source_kind, **({"ref": ref} if ref else {})}
    hyp_id, path = new_hypothesis(ctx.lab, title, change, author=author or acting_as("human"),
                                  rationale=rationale, source=source, expected=expected,
                                  agent=os.environ.get("LAB_AGENT_ID"))
    click.echo(f"{hyp_id}\t{ctx.lab.rel(path)}")


@hypothesis_group.command("review")
@click.argument("hyp_id")
@click.option("--accept", "verdict", flag_value="accept", help="Accept it (the gates must agree).")
@click.option("--reject", "verdict", flag_value="reject", help="Reject it (give --rule).")
@click.option("--duplicate-of", metavar="ID", help="Mark it a duplicate of hypothesis ID.")
@click.option("--rule", help="The gate rule a rejection names (see the planner skill).")
@click.option("--note", default="", help="Why, in a sentence.")
@pass_ctx
def hypothesis_review(ctx, hyp_id, verdict, duplicate_of, rule, note):
    """Judge a proposed hypothesis: --accept, --reject --rule R, or --duplicate-of ID; one atomic write."""
    from ..roles.review import judge
    if duplicate_of:
        verdict = "duplicate"
    if verdict is None:
        raise click.UsageError("give --accept, --reject or --duplicate-of ID")
    hyp = judge(ctx.lab, hyp_id, verdict, by=acting_as("planner"), rule=rule, note=note,
                duplicate_of=duplicate_of, agent=os.environ.get("LAB_AGENT_ID"))
    click.echo(f"{hyp_id}: {hyp['status']}")
