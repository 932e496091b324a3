"""`lab reproduce ID`: run a recorded experiment's exact commit again and say whether its score
lands within the noise margin of the recorded one (loop/reproduction.py)."""
from __future__ import annotations

import sys

import click

from .context import Context, emit_json, pass_ctx


@click.command("reproduce")
@click.argument("exp_id", metavar="ID")
@click.option("--backend", type=click.Choice(["local", "hf_jobs", "slurm"]), default=None,
              help="Run it there (default: where the original ran, same environment class).")
@click.option("--flavor", default=None, help="Hardware to ask the backend for (an HF Jobs flavor, a Slurm partition).")
@click.option("--no-wait", is_flag=True, help="Only queue it (a running `lab run` takes it).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def reproduce_command(ctx: Context, exp_id: str, backend: str | None, flavor: str | None, no_wait: bool,
                      as_json: bool) -> None:
    """Re-run experiment ID's exact commit (its seed, its environment class unless --backend/--flavor
    name another) and report whether the score lands within the noise margin; recorded as a
    reproduction linked to the original. Exit 1 when it lands outside the margin or fails."""
    from ..loop.reproduction import queue
    from ..loop.run import run, runner_lock
    from ..report.progress import progress_printer
    from .run import stop_on_signals

    lab = ctx.lab
    new_id, path = queue(lab, exp_id, backend, flavor)
    lock = runner_lock(lab)
    if no_wait or not lock.acquire(blocking=False):
        click.echo(f"{new_id}: queued the reproduction of {exp_id} ({path}); the runner records it in "
                   f"experiments/{new_id}/")
        return
    lock.release()
    run(lab, until_idle=True, plan=False, stop=stop_on_signals(), on_event=None if as_json else progress_printer(lab))
    record = lab.experiments / new_id / "experiment.yaml"
    from ..files.yamlio import load_yaml
    data = load_yaml(record)[0] if record.exists() else {"status": "queued", "result": {}}
    result = data.get("result") or {}
    verdict = {"id": new_id, "reproduces": exp_id, "status": data["status"], "value": result.get("value"),
               "recorded": result.get("base_value"), "reason": result.get("reason", "not run"),
               "reproduced": data["status"] == "finished" and result.get("reason", "").startswith("reproduced")}
    emit_json(verdict) if as_json else click.echo(f"{new_id}: {verdict['status']}: {verdict['reason']}")
    if not verdict["reproduced"]:
        sys.exit(1)
