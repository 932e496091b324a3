"""The lab's builtin roles against the searches a user would run instead, at equal compute.

Methods, each given the same number of training runs of train.py (baselines and confirmation
re-runs count), the same parameters and ranges (SPACE) and the same FLOP budget:
  lab-factor    `lab` with builtin roles (idea library, then moves by a factor around main)
  lab-optuna    `lab` with the builtin planner exploring with Optuna TPE from the start
                (roles.planner.exploration: optuna, researcher off: no idea library)
  optuna-tpe    Optuna's TPE over every parameter at once, ask/tell, SLOTS trials at a time
  random        random configurations, SLOTS at a time
  keep-reset    one run at a time: move one random parameter of the best, keep it if better
For each method and search seed: the best val_bpb seen after each checkpoint of runs, the
val_bpb of the final pick (the lab's final main; the others' best configuration) re-measured
on 3 fresh seeds (a winner that was noise shows up there), and the wall time. Prints means and
spreads over seeds and writes every row to bench/results/search_vs_peers.parquet.

    python bench/search_vs_peers.py                       # the full spec: 40 runs x 3 seeds
    python bench/search_vs_peers.py --runs 16 --seeds 2 --flop-budget 6e10 --checkpoints 8 16
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_noise import ROOT, parse_summary  # noqa: E402

sys.path.insert(0, str(ROOT))
from runner.lab import Lab  # noqa: E402
from runner.loop.run import run as lab_run  # noqa: E402
from runner.loop.scoring import base_commit  # noqa: E402
from runner.repo import gitops  # noqa: E402
from runner.scaffold import init_lab  # noqa: E402
from runner.state.create import new_experiment  # noqa: E402
from runner.state.params import apply_params, read_params  # noqa: E402

# what every method may change, and within what (N_EMBD / N_HEAD are left out: most pairs don't divide)
SPACE = {
    "LEARNING_RATE": {"low": 1e-4, "high": 3e-2, "log": True},
    "LR_SCHEDULE": {"choices": ["cosine", "linear", "constant"]},
    "WARMUP_STEPS": {"low": 0, "high": 300},
    "MIN_LR_RATIO": {"low": 0.0, "high": 0.5},
    "WEIGHT_DECAY": {"low": 0.0, "high": 0.3},
    "BETA2": {"low": 0.9, "high": 0.999},
    "BATCH_SIZE": {"low": 2, "high": 32, "log": True},
    "N_LAYER": {"low": 1, "high": 4},
    "ACTIVATION": {"choices": ["gelu", "relu", "silu", "relu2", "swiglu"]},
    "NORM": {"choices": ["layernorm", "rmsnorm"]},
    "POS_ENCODING": {"choices": ["learned", "rope"]},
}
METHODS = ("lab-optuna", "lab-factor", "optuna-tpe", "random", "keep-reset")
REMEASURE_SEEDS = (9001, 9002, 9003)
SLOTS = 2


class Trainer:
    """Runs train.py (or a copy with a smaller FLOP_BUDGET) with params applied, one thread each."""

    def __init__(self, flop_budget: float | None):
        source = (ROOT / "train.py").read_text()
        if flop_budget:
            source = re.sub(r"(?m)^FLOP_BUDGET = [^#\n]*", f"FLOP_BUDGET = {flop_budget:g}  ", source)
        self.source = source

    def run(self, params: dict, seed: int) -> float:
        with tempfile.TemporaryDirectory(prefix="search-vs-peers-") as tmp:
            (Path(tmp) / "train.py").write_text(apply_params(self.source, params, "train.py") if params else self.source)
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LAB_SEED=str(seed))
            proc = subprocess.run([sys.executable, "train.py"], cwd=tmp, env=env, capture_output=True, text=True)
        value = parse_summary(proc.stdout).get("val_bpb", float("nan"))
        return value if value == value else float("inf")   # a crash or NaN is the worst result

    def batch(self, jobs: list[tuple[dict, int]]) -> list[float]:
        with ThreadPoolExecutor(max_workers=SLOTS) as pool:
            return list(pool.map(lambda job: self.run(*job), jobs))


# -- the peers ----------------------------------------------------------------------
def _sample(trial, name: str, spec: dict):
    if "choices" in spec:
        return trial.suggest_categorical(name, spec["choices"])
    if isinstance(spec["low"], int) and isinstance(spec["high"], int):
        return trial.suggest_int(name, spec["low"], spec["high"], log=bool(spec.get("log")))
    return trial.suggest_float(name, spec["low"], spec["high"], log=bool(spec.get("log")))


def optuna_tpe(trainer: Trainer, runs: int, seed: int) -> tuple[list[float], dict]:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({})   # the first trial is train.py as it is (the others' baseline)
    values: list[float] = []
    while len(values) < runs:
        trials = [study.ask() for _ in range(min(SLOTS, runs - len(values)))]
        params = [{n: _sample(t, n, s) for n, s in SPACE.items()} for t in trials]
        params[0] = params[0] if values else {}
        results = trainer.batch([(p, seed * 1000 + len(values) + i) for i, p in enumerate(params)])
        for trial, value in zip(trials, results):
            study.tell(trial, value if value != float("inf") else None,
                       state=None if value != float("inf") else optuna.trial.TrialState.FAIL)
        values += results
    best = min((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    return values, best.params if best.number else {}


def random_search(trainer: Trainer, runs: int, seed: int) -> tuple[list[float], dict]:
    rng = random.Random(seed)
    configs = [{}] + [{n: _random_value(rng, s) for n, s in SPACE.items()} for _ in range(runs - 1)]
    values = []
    for at in range(0, runs, SLOTS):
        chunk = configs[at:at + SLOTS]
        values += trainer.batch([(p, seed * 1000 + at + i) for i, p in enumerate(chunk)])
    return values, configs[values.index(min(values))]


def keep_reset(trainer: Trainer, runs: int, seed: int) -> tuple[list[float], dict]:
    rng = random.Random(seed)
    best_params: dict = {}
    values = [trainer.run({}, seed * 1000)]
    best = values[0]
    while len(values) < runs:
        name = rng.choice(sorted(SPACE))
        trial = {**best_params, name: _random_value(rng, SPACE[name])}
        value = trainer.run(trial, seed * 1000 + len(values))
        values.append(value)
        if value < best:
            best, best_params = value, trial
    return values, best_params


def _random_value(rng: random.Random, spec: dict):
    if "choices" in spec:
        return rng.choice(spec["choices"])
    low, high = spec["low"], spec["high"]
    if isinstance(low, int) and isinstance(high, int):
        return round(math.exp(rng.uniform(math.log(low), math.log(high)))) if spec.get("log") else rng.randint(low, high)
    return math.exp(rng.uniform(math.log(low), math.log(high))) if spec.get("log") else rng.uniform(low, high)


# -- the lab -------------------------------------------------------------------------
def lab_method(exploration: str, researcher: str = "builtin"):
    def method(trainer: Trainer, runs: int, seed: int) -> tuple[list[float], dict]:
        root = Path(tempfile.mkdtemp(prefix=f"search-vs-peers-lab-{exploration}-"))
        init_lab(root, template="tiny-gpt")
        (root / "train.py").write_text(trainer.source)
        config = (root / "lab.yaml").read_text()
        config = re.sub(r"(?ms)^  params: \[.*?\]\n", f"  params: {json.dumps(SPACE)}\n", config)
        config = config.replace("  planner: {kind: builtin}", f"  planner: {{kind: builtin, exploration: {exploration}}}")
        config = config.replace("  researcher: {kind: builtin}", f"  researcher: {{kind: {researcher}}}")
        assert "exploration" in config and f"researcher: {{kind: {researcher}}}" in config and "low" in config
        (root / "lab.yaml").write_text(config)
        gitops.commit_paths(root, ["lab.yaml", "train.py"], f"bench: search space, seed {seed}")
        lab = Lab(root)
        for wave in range(2):   # two baseline seeds: main's score and the seed noise the margin follows from
            new_experiment(lab, None, {}, base_commit(lab), priority=100, wave=seed * 100 + wave, kind="baseline")
        lab_run(lab, until_idle=True, max_experiments=runs, tick=0.2)
        rows = sorted(pq.read_table(lab.experiments / "scores").to_pylist(), key=lambda r: r["finished"])
        values = [r["value"] if r["value"] is not None and r["status"] == "finished" else float("inf") for r in rows]
        final = read_params(gitops.run_git(root, "show", f"{base_commit(lab)}:train.py"))
        default = read_params(trainer.source)
        return values[:runs], {k: v for k, v in final.items() if k in SPACE and v != default.get(k)}
    return method


RUNNERS = {"lab-factor": lab_method("factor"), "lab-optuna": lab_method("optuna", researcher="off"),
           "optuna-tpe": optuna_tpe, "random": random_search, "keep-reset": keep_reset}


# -- table -----------------------------------------------------------------------------
def one(method: str, trainer: Trainer, runs: int, seed: int, checkpoints: list[int]) -> dict:
    start = time.monotonic()
    values, pick = RUNNERS[method](trainer, runs, seed)
    wall = time.monotonic() - start
    final = trainer.batch([(pick, s) for s in REMEASURE_SEEDS])
    row = {"method": method, "seed": seed, "runs": len(values), "wall_s": wall,
           "final_val_bpb": statistics.fmean(final), "pick": json.dumps(pick, sort_keys=True)}
    for k in checkpoints:
        seen = [v for v in values[:k] if v != float("inf")]
        row[f"best_at_{k}"] = min(seen) if seen and len(values) >= k else None
    print(f"  {method:<11} seed {seed}: best {min(values):.4f}, final {row['final_val_bpb']:.4f}, "
          f"{wall:.0f} s, pick {row['pick']}", flush=True)
    return row


def _mean_sd(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f}±{sd:.4f}"


def table(rows: list[dict], methods: list[str], checkpoints: list[int]) -> str:
    head = [f"best@{k}" for k in checkpoints] + ["final (3 seeds)", "wall_s"]
    lines = [f"| method | {' | '.join(head)} |", "|---" * (len(head) + 1) + "|"]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        cells = [_mean_sd([r[f"best_at_{k}"] for r in mine]) for k in checkpoints]
        cells += [_mean_sd([r["final_val_bpb"] for r in mine]), f"{statistics.fmean(r['wall_s'] for r in mine):.0f}"]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="training runs per method and seed")
    parser.add_argument("--seeds", type=int, default=3, help="search seeds per method")
    parser.add_argument("--first-seed", type=int, default=1, help="the first search seed (to add seeds to a run)")
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[8, 16, 24, 40])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--flop-budget", type=float, default=None,
                        help="FLOP_BUDGET of the train.py copy every run uses (default: train.py's)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search_vs_peers.parquet")
    args = parser.parse_args()
    trainer = Trainer(args.flop_budget)
    trainer.run({}, 0)   # builds the corpus cache, so that no timed run pays for it
    checkpoints = [k for k in args.checkpoints if k <= args.runs]
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for method in args.methods:
            rows.append(one(method, trainer, args.runs, seed, checkpoints))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), args.out)
    budget = f"FLOP_BUDGET {args.flop_budget:g}" if args.flop_budget else "train.py's FLOP_BUDGET"
    print(f"\n{args.runs} runs per method, {args.seeds} seeds, {SLOTS} slots (keep-reset: 1), {budget}\n")
    print(table(rows, args.methods, checkpoints))
    print(f"\nrows: {args.out}")


if __name__ == "__main__":
    main()
