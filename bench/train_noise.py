"""Seed noise of the embedded default target (train.py), run the way `lab demo` runs it.

K seeds of the unchanged baseline, JOBS processes at once, each limited to THREADS
threads (OMP_NUM_THREADS), which is what 2 CPU slots on a 2-core machine do. Prints
one row per run and the mean / stdev of val_bpb and of the wall time.

    python bench/train_noise.py --seeds 6 --jobs 2 --threads 1

The helpers here (`run_variants`, `summary`) are reused by bench/ideas_gain.py.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.state.params import apply_params  # noqa: E402


def parse_summary(output: str) -> dict[str, float]:
    """`name: value` lines with a numeric value; the last occurrence of a name wins."""
    found = {}
    for line in output.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().isidentifier():
            try:
                found[name.strip()] = float(value)
            except ValueError:
                pass
    return found


def run_one(params: dict, seed: int | None, threads: int, extra_env: dict | None = None) -> dict:
    """Run train.py with `params` applied, in a temporary copy; return its summary plus wall_s."""
    source = (ROOT / "train.py").read_text()
    with tempfile.TemporaryDirectory(prefix="benchlab-train-") as tmp:
        script = Path(tmp) / "train.py"
        script.write_text(apply_params(source, params, "train.py") if params else source)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if seed is not None:
            env["LAB_SEED"] = str(seed)
        env.update(extra_env or {})
        start = time.time()
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, capture_output=True, text=True)
        result = parse_summary(proc.stdout)
        result["wall_s"] = time.time() - start
        result["rc"] = proc.returncode
        if proc.returncode and "val_bpb" not in result:
            result["val_bpb"] = float("nan")
            result["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return result


def run_variants(jobs: list[tuple[dict, int | None]], parallel: int, threads: int,
                 extra_env: dict | None = None) -> list[dict]:
    """Run (params, seed) jobs, `parallel` at a time; results in the order given."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(lambda job: run_one(job[0], job[1], threads, extra_env), jobs))


def summary(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def warm_cache(threads: int) -> None:
    """Build the corpus cache once, so that no timed run pays for it."""
    run_one({}, None, threads, {"LAB_MAX_STEPS": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6, help="number of seeds (K)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    args = parser.parse_args()
    warm_cache(args.threads)
    seeds = list(range(1, args.seeds + 1))
    start = time.time()
    results = run_variants([({}, s) for s in seeds], args.jobs, args.threads)
    print(f"{'seed':>4}  {'val_bpb':>9}  {'steps':>5}  {'train_s':>7}  {'wall_s':>6}")
    for seed, r in zip(seeds, results):
        print(f"{seed:>4}  {r['val_bpb']:>9.4f}  {r.get('steps', 0):>5.0f}  {r.get('train_seconds', 0):>7.1f}  "
              f"{r['wall_s']:>6.1f}")
    mean, stdev = summary([r["val_bpb"] for r in results])
    wall, wall_sd = summary([r["wall_s"] for r in results])
    print(f"\nval_bpb mean {mean:.4f}  stdev {stdev:.4f} ({100 * stdev / mean:.2f}% of mean)")
    print(f"wall per run {wall:.1f} s (stdev {wall_sd:.1f}); {args.seeds} runs, {args.jobs} at once, "
          f"{args.threads} thread(s) each, {time.time() - start:.0f} s in all")


if __name__ == "__main__":
    main()
