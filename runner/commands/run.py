"""`lab run` and `lab baseline`: the loop, and the loop on main's noise."""
from __future__ import annotations

import signal
import statistics
import threading

import click

from ..report.progress import progress_printer
from .context import Context, pass_ctx

# The loop's modules are imported inside each command: `lab validate` (run by
# pre-commit on every commit) should not pay for importing the whole runner.


def stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum, frame):
        click.echo(f"\nlab run: signal {signum}: finishing this pass; running jobs stay recoverable", err=True)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@click.command("run")
@click.option("--once", is_flag=True, help="One reconcile pass, then return.")
@click.option("--until-idle", is_flag=True, help="Return when nothing is queued or running.")
@click.option("--max-experiments", type=int, default=None, help="Dispatch at most N experiments.")
@click.option("--sync-every", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Share the lab through a remote with other runners: `lab sync` this often, after "
                   "every claim and promotion; a job starts only once its claim is pushed.")
@click.option("--remote", default="origin", show_default=True, help="The remote to sync with (--sync-every).")
@click.option("--compact/--no-compact", default=None,
              help="Fold small table files into parts (default: only a runner without --sync-every; "
                   "among runners sharing a remote, give exactly one --compact).")
@click.option("--quiet", is_flag=True)
@pass_ctx
def run_command(ctx: Context, once: bool, until_idle: bool, max_experiments: int | None, sync_every: float | None,
                remote: str, compact: bool | None, quiet: bool) -> None:
    """Run the lab: watch files, dispatch, record, promote (Ctrl-C stops cleanly)."""
    from ..loop.run import run

    lab = ctx.lab
    stop = stop_on_signals()
    sharing = {"remote": remote, "sync_every": sync_every} if sync_every else {}
    runner = run(lab, once=once, until_idle=until_idle, max_experiments=max_experiments, stop=stop,
                 on_event=None if quiet else progress_printer(lab), compact=compact, **sharing)
    click.echo(f"lab run: dispatched {runner.dispatched}, recorded {runner.recorded}")


@click.command("baseline")
@click.option("--repeats", type=int, default=3, show_default=True, help="Seeds to run (the noise sample).")
@pass_ctx
def baseline_command(ctx: Context, repeats: int) -> None:
    """Measure the current main K times with different seeds; store the noise."""
    from ..loop.run import run
    from ..loop.scoring import base_commit, key_values, main_noise, target_key
    from ..report.status import noise_info, noise_line
    from ..state.create import new_experiment
    from ..state.scores import scores

    lab = ctx.lab
    main = base_commit(lab)
    first = next_seed(lab, target_key(lab, main))
    for seed in range(first, first + repeats):
        new_experiment(lab, None, {}, main, priority=100, wave=seed, kind="baseline", by="human")
    click.echo(f"queued {repeats} baseline run(s) of {main[:10]} (seeds {first}..{first + repeats - 1})")
    run(lab, until_idle=True, plan=False, stop=stop_on_signals(), on_event=progress_printer(lab))
    values = key_values(scores(lab), target_key(lab, main))
    if values:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        click.echo(f"{lab.metric}: mean {statistics.fmean(values):.6g}, stdev {spread:.4g} over {len(values)} "
                   f"run(s); {noise_line(noise_info(main_noise(lab)))}")


def next_seed(lab, key: str) -> int:
    """The first seed no baseline of this target used: a repeated seed would repeat its number
    and shrink the measured noise."""
    from ..state.scores import scores

    table = scores(lab)
    waves = [w for t, k, w in zip(table["target"].to_pylist(), table["kind"].to_pylist(),
                                  table["wave"].to_pylist()) if t == key and k == "baseline" and w is not None]
    return max(waves) + 1 if waves else 0

