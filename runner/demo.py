"""`lab demo`: the whole loop on the embedded default, in a fresh directory.

It never touches the checkout it is run from: the lab is scaffolded from the
installed package's assets into DIR (a new temporary directory by default).
"""
from __future__ import annotations

import importlib.util
import json
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

import click

from .backends.local import detect_gpus
from .errors import LabError
from .lab import Lab
from .loop.run import run
from .loop.scoring import base_commit, key_values, main_noise, target_key
from .repo import gitops
from .report.progress import progress_line
from .report.status import EVIDENCE, evidence_counts, noise_info, noise_line
from .scaffold import init_lab
from .state.create import new_experiment
from .state.scores import best_row, scores

BASE_SEEDS = 4   # baseline runs of the first main: its score and the seed noise the margin follows from
# A GPU timing's run-to-run spread is its noise, and four runs of it came out at half the spread of
# 25 runs on one H200 pair: the kernel lab spends more baselines before its margin means anything.
TEMPLATE_BASE_SEEDS = {"kernel": 8}


def baseline_seeds(template: str, slots: int) -> int:
    """How many baseline runs the demo queues first: at least one per slot."""
    return max(TEMPLATE_BASE_SEEDS.get(template, BASE_SEEDS), slots)


def run_demo(directory: str | None, *, template: str = "tiny-gpt", minutes: float = 9.5, experiments: int = 40,
             slots: int = 2, budget: float | None = None, stop: threading.Event | None = None) -> Lab:
    started = time.monotonic()
    _check_template(template, budget)
    if template == "kernel":
        slots = len(detect_gpus())   # one slot per GPU
        if not slots:
            raise LabError("the kernel demo needs a CUDA GPU (nvidia-smi lists none)", field="template")
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="benchlab-demo-"))
    init_lab(root, template=template)
    lab = _configure(Lab(root), slots, budget)
    click.echo(f"lab demo: a fresh {template} lab in {root}")
    click.echo(f"  {slots} {'GPU' if template == 'kernel' else 'CPU'} slots, up to {experiments} experiments, "
               f"done within {minutes:g} min; builtin roles (no LLM)")
    main = base_commit(lab)
    seeds = baseline_seeds(template, slots)
    for seed in range(seeds):
        new_experiment(lab, None, {}, main, priority=100, wave=seed, kind="baseline", by="demo")
    gitops.commit_paths(root, ["queue"], f"demo: queue {seeds} baseline runs (seeds 0..{seeds - 1})")

    runner = run(lab, until_idle=True, max_experiments=experiments + seeds, stop=stop,
                 on_event=_timed(lab, started),
                 deadline=started + minutes * 60)
    _summary(lab, main, runner, time.monotonic() - started)
    return lab


def _check_template(template: str, budget: float | None) -> None:
    if budget and template != "tiny-gpt":
        raise LabError(f"--budget is train.py's time budget; the {template} template's runs have their own",
                       field="budget")
    if template == "finetune" and importlib.util.find_spec("trl") is None:
        raise LabError("the finetune demo trains with TRL, which is not installed: "
                       "pip install 'benchlab[finetune]'", field="template")


def _configure(lab: Lab, slots: int, budget: float | None) -> Lab:
    text = lab.config_path.read_text()
    text = re.sub(r"(?m)^(\s+slots:) \d+", rf"\1 {slots}", text)
    text = re.sub(r"(?m)^(\s+max_running:) \d+", rf"\1 {slots}", text)
    if budget:
        text = re.sub(r"(?m)^(  stall_timeout_s: .*)$", rf'\1\n  env: {{LAB_TIME_BUDGET: "{budget:g}"}}', text)
    lab.config_path.write_text(text)
    gitops.commit_paths(lab.root, ["lab.yaml"], f"demo: {slots} slots" + (f", {budget:g}s per run" if budget else ""))
    return Lab(lab.root)


def _timed(lab: Lab, started: float):
    def on_event(kind, info):
        line = progress_line(lab, kind, info)
        if line:
            click.echo(f"[{time.monotonic() - started:6.1f}s] {line}")
    return on_event


def _summary(lab: Lab, first_main: str, runner, elapsed: float) -> None:
    table = scores(lab)
    base_values = key_values(table, target_key(lab, first_main))
    click.echo("")
    click.echo(f"lab demo: {runner.recorded} experiments recorded in {elapsed:.0f}s")
    if base_values:
        spread = f", stdev {statistics.stdev(base_values):.4f}" if len(base_values) > 1 else ""
        click.echo(f"  baseline {lab.metric}: {statistics.fmean(base_values):.4f} "
                   f"(mean of {len(base_values)} seeds{spread})")
    click.echo(f"  noise: {noise_line(noise_info(main_noise(lab, table)))}")
    promoted = table.filter(table["promoted"])["evidence"].to_pylist() if table.num_rows else []
    if promoted:
        counts = {**dict.fromkeys(EVIDENCE, 0), **evidence_counts(promoted)}
        click.echo(f"  promotions: {len(promoted)} ({counts['confirmed']} confirmed on a second seed, "
                   f"{counts['strong']} strong (z >= 3) on one run, {counts['single-run']} single-run evidence)")
    best = best_row(lab, table, main_only=True)
    if best and base_values and best["kind"] != "baseline":
        base = statistics.fmean(base_values)
        click.echo(f"  best on main: {lab.metric} {best['value']:.4f} ({100 * (best['value'] - base) / base:+.2f}%) "
                   f"from {best['id']}: {best['title']}")
        click.echo(f"  best change: {json.loads(best['change'] or '{}')}")
        editable = lab.config["target"]["editable"]
        click.echo(f"  main's {', '.join(editable)} vs the start:\n" + _indent(gitops.run_git(
            lab.root, "diff", "--stat", first_main, "HEAD", "--", *editable)))
    else:
        click.echo("  no promotion this time")
    leaderboard = lab.experiments / "LEADERBOARD.md"
    if leaderboard.exists():
        click.echo("")
        click.echo(leaderboard.read_text())
    click.echo(f"files: {lab.root} (experiments/, hypotheses/, experiments/scores/)")
    report = _report(lab)
    if report:
        click.echo(f"report: {report}")


def _report(lab: Lab) -> Path | None:
    try:
        from .report import write_report
        return write_report(lab, lab.runtime / "report")
    except ModuleNotFoundError as exc:   # the report's extra is optional; the lab's files are complete
        click.echo(f"report: skipped ({exc.name} is not installed: pip install 'benchlab[report]', then lab report)")
        return None


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
