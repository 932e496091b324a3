"""`lab finetune check`: the preflight of a finetune.py plan (data, template, memory, flavor, cost)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import click

from .context import Context, emit_json, pass_ctx


@click.group("finetune")
def finetune_group() -> None:
    """Fine-tune a model with TRL (the finetune template's finetune.py)."""


def _overrides(model, dataset, config, method, sets) -> dict:
    out = {}
    for pair in sets:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip().isidentifier():
            raise click.BadParameter(f"{pair!r}: use NAME=VALUE", param_hint="--set")
        try:
            out[name.strip()] = ast.literal_eval(raw)  # numbers, True/False/None, quoted strings
        except (ValueError, SyntaxError):
            out[name.strip()] = raw
    named = {"MODEL": model, "DATASET": dataset, "DATASET_CONFIG": config, "METHOD": method}
    return {**out, **{k: v for k, v in named.items() if v is not None}}


@finetune_group.command("check")
@click.argument("script", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", help="Override MODEL (a Hub id or a local folder).")
@click.option("--dataset", help="Override DATASET (a Hub id, a local file or folder).")
@click.option("--config", "dataset_config", help="Override DATASET_CONFIG.")
@click.option("--method", type=click.Choice(["full", "lora"]), help="Override METHOD.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Override any constant (repeatable).")
@click.option("--flavor", help="Check this HF Jobs flavor instead of picking the cheapest that fits.")
@click.option("--flavors", "flavors_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your own flavors table (default: runner/data/hf-jobs-flavors.yaml).")
@click.option("--params", type=float, help="The model's parameter count, when its config cannot be read.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for agents.")
@pass_ctx
def check_command(ctx: Context, script, model, dataset, dataset_config, method, sets, flavor, flavors_file, params,
                  as_json):
    """Preflight SCRIPT (default: finetune.py here, or in -C DIR): data format and columns, chat template,
    parameters, memory for full and LoRA, the cheapest HF Jobs flavor that fits, time and cost.

    Reads the script's constants without running it. Exit 0 when the plan can run, 1 when
    it cannot (wrong columns, a template without generation markers, too big for the flavor).
    Offline (HF_HUB_OFFLINE=1) a Hub data set's columns are not checked; it says so.
    """
    from ..finetune.check import lines, read_plan, run_check
    here = Path(ctx.directory or ".") / "finetune.py"
    if script is None and here.is_file():
        script = here
    plan, shown = read_plan(script, _overrides(model, dataset, dataset_config, method, sets))
    report = run_check(plan, shown, flavor=flavor, flavors_file=flavors_file, params=params)
    if as_json:
        emit_json(report.to_dict())
    else:
        for line in lines(report):
            click.echo(line, err=line.startswith("error:"))
        click.echo("ok: the plan can run" if report.ok else f"refused: {len(report.problems)} problem(s)",
                   err=not report.ok)
    sys.exit(0 if report.ok else 1)
