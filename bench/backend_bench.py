"""Local backend costs: `python bench/backend_bench.py` prints a table.

start() of a trivial job (wrapper up, pid file written), start -> terminal
status seen, poll() of a running job, the /proc marker scan and orphans().
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runner.backends import JobSpec, LocalBackend, jobwrap


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{1e3 * statistics.median(values):7.2f} ms (p95 {1e3 * ordered[int(0.95 * len(ordered))]:.2f})"


def main(n: int = 30) -> None:
    backend = LocalBackend({"backends": {"local": {"kind": "cpu", "slots": 2}}, "limits": {"max_running": 2}})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        starts, ends = [], []
        for i in range(n):
            spec = JobSpec(f"e{i}", "cpu0", ["true"], root, {}, root / f"j{i}", 10, 10)
            t0 = time.perf_counter()
            backend.start(spec)
            starts.append(time.perf_counter() - t0)
            while not backend.poll(spec).terminal:
                time.sleep(0.002)
            ends.append(time.perf_counter() - t0)
        spec = JobSpec("run", "cpu1", [sys.executable, "-c", "import time; time.sleep(5)"], root, {}, root / "run",
                       10, 10)
        backend.start(spec)
        polls = []
        for _ in range(200):
            t0 = time.perf_counter()
            backend.poll(spec)
            polls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jobwrap.marked_processes(under=str(root))
        scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        backend.orphans({"run"}, root)
        orphans = time.perf_counter() - t0
        backend.kill(spec, "bench over")
    print(f"| start() of `true` (wrapper up, pid file written) | {ms(starts)} |")
    print(f"| start -> terminal status seen, command `true`    | {ms(ends)} |")
    print(f"| poll() of a running job                          | {ms(polls)} |")
    print(f"| /proc marker scan ({len(os.listdir('/proc'))} entries)                | {1e3 * scan:7.2f} ms |")
    print(f"| orphans() over {n + 1} job dirs, nothing to kill        | {1e3 * orphans:7.2f} ms |")


if __name__ == "__main__":
    main()
