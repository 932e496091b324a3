"""`lab demo`: the loop on the embedded default, in a fresh lab."""
from __future__ import annotations

import click

from .run import stop_on_signals


@click.command("demo")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--minutes", type=float, default=9.5, show_default=True,
              help="Finish within this long: no run starts that would end later.")
@click.option("--experiments", type=int, default=40, show_default=True, help="At most this many experiments.")
@click.option("--template", type=click.Choice(["tiny-gpt", "finetune", "kernel"]), default="tiny-gpt",
              show_default=True, help="tiny-gpt: the embedded GPT on CPU slots; finetune: tune the recipe of a "
              "TRL fine-tune of a built-in tiny Qwen3 on CPU slots (the finetune extra); kernel: tune "
              "qwen3-rmsnorm, one slot per GPU.")
@click.option("--slots", type=int, default=2, show_default=True, help="Parallel CPU slots (tiny-gpt, finetune).")
@click.option("--budget", type=float, default=None, help="Seconds of training per run (tiny-gpt; default: train.py's).")
def demo_command(directory: str | None, template: str, minutes: float, experiments: int, slots: int,
                 budget: float | None) -> None:
    """Scaffold a fresh lab from a template and run the loop on it (builtin roles, no LLM)."""
    from ..demo import run_demo

    run_demo(directory, template=template, minutes=minutes, experiments=experiments, slots=slots, budget=budget,
             stop=stop_on_signals())
