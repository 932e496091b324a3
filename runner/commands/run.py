"""`lab run`, `lab baseline`, `lab demo`: the loop and its two front doors."""
from __future__ import annotations

import signal
import statistics
import threading

import click

from .core import Context, pass_ctx

# The loop's modules are imported inside each command: `lab validate` (run by
# pre-commit on every commit) should not pay for importing the whole runner.


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum, frame):
        click.echo(f"\nlab run: signal {signum}: finishing this pass; running jobs stay recoverable", err=True)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def progress_line(lab, kind: str, info: dict) -> str | None:
    """One line per start and per result: what a person watching the loop wants to see."""
    entry = info["entry"]
    if kind == "running":
        change = (entry.data.get("change") or {}).get("params") or ("baseline" if entry.is_baseline else "")
        return f"start     {entry.id}  {(entry.data.get('job') or {}).get('slot', '')}  {change}"
    if kind == "recorded":
        o = info["outcome"]
        value = f"{lab.metric} {o.value:.4f}" if isinstance(o.value, float) and o.value == o.value else "-"
        mark = "PROMOTED" if o.promoted else o.status
        return f"{mark:<9} {entry.id}  {value}  {o.reason[:100]}"
    return None


def progress_printer(lab):
    def on_event(kind: str, info: dict) -> None:
        line = progress_line(lab, kind, info)
        if line:
            click.echo("  " + line)
    return on_event


@click.command("run")
@click.option("--once", is_flag=True, help="One reconcile pass, then return.")
@click.option("--until-idle", is_flag=True, help="Return when nothing is queued or running.")
@click.option("--max-experiments", type=int, default=None, help="Dispatch at most N experiments.")
@click.option("--quiet", is_flag=True)
@pass_ctx
def run_command(ctx: Context, once: bool, until_idle: bool, max_experiments: int | None, quiet: bool) -> None:
    """Run the lab: watch files, dispatch, record, promote (Ctrl-C stops cleanly)."""
    from ..loop.reconcile import run

    lab = ctx.lab
    stop = _stop_on_signals()
    runner = run(lab, once=once, until_idle=until_idle, max_experiments=max_experiments, stop=stop,
                 on_event=None if quiet else progress_printer(lab))
    click.echo(f"lab run: dispatched {runner.dispatched}, recorded {runner.recorded}")


@click.command("baseline")
@click.option("--repeats", type=int, default=3, show_default=True, help="Seeds to run (the noise sample).")
@pass_ctx
def baseline_command(ctx: Context, repeats: int) -> None:
    """Measure the current main K times with different seeds; store the noise."""
    from ..loop.reconcile import run
    from ..loop.promotion import base_commit, key_values, noise_margin, target_key
    from ..state.scores import scores
    from ..state.create import new_experiment

    lab = ctx.lab
    main = base_commit(lab)
    for seed in range(repeats):
        new_experiment(lab, None, {}, main, priority=100, wave=seed, kind="baseline", by="human")
    click.echo(f"queued {repeats} baseline run(s) of {main[:10]}")
    run(lab, until_idle=True, plan=False, stop=_stop_on_signals(), on_event=progress_printer(lab))
    values = key_values(scores(lab), target_key(lab, main))
    if values:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        click.echo(f"{lab.metric}: mean {statistics.fmean(values):.6g}, stdev {spread:.4g} over {len(values)} "
                   f"run(s); promotion margin now {noise_margin(lab):.4g}")


@click.command("demo")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--minutes", type=float, default=9.5, show_default=True,
              help="Finish within this long: no run starts that would end later.")
@click.option("--experiments", type=int, default=40, show_default=True, help="At most this many experiments.")
@click.option("--slots", type=int, default=2, show_default=True, help="Parallel CPU slots.")
@click.option("--budget", type=float, default=None, help="Seconds of training per run (default: train.py's).")
def demo_command(directory: str | None, minutes: float, experiments: int, slots: int, budget: float | None) -> None:
    """Scaffold a fresh lab on the embedded default and run the loop on it (no LLM)."""
    from ..demo import run_demo

    run_demo(directory, minutes=minutes, experiments=experiments, slots=slots, budget=budget,
             stop=_stop_on_signals())


COMMANDS = (run_command, baseline_command, demo_command)
