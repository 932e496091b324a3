"""A/A test of the promotion rule: how often is main's own target promoted over itself?

Runs the embedded train.py unchanged K times (seeds 0..K-1, JOBS at once with THREADS threads
each, as `lab demo` runs them), then replays the lab's judgement on those numbers with the
lab's own code: each trial takes n_base runs as the base (their mean is its score, their stdev
the seed noise, as runner.loop.scoring computes them), another run as the candidate, and asks
runner.loop.promotion.judge (with the margin of runner.loop.scoring.noise_for) whether to
promote. A change with no effect should be promoted rarely; the rules compared:

  fixed 0.03      noise_margin 0.03 alone, base of 2 seeds
  old template    max(0.03, 2 x stdev) with the stdev of the 2 base seeds (lab.yaml before)
  new             false_promotion_rate 0.05, base of 4 seeds (the demo and template now)
  new + confirm   the same with confirm_below 3: a winner below z 3 is re-run on a further seed

Every (candidate, base) pair of distinct runs is a trial (a sample of them when there are many);
the 95% interval is a bootstrap over the K runs. "normal" is the same rule on draws from a normal
distribution with the stdev of the K runs (what the runs would give with no heavy tails). Writes the runs and the rates to bench/results/aa_test.parquet.

    python bench/aa_test.py --seeds 24 --jobs 2 --threads 1
    python bench/aa_test.py --runs bench/results/aa_test.parquet   # re-judge recorded runs
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_noise import ROOT, run_variants, warm_cache  # noqa: E402

sys.path.insert(0, str(ROOT))
from runner.lab import Lab  # noqa: E402
from runner.loop.promotion import CONFIRM, PROMOTE, judge  # noqa: E402
from runner.loop.scoring import baseline_sigma, key_values, noise_for  # noqa: E402
from runner.scaffold import TEMPLATES  # noqa: E402

RULES = [  # name, base seeds, objective keys over {metric, direction}
    ("fixed 0.03", 2, {"noise_margin": 0.03}),
    ("old template", 2, {"noise_margin": 0.03, "margin_from_baseline": 2.0}),
    ("new", 4, {"noise_margin": 0.03, "false_promotion_rate": 0.05}),
    ("new + confirm", 4, {"noise_margin": 0.03, "false_promotion_rate": 0.05, "confirm_below": 3}),
]
OUT = ROOT / "bench" / "results" / "aa_test.parquet"


def rule_lab(tmp: Path, name: str, objective: dict) -> Lab:
    """A lab whose lab.yaml is the tiny-gpt template with this rule's objective."""
    import yaml
    root = tmp / name.replace(" ", "-").replace("+", "plus")
    root.mkdir()
    config = yaml.safe_load((TEMPLATES / "lab-tiny-gpt.yaml").read_text().format(name="aa"))
    config["objective"] = {"metric": "val_bpb", "direction": "minimize", **objective}
    (root / "lab.yaml").write_text(yaml.safe_dump(config))
    return Lab(root)


def verdict(lab: Lab, base: list[float], cand: float, confirm: float | None) -> bool:
    """Whether the lab promotes `cand` over a base measured as `base` (a confirmation run, if asked,
    is `confirm`)."""
    sigma = statistics.stdev(base)
    noise = noise_for(lab.config["objective"], sigma, len(base), len(base))
    first = judge(lab, cand, statistics.fmean(base), noise, base_is_main=True)
    if first.action != CONFIRM:
        return first.action == PROMOTE
    both = noise_for(lab.config["objective"], sigma, len(base), len(base), n_cand=2)
    return judge(lab, (cand + confirm) / 2, statistics.fmean(base), both, True, confirming=True).action == PROMOTE


def check_fast_path(lab: Lab, base: list[float]) -> None:
    """The mean and stdev used above are what scoring.py computes from a scores table."""
    rows = [{"id": f"b{i}", "kind": "baseline", "status": "finished", "target": "main", "value": v,
             "promoted": False} for i, v in enumerate(base)]
    table = pa.Table.from_pylist(rows)
    assert abs(statistics.fmean(key_values(table, "main")) - statistics.fmean(base)) < 1e-12
    assert abs(baseline_sigma(table)[0] - statistics.stdev(base)) < 1e-12


def trials(n_runs: int, n_base: int, count: int, rng: random.Random) -> list[tuple[list[int], int, int]]:
    """(base positions, candidate, confirmation) of distinct runs, drawn at random."""
    out = []
    for _ in range(count):
        picked = rng.sample(range(n_runs), n_base + 2)
        out.append((picked[:n_base], picked[n_base], picked[n_base + 1]))
    return out


def rate(lab: Lab, values: list[float], n_base: int, draws: list) -> float:
    hits = sum(verdict(lab, [values[i] for i in base], values[c], values[j]) for base, c, j in draws)
    return hits / len(draws)


def judge_runs(values: list[float], trials_n: int, boot: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    sigma_all = statistics.stdev(values)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, n_base, objective in RULES:
            lab = rule_lab(Path(tmp), name, objective)
            check_fast_path(lab, values[:n_base])
            point = rate(lab, values, n_base, trials(len(values), n_base, trials_n, rng))
            boots = sorted(rate(lab, [values[rng.randrange(len(values))] for _ in values], n_base,
                                trials(len(values), n_base, max(200, trials_n // 10), rng)) for _ in range(boot))
            margin = statistics.fmean(
                noise_for(lab.config["objective"], statistics.stdev([values[i] for i in b]), n_base, n_base).margin
                for b, _, _ in trials(len(values), n_base, 500, rng))
            normal = [rng.gauss(0.0, sigma_all) for _ in range(200 * (n_base + 2))]
            predicted = rate(lab, normal, n_base, trials(len(normal), n_base, trials_n, rng))
            out.append({"rule": name, "base_seeds": n_base, "trials": trials_n, "rate": point,
                        "ci_low": boots[int(0.025 * len(boots))], "ci_high": boots[int(0.975 * len(boots)) - 1],
                        "normal": predicted, "mean_margin": margin})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=24, help="runs of main (K >= 20)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials", type=int, default=20000, help="(candidate, base) trials per rule")
    parser.add_argument("--boot", type=int, default=200, help="bootstrap resamples of the runs")
    parser.add_argument("--runs", type=Path, help="re-judge the runs recorded in this Parquet file")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.runs:
        runs = pq.read_table(args.runs, columns=["seed", "val_bpb", "steps", "train_seconds", "wall_s"]).to_pylist()
        runs = [r for r in runs if r["val_bpb"] is not None]
    else:
        warm_cache(args.threads)
        start = time.time()
        results = run_variants([({}, s) for s in range(args.seeds)], args.jobs, args.threads)
        runs = [{"seed": s, "val_bpb": r["val_bpb"], "steps": r.get("steps"), "train_seconds": r.get("train_seconds"),
                 "wall_s": r["wall_s"]} for s, r in enumerate(results)]
        print(f"{len(runs)} runs in {time.time() - start:.0f} s, {args.jobs} at once, {args.threads} thread(s) each")
    values = [r["val_bpb"] for r in runs]
    steps = {r["steps"] for r in runs}
    print(f"val_bpb mean {statistics.fmean(values):.4f}, stdev {statistics.stdev(values):.4f} over {len(values)} "
          f"runs; steps {sorted(steps)}; wall per run {statistics.fmean(r['wall_s'] for r in runs):.1f} s")
    if len(steps) > 1:
        print("warning: the step counts differ: the time cap bound on a loaded machine")
    rates = judge_runs(values, args.trials, args.boot, seed=0)
    print(f"\n{'rule':<14} {'base':>4} {'false promotions':>16} {'95% interval':>15} {'normal':>7} {'margin':>7}")
    for r in rates:
        normal = f"{r['normal']:.1%}"
        print(f"{r['rule']:<14} {r['base_seeds']:>4} {r['rate']:>16.1%} "
              f"{r['ci_low']:>6.1%} - {r['ci_high']:<6.1%} {normal:>7} {r['mean_margin']:>7.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{**r, "table": "run"} for r in runs] + [{**r, "table": "rate"} for r in rates])
    pq.write_table(table, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
