"""Seed noise and recipe effects of the finetune template's built-in default (tiny Qwen3, tiny tasks).

Runs finetune.py unchanged on K seeds (the baseline), then each recipe (NAME=VALUE,... ) on the
same seeds, JOBS processes at once with THREADS threads each, offline. Prints one row per run
and, per recipe, the mean / stdev of eval_score and eval_loss and the mean CPU and wall time
(CPU time is the figure to compare on a shared machine: wall time grows with its load).

    python bench/finetune_recipes.py --seeds 3 --jobs 2 --threads 1 \\
        --recipe LEARNING_RATE=0.002 --recipe METHOD=lora
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
SCRIPT = ROOT / "runner" / "templates" / "finetune" / "finetune.py"
sys.path.insert(0, str(ROOT))

from runner.files.metrics import parse_summary  # noqa: E402
from runner.state.params import apply_params  # noqa: E402


def parse_recipe(text: str) -> dict:
    params = {}
    for pair in filter(None, text.split(",")):
        name, _, raw = pair.partition("=")
        value: object = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                pass
        params[name.strip()] = {"True": True, "False": False}.get(raw, value)
    return params


def run_one(params: dict, seed: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="benchlab-ft-") as tmp:
        script = Path(tmp) / "finetune.py"
        script.write_text(apply_params(SCRIPT.read_text(), params, "finetune.py"))
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
                   LAB_SEED=str(seed), CUDA_VISIBLE_DEVICES="")
        env.pop("LAB_METRICS", None)
        start = time.time()
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, capture_output=True, text=True)
        result = dict(parse_summary(proc.stdout), wall_s=time.time() - start, rc=proc.returncode)
        if proc.returncode:
            result["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return result


def stats(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipe", action="append", default=[], help="NAME=VALUE[,NAME=VALUE] (repeatable)")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    recipes = ([] if args.no_baseline else ["baseline"]) + args.recipe
    runs = [(r, s) for r in recipes for s in range(args.first_seed, args.first_seed + args.seeds)]
    results: dict[str, list[dict]] = {r: [] for r in recipes}
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_one, {} if r == "baseline" else parse_recipe(r), s, args.threads): (r, s)
                   for r, s in runs}
        for future, (recipe, seed) in futures.items():
            res = future.result()
            results[recipe].append(res)
            print(f"{recipe:<40} seed {seed}: eval_score {res.get('eval_score', float('nan')):.4f} "
                  f"eval_loss {res.get('eval_loss', float('nan')):.4f} steps {res.get('steps', 0):.0f} "
                  f"cpu {res.get('cpu_seconds', float('nan')):.1f}s wall {res['wall_s']:.1f}s "
                  f"{res.get('error', '')}", flush=True)
    print(f"\n{'recipe':<40} {'eval_score':<18} {'eval_loss':<18} cpu_s  wall_s")
    for recipe, rows in results.items():
        print(f"{recipe:<40} {stats([r.get('eval_score', float('nan')) for r in rows]):<18} "
              f"{stats([r.get('eval_loss', float('nan')) for r in rows]):<18} "
              f"{statistics.mean(r.get('cpu_seconds', float('nan')) for r in rows):<6.1f} "
              f"{statistics.mean(r['wall_s'] for r in rows):.1f}")


if __name__ == "__main__":
    main()
