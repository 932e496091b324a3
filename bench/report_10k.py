"""Report generation time for a lab with 10,000 recorded experiments (target: < 10 s in all).

    python bench/report_10k.py [--experiments 10000] [--repeats 3]

Builds a deterministic fixture lab (tests/fixtures/make_lab.py: scores.parquet and events.parquet
with N rows; metrics.parquet for the experiments whose loss curves the report draws), then times
each phase of `lab report` (the same functions) and prints a table of medians.
"""
from __future__ import annotations

import argparse
import statistics
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
    times["load (Parquet + YAML)"], data = timed(lambda: report_data.load(lab))
    times["HTML (plotly, inlined)"], html = timed(lambda: page.render(data, out))
    times["write index.html"], _ = timed(lambda: atomic_write(out / "index.html", html))
    times["PNGs (matplotlib)"], _ = timed(lambda: pngs.write_pngs(data, out))
    times["LEADERBOARD.md"], _ = timed(lambda: write_leaderboard(lab, data=data))
    times["total"] = sum(times.values())
    times["_html_mb"] = len(html) / 1e6
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
        runs = [one_pass(lab, out) for _ in range(args.repeats)]
    print(f"\n| phase | median s (of {args.repeats}) |\n| --- | --- |")
    for phase in runs[0]:
        if not phase.startswith("_"):
            print(f"| {phase} | {statistics.median(r[phase] for r in runs):.2f} |")
    total = statistics.median(r["total"] for r in runs)
    print(f"\nindex.html: {runs[0]['_html_mb']:.1f} MB; total {total:.2f}s "
          f"({'PASS' if total < 10 else 'FAIL'}: target < 10 s for {args.experiments} experiments)")


if __name__ == "__main__":
    main()
