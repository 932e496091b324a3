"""`lab queue add`: one experiment against one base commit."""
from __future__ import annotations

import click

from ..errors import LabError
from ..lab import Lab
from .changes import change_from_options
from .context import pass_ctx
from .hypothesis import acting_as


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
@click.option("--base", default=None,
              help="Base commit [default: the commit on main that last changed the target's editable files].")
@click.option("--backend", type=click.Choice(["local", "hf_jobs", "slurm"]), default=None,
              help="Where it runs (default: lab.yaml backends.default).")
@click.option("--flavor", default=None, help="Hardware it asks for (an hf_jobs flavor, a Slurm partition).")
@pass_ctx
def queue_add(ctx, hyp_id, params, instructions, priority, wave, base, backend, flavor):
    """Queue one experiment against one base commit."""
    from ..state.create import load_hypothesis, new_experiment
    lab = ctx.lab
    hypothesis = load_hypothesis(lab, hyp_id)
    change = change_from_options(params, instructions, None) or hypothesis.get("change") or {}
    explicit_base = base is not None
    base = _base_commit(lab, base or "HEAD")
    if not explicit_base:
        from ..loop.scoring import base_commit
        base = base_commit(lab, base)  # the commit that last changed the target: "same base" = same code
    exp_id, path = new_experiment(lab, hyp_id, change, base, priority=priority, wave=wave,
                                  by=acting_as("human"), backend=backend, flavor=flavor)
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
