"""Runner speed and scale, on a trivial target so that only the runner is measured.

    python bench/loop_bench.py [--experiments 60] [--reactions 40] [--scale 1000] [--status-rows 10000]

Prints a table:
- overhead per experiment: time from dispatch to recorded, minus the job's own
  run time (wrapper start, worktree, diff checks, parsing, recording, commits);
- reaction: a queue file written -> the runner has dispatched it (watchdog path);
- scale: N queued entries dispatched and recorded; time per experiment for the
  first and the last tenth (flat = no growth with history);
- `lab status` with 10,000 score rows, stored as a runner and its compaction leave them
  (a subprocess, so imports count).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_loop import queue, toy_lab  # noqa: E402  (the toy target of the loop tests)
from fixtures.make_lab import write_tables  # noqa: E402

from runner.repo import gitops  # noqa: E402
from runner.loop.run import run  # noqa: E402


def overhead(root: Path, n: int) -> list[float]:
    lab = toy_lab(root, slots=1)
    queue(lab, None, baseline=True)
    run(lab, until_idle=True, plan=False, tick=0.05)
    ids = [queue(lab, {"X": 1.0 + 0.01 * (i + 1)}) for i in range(n)]
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "bench: queue")
    marks: dict[str, dict] = {}

    def on_event(kind, info):
        entry = info["entry"]
        marks.setdefault(entry.id, {})[kind] = time.monotonic()
        if kind == "recorded":
            o = info["outcome"]
            marks[entry.id]["job_s"] = o.job_seconds or 0.0

    run(lab, until_idle=True, plan=False, tick=0.05, on_event=on_event)
    return [m["recorded"] - m["assigned"] - m["job_s"] for i, m in marks.items() if i in ids]


def reaction(root: Path, n: int) -> list[float]:
    lab = toy_lab(root, slots=1)
    queue(lab, None, baseline=True)
    run(lab, until_idle=True, plan=False, tick=0.05)
    stop = threading.Event()
    dispatched: dict[str, float] = {}
    thread = threading.Thread(target=run, kwargs=dict(
        lab=lab, plan=False, stop=stop, tick=5.0,   # a long tick: only the file event can wake it
        on_event=lambda kind, info: kind == "assigned" and dispatched.setdefault(info["entry"].id, time.monotonic())))
    thread.start()
    time.sleep(1.0)
    delays = []
    for i in range(n):
        t0 = time.monotonic()
        exp = queue(lab, {"X": 2.0 + 0.01 * i})
        while exp not in dispatched and time.monotonic() - t0 < 10:
            time.sleep(0.002)
        delays.append(dispatched.get(exp, float("inf")) - t0)
        while list(lab.queue.glob("*.yaml")):
            time.sleep(0.01)
    stop.set()
    thread.join()
    return delays


def scale(root: Path, n: int) -> list[float]:
    lab = toy_lab(root, slots=2, max_queue=n + 10)
    queue(lab, None, baseline=True)
    run(lab, until_idle=True, plan=False, tick=0.05)
    for i in range(n):
        queue(lab, {"X": -50.0 + 0.001 * i})
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "bench: queue")
    times = []
    run(lab, until_idle=True, plan=False, tick=0.05,
        on_event=lambda kind, info: kind == "recorded" and times.append(time.monotonic()))
    return [b - a for a, b in zip(times, times[1:])]


def status_time(root: Path, rows: int) -> float:
    lab = toy_lab(root, slots=1)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    data = [{"id": f"e-{i:06d}", "hypothesis": f"h-{i:06d}", "kind": "experiment", "status": "finished",
             "title": "t", "change": json.dumps({"params": {"X": i}}), "fingerprint": str(i), "base": "0" * 40,
             "commit": "1" * 40, "target": "k", "metric": "val_bpb", "value": 2.0 - i * 1e-5,
             "base_value": 2.0, "delta": -i * 1e-5, "promoted": i % 50 == 0, "slot": "cpu0", "worker": "builtin",
             "wave": 0, "started": start + timedelta(seconds=i), "finished": start + timedelta(seconds=i + 20),
             "duration_s": 20.0, "reason": None} for i in range(rows)]
    write_tables(lab, data, [])
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "runner", "-C", str(lab.root), "status"], check=True,
                       capture_output=True)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=60)
    parser.add_argument("--reactions", type=int, default=40)
    parser.add_argument("--scale", type=int, default=1000)
    parser.add_argument("--status-rows", type=int, default=10000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.experiments:
            o = overhead(tmp / "overhead", args.experiments)
            rows.append(("runner overhead per experiment", f"median {statistics.median(o) * 1000:.0f} ms, "
                         f"p95 {pct(o, .95) * 1000:.0f} ms (n={len(o)})", "< 1 s median"))
        if args.reactions:
            r = reaction(tmp / "reaction", args.reactions)
            rows.append(("file write -> runner acts", f"median {statistics.median(r) * 1000:.0f} ms, "
                         f"p95 {pct(r, .95) * 1000:.0f} ms (n={len(r)})", "< 500 ms p95"))
        if args.scale:
            s = scale(tmp / "scale", args.scale)
            tenth = max(1, len(s) // 10)
            means = [statistics.fmean(s[i:i + tenth]) for i in range(0, tenth * 10, tenth)]
            rows.append((f"{args.scale} queued entries: mean s/experiment",
                         "by tenth " + " ".join(f"{m:.2f}" for m in means) + f"; total {sum(s):.0f} s",
                         "flat"))
        if args.status_rows:
            st = status_time(tmp / "status", args.status_rows)
            rows.append((f"lab status, {args.status_rows} score rows", f"{st * 1000:.0f} ms (subprocess)",
                         "< 1 s"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':<70}  target")
    for name, result, target in rows:
        print(f"{name:<{width}}  {result:<70}  {target}")


if __name__ == "__main__":
    main()
