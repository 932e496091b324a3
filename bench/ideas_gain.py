"""Gain of each idea in the offline library (runner/data/ideas.yaml) over the train.py baseline.

Runs the baseline with a few seeds and each idea once (same seed as the first
baseline run), JOBS at once with THREADS threads each (how `lab demo` runs them),
and prints val_bpb and the change in % against the baseline's mean (negative is
better). With --greedy it then also replays successive promotion: ideas in library
order on top of the current best, kept when better than the best by --margin.

    python bench/ideas_gain.py --baseline-seeds 2 --jobs 2 --threads 1 [--greedy]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_noise import ROOT, run_variants, summary, warm_cache  # noqa: E402

sys.path.insert(0, str(ROOT))
from runner.roles.ideas import load_ideas  # noqa: E402


def show(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def per_idea(ideas, args, env) -> float:
    seeds = list(range(1, args.baseline_seeds + 1))
    jobs = [({}, s) for s in seeds] + [(idea.params, seeds[0]) for idea in ideas]
    results = run_variants(jobs, args.jobs, args.threads, env)
    base, base_sd = summary([r["val_bpb"] for r in results[: len(seeds)]])
    print(f"baseline val_bpb {base:.4f} (stdev {base_sd:.4f} over {len(seeds)} seeds)\n")
    print(f"{'idea':<24} {'val_bpb':>8} {'change':>8} {'wall_s':>6}  params")
    for idea, r in zip(ideas, results[len(seeds):]):
        change = 100 * (r["val_bpb"] - base) / base
        print(f"{idea.id:<24} {r['val_bpb']:>8.4f} {change:>+7.2f}% {r['wall_s']:>6.1f}  {show(idea.params)}")
    return base


def greedy(ideas, args, env, base: float) -> None:
    """Successive promotion, one idea at a time (sequential runs, like a 1-slot loop)."""
    best_params, best = {}, base
    print(f"\ngreedy promotion (margin {args.margin:.1%} of the best):")
    for idea in ideas:
        trial = dict(best_params, **idea.params)
        [r] = run_variants([(trial, 1)], 1, args.threads, env)
        kept = r["val_bpb"] < best * (1 - args.margin)
        print(f"  {idea.id:<24} {r['val_bpb']:.4f} {'kept' if kept else '-'}")
        if kept:
            best_params, best = trial, r["val_bpb"]
    print(f"best {best:.4f} ({100 * (best - base) / base:+.2f}% vs baseline) with {show(best_params)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="idea ids to run (default: all)")
    parser.add_argument("--time-budget", type=float, help="LAB_TIME_BUDGET for every run (default: train.py's)")
    parser.add_argument("--greedy", action="store_true", help="also replay successive promotion")
    parser.add_argument("--margin", type=float, default=0.005, help="relative margin for --greedy")
    args = parser.parse_args()
    ideas = [i for i in load_ideas() if not args.only or i.id in args.only]
    env = {"LAB_TIME_BUDGET": str(args.time_budget)} if args.time_budget else {}
    warm_cache(args.threads)
    start = time.time()
    base = per_idea(ideas, args, env)
    if args.greedy:
        greedy(ideas, args, env, base)
    print(f"\n{time.time() - start:.0f} s in all; {args.jobs} runs at once, {args.threads} thread(s) each")


if __name__ == "__main__":
    main()
