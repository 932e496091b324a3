"""Time `lab validate` on a lab of 10,000 state files.

Builds a realistic lab in a temporary directory: hypotheses, live queue entries,
finished experiments (experiment.yaml + metrics.parquet each), a compacted scores
part and an events file, then times validation in-process and as a `lab validate`
subprocess (median of N runs each) and prints a table.

    python bench/validate_10k.py [--files 10000] [--runs 3] [--keep DIR]

The issue's requirement: under 2 s for 10,000 files on the 2-core dev machine.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from runner.files import tables
from runner.state.fingerprint import fingerprint
from runner.scaffold import init_lab
from runner.validation import validate as validate_module
from runner.validation.validate import discover, validate
from runner.files.yamlio import write_yaml

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


def plan(total: int, existing: int = 1) -> tuple[int, int, int]:
    """(hypotheses, queue entries, finished experiments) adding up to `total` files with the
    `existing` ones (lab.yaml, the skills `lab init` ships), a scores part and an events file;
    a finished experiment is two files."""
    budget = total - existing - 2
    finished = int(budget * 0.37)
    queue = int(budget * 0.06)
    hyps = budget - 2 * finished - queue
    return hyps, queue, finished


def build_lab(root: Path, total: int = 10_000, seed: int = 0) -> Path:
    """A lab at `root` (new git repo, first commit) holding exactly `total` state files."""
    rng = random.Random(seed)
    init_lab(root, template="blank")
    n_hyp, n_queue, n_fin = plan(total, len(discover(root)))
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
    scores = tables.pa.Table.from_pylist(score_rows, schema=tables.SCORES)
    tables.write_part(root / "experiments" / "scores", scores)
    events = root / "experiments" / "events" / "20261121T083000Z-0a1b2c3d.parquet"
    tables.write_table(events, tables.pa.Table.from_pylist(
        [{"at": T0, "level": "info", "kind": "promoted", "message": "e-00001 promoted"}], schema=tables.EVENTS))
    return root


def score_row(data: dict) -> dict:
    result = data["result"]
    return {"id": data["id"], "hypothesis": data["hypothesis"], "kind": "experiment", "status": data["status"],
            "metric": "val_bpb", "value": result["value"], "base_value": result["base_value"],
            "delta": result["delta"], "promoted": result["promoted"], "wave": data["wave"],
            "base": data["base"], "started": T0, "finished": T0, "duration_s": 300.0}


def time_in_process(root: Path, runs: int, workers: int | None = None) -> tuple[float, float, int, int]:
    """Median wall and CPU seconds of validate(root), files checked, problems found.
    workers=1 disables the forked split (to show what it buys)."""
    walls, cpus, report = [], [], None
    saved = validate_module.PARALLEL_MIN_FILES
    validate_module.PARALLEL_MIN_FILES = saved if workers is None else 10 ** 12
    try:
        for _ in range(runs):
            wall, cpu = time.perf_counter(), _cpu()
            report = validate(root)
            walls.append(time.perf_counter() - wall)
            cpus.append(_cpu() - cpu)
    finally:
        validate_module.PARALLEL_MIN_FILES = saved
    return statistics.median(walls), statistics.median(cpus), report.files, len(report.problems)


def time_subprocess(root: Path, runs: int) -> tuple[float, float, int]:
    """Median wall and CPU seconds of `lab validate` in a subprocess, and its exit code."""
    lab = str(Path(sys.executable).parent / "lab")
    lab = lab if Path(lab).exists() else shutil.which("lab")
    walls, cpus, rc = [], [], None
    for _ in range(runs):
        wall, cpu = time.perf_counter(), _cpu()
        rc = subprocess.run([lab, "validate"], cwd=root, capture_output=True).returncode
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus), rc


def _cpu() -> float:
    """User + system CPU seconds of this process, its threads, and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


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
        validate(root)  # warm the page cache once, as a commit right after writing the files would
        in_wall, in_cpu, files, problems = time_in_process(root, args.runs)
        serial_wall, serial_cpu, _, serial_problems = time_in_process(root, args.runs, workers=1)
        sub_wall, sub_cpu, rc = time_subprocess(root, args.runs)
        load = os.getloadavg()[0]
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"lab: {files} state files (hypotheses, queue entries, finished experiments with "
          f"experiment.yaml + metrics.parquet, scores, events, lab.yaml, skills); built in {built:.1f}s")
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at the end, Python {sys.version.split()[0]}")
    print()
    print(f"| mode | wall s (median of {args.runs}) | CPU s, all processes | result |")
    print("| --- | --- | --- | --- |")
    print(f"| validate() in-process | {in_wall:.3f} | {in_cpu:.3f} | {problems} problems |")
    print(f"| validate() in-process, one process | {serial_wall:.3f} | {serial_cpu:.3f} | "
          f"{serial_problems} problems |")
    print(f"| `lab validate` subprocess | {sub_wall:.3f} | {sub_cpu:.3f} | exit {rc} |")
    met = sub_wall < 2.0 and problems == 0 and rc == 0 and files == args.files
    print()
    print(f"requirement (`lab validate` < 2 s wall for {args.files} files, clean lab): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
