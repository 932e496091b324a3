"""Time `lab validate` on a lab of 10,000 state files.

Builds a realistic lab in a temporary directory: hypotheses, live queue entries,
finished experiments (experiment.yaml + metrics.parquet each), scores.parquet
and events.parquet, then times validation in-process and as a `lab validate`
subprocess (median of N runs each) and prints a table.

    python bench/validate_10k.py [--files 10000] [--runs 3] [--keep DIR]

The issue's requirement: under 2 s for 10,000 files on the 2-core dev machine.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from runner import tables
from runner.fingerprint import fingerprint
from runner.scaffold import init_lab
from runner.validate import validate
from runner.yamlio import write_yaml

PARAMS = ["LEARNING_RATE", "WARMUP_STEPS", "WEIGHT_DECAY", "BATCH_SIZE", "N_LAYER", "DROPOUT", "GRAD_CLIP"]
BASE = "3f1c2a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a39"
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def change(rng: random.Random) -> dict:
    name = rng.choice(PARAMS)
    out = {"params": {name: round(rng.uniform(1e-4, 1.0), 6)}, "file": "train.py"}
    if rng.random() < 0.3:
        out["instructions"] = f"Scale {name} and keep everything else fixed; report val_bpb."
    return out


def hypothesis(i: int, rng: random.Random) -> dict:
    return {"id": f"h-{i:05d}", "title": f"Try a different {rng.choice(PARAMS).lower()} (idea {i})",
            "status": rng.choice(["proposed", "accepted", "accepted", "rejected", "duplicate"]),
            "author": rng.choice(["researcher", "human"]), "created": iso(T0 + timedelta(seconds=i)),
            "rationale": "Smaller steps late in training often lower the final loss on tiny models. " * 2,
            "source": {"kind": "paper", "ref": f"arXiv:1711.{i:05d}", "title": "A paper"},
            "change": change(rng), "expected": "val_bpb -0.5%", "tags": ["optim", "lr"]}


def experiment(i: int, hyp: str, status: str, rng: random.Random) -> dict:
    created = T0 + timedelta(minutes=i)
    ch = change(rng)
    data = {"id": f"e-{i:05d}", "hypothesis": hyp, "kind": "experiment", "status": status, "base": BASE,
            "priority": rng.randint(0, 9), "wave": i // 50, "change": ch, "fingerprint": fingerprint(ch),
            "created": iso(created), "history": [{"status": "queued", "at": iso(created), "by": "planner"}]}
    if status in ("queued", "assigned"):
        return data
    steps = ["assigned", "ready", "running"] + ([status] if status not in ("ready", "running") else [])
    data["history"] += [{"status": s, "at": iso(created + timedelta(seconds=30 * (k + 1))), "by": "runner"}
                        for k, s in enumerate(steps)]
    data.update(worker=f"w{i % 4}", branch=f"exp/e-{i:05d}",
                job={"backend": "local", "slot": f"cpu{i % 2}", "id": str(1000 + i), "pid": 40000 + i,
                     "started": iso(created + timedelta(seconds=90)), "attempts": 1,
                     "log": f".lab/logs/e-{i:05d}.log"})
    if status in ("ready", "running"):
        return data
    value = round(1.0 + rng.random() * 0.1, 6)
    data["job"].update(finished=iso(created + timedelta(seconds=390)), exit_code=0)
    data["result"] = {"metric": "val_bpb", "value": value, "metrics": {"val_bpb": value, "train_loss": 1.2},
                      "base_value": 1.05, "delta": round(value - 1.05, 6), "promoted": value < 1.01,
                      "commit": BASE, "duration_s": 300.0}
    return data


def metrics_table(rng: random.Random):
    rows = [{"step": s, "time_s": s * 0.5, "name": "train_loss", "value": 3.0 - s * 0.01, "summary": False}
            for s in range(0, 200, 10)]
    rows.append({"step": None, "time_s": 300.0, "name": "val_bpb", "value": 1.0 + rng.random() * 0.1,
                 "summary": True})
    return tables.pa.Table.from_pylist(rows, schema=tables.METRICS)


def plan(total: int) -> tuple[int, int, int]:
    """(hypotheses, queue entries, finished experiments) adding up to `total` files with lab.yaml,
    scores.parquet and events.parquet; a finished experiment is two files."""
    budget = total - 3
    finished = int(budget * 0.37)
    queue = int(budget * 0.06)
    hyps = budget - 2 * finished - queue
    return hyps, queue, finished


def build_lab(root: Path, total: int = 10_000, seed: int = 0) -> Path:
    """A lab at `root` (new git repo, first commit) holding exactly `total` state files."""
    rng = random.Random(seed)
    init_lab(root, template="blank")
    n_hyp, n_queue, n_fin = plan(total)
    for i in range(n_hyp):
        write_yaml(root / "hypotheses" / f"h-{i:05d}.yaml", hypothesis(i, rng))
    live = ["queued", "queued", "assigned", "ready", "running"]
    for i in range(n_queue):
        write_yaml(root / "queue" / f"e-{i:05d}.yaml", experiment(i, f"h-{rng.randrange(n_hyp):05d}",
                                                                   rng.choice(live), rng))
    metrics = metrics_table(rng)
    score_rows = []
    for j in range(n_fin):
        i = n_queue + j
        data = experiment(i, f"h-{rng.randrange(n_hyp):05d}", rng.choice(["finished"] * 8 + ["failed"]), rng)
        folder = root / "experiments" / data["id"]
        write_yaml(folder / "experiment.yaml", data)
        tables.write_table(folder / "metrics.parquet", metrics)
        score_rows.append(score_row(data))
    tables.write_table(root / "experiments" / "scores.parquet",
                       tables.pa.Table.from_pylist(score_rows, schema=tables.SCORES))
    tables.write_table(root / "experiments" / "events.parquet", tables.pa.Table.from_pylist(
        [{"at": T0, "level": "info", "kind": "promoted", "message": "e-00001 promoted"}], schema=tables.EVENTS))
    return root


def score_row(data: dict) -> dict:
    result = data["result"]
    return {"id": data["id"], "hypothesis": data["hypothesis"], "kind": "experiment", "status": data["status"],
            "metric": "val_bpb", "value": result["value"], "base_value": result["base_value"],
            "delta": result["delta"], "promoted": result["promoted"], "wave": data["wave"],
            "base": data["base"], "started": T0, "finished": T0, "duration_s": 300.0}


def time_in_process(root: Path, runs: int) -> tuple[float, int, int]:
    samples, report = [], None
    for _ in range(runs):
        started = time.perf_counter()
        report = validate(root)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), sum(report.counts.values()), len(report.problems)


def time_subprocess(root: Path, runs: int) -> tuple[float, int]:
    lab = shutil.which("lab") or str(Path(sys.executable).parent / "lab")
    samples, rc = [], None
    for _ in range(runs):
        started = time.perf_counter()
        rc = subprocess.run([lab, "validate"], cwd=root, capture_output=True).returncode
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the lab here and keep it")
    args = parser.parse_args(argv)
    tmp = None if args.keep else tempfile.mkdtemp(prefix="lab-bench-")
    root = args.keep or Path(tmp) / "lab"
    try:
        started = time.perf_counter()
        build_lab(root, args.files)
        built = time.perf_counter() - started
        in_proc, files, problems = time_in_process(root, args.runs)
        sub, rc = time_subprocess(root, args.runs)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    n_hyp, n_queue, n_fin = plan(args.files)
    print(f"lab: {files} state files ({n_hyp} hypotheses, {n_queue} queue, {n_fin} finished experiments "
          f"x (experiment.yaml + metrics.parquet), scores, events, lab.yaml); built in {built:.1f}s")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print()
    print(f"| mode | median of {args.runs} (s) | result |")
    print("| --- | --- | --- |")
    print(f"| validate() in-process | {in_proc:.3f} | {problems} problems |")
    print(f"| `lab validate` subprocess | {sub:.3f} | exit {rc} |")
    limit_ok = sub < 2.0 and problems == 0 and rc == 0
    print()
    print(f"requirement (< 2 s for 10,000 files, clean lab): {'met' if limit_ok else 'NOT met'}")
    return 0 if limit_ok else 1


if __name__ == "__main__":
    sys.exit(main())
