"""Report generation time for a lab with 10,000 recorded experiments (target: < 10 s in all).

    python bench/report_10k.py [--experiments 10000] [--repeats 3]

Builds a deterministic fixture lab (tests/fixtures/make_lab.py: the scores and events tables with
N experiments, as a runner and its compaction leave them; metrics.parquet for the experiments
whose loss curves the report draws), then times each phase of `lab report` (the same functions,
nothing kept in memory between passes, the tables' snapshots kept as `lab report` keeps them)
and `lab query` (a subprocess, imports included), and prints tables of medians.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.make_lab import _curve, make_lab  # noqa: E402
from runner.report import data as report_data  # noqa: E402
from runner.report import page, pngs  # noqa: E402
from runner.report.leaderboard import write_leaderboard  # noqa: E402
from runner.files.tabledir import forget, keep_snapshots  # noqa: E402
from runner.files.tables import METRICS, write_table  # noqa: E402
from runner.files.yamlio import atomic_write  # noqa: E402


def add_curves(lab, steps: int = 300) -> int:
    """metrics.parquet for the best experiments and the first baseline (what the report reads)."""
    import random
    data = report_data.load(lab, curves_top=0)
    wanted = [r["id"] for r in report_data.leaderboard(data, report_data.CURVES_TOP)]
    if data.first_baseline:
        wanted.append(data.first_baseline["id"])
    rng = random.Random(0)
    for exp_id in wanted:
        rows = [{"step": s, "time_s": t, "name": "train_loss", "value": v, "summary": False}
                for s, t, v in _curve(rng, 1.6, steps)]
        write_table(lab.experiments / exp_id / "metrics.parquet", pa.Table.from_pylist(rows, schema=METRICS))
    return len(wanted)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def one_pass(lab, out: Path) -> dict:
    times = {}
    forget()  # nothing in memory, as in a new `lab report` process (which keeps the tables' snapshots)
    times["load (Parquet + YAML)"], data = timed(lambda: report_data.load(lab))
    times["HTML (plotly, inlined)"], html = timed(lambda: page.render(data, out))
    times["write index.html"], _ = timed(lambda: atomic_write(out / "index.html", html))
    times["PNGs (matplotlib)"], _ = timed(lambda: pngs.write_pngs(data, out))
    times["LEADERBOARD.md"], _ = timed(lambda: write_leaderboard(lab, data=data))
    times["total"] = sum(times.values())
    times["_html_mb"] = len(html) / 1e6
    return times


QUERIES = {"count the scores": "SELECT count(*) FROM scores",
           "the 10 best promotions": "SELECT id, value FROM scores WHERE promoted ORDER BY value LIMIT 10",
           "events by kind": "SELECT kind, count(*) FROM events GROUP BY kind"}


def query_times(lab, repeats: int) -> dict:
    """`lab query` in a new process each time, as an agent runs it."""
    times = {}
    for name, sql in QUERIES.items():
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "runner", "-C", str(lab.root), "query", sql], check=True,
                           capture_output=True)
            runs.append(time.perf_counter() - started)
        times[name] = statistics.median(runs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        lab = make_lab(Path(tmp) / "lab", args.experiments, per_experiment_files=False)
        curves = add_curves(lab)
        print(f"fixture: {args.experiments} experiments, {curves} loss curves, "
              f"built in {time.perf_counter() - started:.1f}s")
        out = Path(tmp) / "report"
        out.mkdir()
        keep_snapshots(lab.root)  # as `lab report` does
        first = one_pass(lab, out)  # the first reads every table file, then keeps the snapshots
        runs = [one_pass(lab, out) for _ in range(args.repeats)]
        queries = query_times(lab, args.repeats)
    print(f"\n| phase | median s (of {args.repeats}) |\n| --- | --- |")
    for phase in runs[0]:
        if not phase.startswith("_"):
            print(f"| {phase} | {statistics.median(r[phase] for r in runs):.2f} |")
    print(f"\n| lab query | median s (of {args.repeats}) |\n| --- | --- |")
    for name, seconds in queries.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"\n(the first report, before any snapshot: load {first['load (Parquet + YAML)']:.2f} s, "
          f"total {first['total']:.2f} s)")
    total = statistics.median(r["total"] for r in runs)
    print(f"\nindex.html: {runs[0]['_html_mb']:.1f} MB; total {total:.2f}s "
          f"({'PASS' if total < 10 else 'FAIL'}: target < 10 s for {args.experiments} experiments)")


if __name__ == "__main__":
    main()
