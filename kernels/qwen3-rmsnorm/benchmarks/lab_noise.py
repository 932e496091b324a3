"""Timing noise of the kernel lab, measured from a finished lab's own runs (no GPU needed).

Every experiment of the builtin planner changes one size's launch shape (NORM_<tokens> or
FUSED_<tokens>), so each run is an A/A repeat for every other size. This prints, per op and
size, the spread of the runs that left it alone, then the run-to-run spread that puts on the
two objectives: latency_us (the geometric mean of the µs) and vs_copy (the geometric mean of
copy / op, the copy timed interleaved with the op), i.e. the noise a promotion margin must clear.

    python kernels/qwen3-rmsnorm/benchmarks/lab_noise.py LAB_DIR
"""
from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from runner.files.yamlio import load_yaml


def runs(lab: Path) -> list[tuple[set[str], dict[str, float]]]:
    """(the params a run changed, its metrics) for every finished experiment with a right output."""
    out = []
    for path in sorted((lab / "experiments").glob("*/experiment.yaml")):
        doc, _ = load_yaml(path)
        metrics = (doc.get("result") or {}).get("metrics") or {}
        if doc.get("status") == "finished" and metrics.get("correct") == 1:
            out.append((set(((doc.get("change") or {}).get("params") or {})), metrics))
    return out


def sizes(metrics: dict[str, float]) -> list[tuple[str, int]]:
    """(op, tokens) of every per-size timing: rms_norm_512_us -> ("rms_norm", 512)."""
    found = []
    for key in metrics:
        op, _, rest = key.rpartition("_us")[0].rpartition("_")
        if key.endswith("_us") and not key.endswith("_copy_us") and rest.isdigit():
            found.append((op, int(rest)))
    return sorted(found, key=lambda s: (s[0] != "rms_norm", s[1]))


def param_of(op: str, tokens: int) -> str:
    return f"{'FUSED' if op.startswith('fused') else 'NORM'}_{tokens}"


def spread(done, value) -> tuple[float, float]:
    """(geometric mean, run-to-run sd) of an objective built from per-size values: each run is
    compared with the average over only the sizes it did not change."""
    keys = sizes(done[0][1])
    mean_log = {k: statistics.fmean(math.log(value(m, *k)) for c, m in done if param_of(*k) not in c)
                for k in keys}
    shifts = [statistics.fmean(math.log(value(m, *k)) - mean_log[k] for k in keys if param_of(*k) not in c)
              for c, m in done]
    geo = math.exp(statistics.fmean(mean_log.values()))
    return geo, geo * statistics.stdev(shifts)


def main(lab: Path) -> int:
    done = runs(lab)
    if len(done) < 3:
        print(f"{lab}: {len(done)} finished runs with right outputs; need 3 or more", file=sys.stderr)
        return 1
    has_copy = all(f"{op}_{t}_copy_us" in m for _, m in done for op, t in sizes(m))
    print(f"{'op':20s} {'tokens':>6s} {'runs':>5s} {'mean us':>9s} {'cv us':>7s}" + ("  cv copy/op" if has_copy else ""))
    for op, tokens in sizes(done[0][1]):
        alone = [m for c, m in done if param_of(op, tokens) not in c]
        us = [m[f"{op}_{tokens}_us"] for m in alone]
        row = f"{op:20s} {tokens:6d} {len(us):5d} {statistics.fmean(us):9.3f} {statistics.stdev(us) / statistics.fmean(us):7.2%}"
        if has_copy:
            ratio = [m[f"{op}_{tokens}_copy_us"] / m[f"{op}_{tokens}_us"] for m in alone]
            row += f"  {statistics.stdev(ratio) / statistics.fmean(ratio):10.2%}"
        print(row)
    objectives = {"latency_us": lambda m, op, t: m[f"{op}_{t}_us"]}
    if has_copy:
        objectives["vs_copy"] = lambda m, op, t: m[f"{op}_{t}_copy_us"] / m[f"{op}_{t}_us"]
    print(f"\nrun-to-run spread of the objective ({len(done)} runs; a difference of two runs: x sqrt 2)")
    for name, value in objectives.items():
        geo, sd = spread(done, value)
        print(f"  {name:11s} {geo:9.4f}  sd {sd:.4f} ({sd / geo:.2%})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
