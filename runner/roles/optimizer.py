"""Exploration through Optuna's TPE sampler: the next single changes from main, asked of a
study rebuilt from the lab's own files on every call (nothing lives only in Optuna).

Each finished row of the scores table (experiments/scores/) whose change sets at most one parameter
is a told trial: the parameters of its base commit with its change applied, and its value
(a failed run or a broken constraint is told as failed, which TPE skips); queued and proposed
changes are told as running, so that the next ask looks elsewhere. To keep every
proposal a single change from main, all parameters but one are fixed to main's values and
TPE samples the free one; the free one goes round the declared parameters by trial number.
The sampler's seed is the number of trials in the study, so after a restart the same files
ask the same question; what was already proposed is then caught by the gates as a duplicate.
(CMA-ES is not offered: it keeps its mean and covariance in Optuna's own trial records, which a
study rebuilt from the lab's files does not have, and one free parameter leaves it nothing to adapt.)
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from ..errors import LabError
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..repo.gitops import run_git
from ..state.create import new_hypothesis
from ..state.params import is_number, read_params
from ..state.scores import scores
from . import gates
from .history import History

SAMPLER = "tpe"
STARTUP_TRIALS = 4   # TPE's random start-up, counted over the whole lab history
ATTEMPTS = 8         # asks per wanted proposal and parameter before giving up (the gates refuse the rest)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise LabError("roles.planner.exploration: optuna needs the optuna package "
                       "(pip install 'benchlab[optimizer]')", "lab.yaml", "roles.planner.exploration") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def search_space(specs: dict[str, dict], main: dict) -> dict:
    """Optuna distributions of the parameters the optimizer may move: declared choices and ranges;
    an undeclared number or bool gets a range around main's value; anything else is left alone."""
    dists = {}
    for name, spec in specs.items():
        dist = _distribution(spec, main.get(name))
        if dist is not None:
            dists[name] = dist
    return dists


def _distribution(spec: dict, value):
    optuna = _optuna()
    d = optuna.distributions
    if "choices" in spec:
        return d.CategoricalDistribution(list(spec["choices"]))
    if isinstance(value, bool):
        return d.CategoricalDistribution([True, False])
    if "low" in spec:
        low, high, log = spec["low"], spec["high"], bool(spec.get("log"))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, value)):
            return d.IntDistribution(low, high, log=log)
        return d.FloatDistribution(float(low), float(high), log=log)
    if isinstance(value, int) and value > 0:
        return d.IntDistribution(max(1, value // 4), value * 4, log=value > 8)
    if isinstance(value, float) and value > 0:
        return d.FloatDistribution(value / 10, value * 10, log=True)
    return None


def trials(lab: Lab, space: dict) -> list:
    """Every finished single-change experiment and baseline, as Optuna trials, oldest first."""
    optuna = _optuna()
    table = scores(lab)
    rows = sorted(table.to_pylist(), key=lambda r: (r["finished"] is None, r["finished"] or 0, r["id"]))
    out, bases = [], {}
    for row in rows:
        params = _params_of(lab, row, bases)
        if params is None:
            continue
        ok = row["status"] == "finished" and row["value"] is not None and math.isfinite(row["value"]) \
            and not row["constraint"]
        state = optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL
        out.append(_trial(space, params, state, row["value"] if ok else None))
    return out


def pending(lab: Lab, space: dict, main: dict) -> list:
    """Queued or running single changes and proposals not yet judged, as running trials: TPE's
    constant liar steers the next ask away from them."""
    running = _optuna().trial.TrialState.RUNNING
    out = []
    for path in [*lab.queue.glob("*.yaml"), *lab.hypotheses.glob("*.yaml")]:
        try:
            data = load_yaml(path)[0]
        except LabError:
            continue
        params = (data.get("change") or {}).get("params") if isinstance(data, dict) else None
        if path.parent == lab.hypotheses and data.get("status") != "proposed":
            continue
        if isinstance(params, dict) and len(params) == 1:
            out.append(_trial(space, {**main, **params}, running))
    return out


def _trial(space: dict, params: dict, state, value=None):
    kept = {k: v for k, v in params.items() if k in space and _inside(space[k], v)}
    return _optuna().trial.create_trial(params=kept, distributions={k: space[k] for k in kept},
                                        value=value, state=state)


def _params_of(lab: Lab, row: dict, bases: dict) -> dict | None:
    """The parameters a row measured: its base's, with its change applied; None when the change
    is not a single parameter change or the base cannot be read."""
    try:
        change = json.loads(row["change"] or "{}")
    except ValueError:
        return None
    if change.get("instructions") or len(change.get("params") or {}) > 1 or not row["base"]:
        return None
    if row["base"] not in bases:
        bases[row["base"]] = _main_params(lab, row["base"])
    if bases[row["base"]] is None:
        return None
    return {**bases[row["base"]], **(change.get("params") or {})}


def _main_params(lab: Lab, commit: str) -> dict | None:
    file = lab.config["target"]["editable"][0]
    try:
        return read_params(run_git(lab.root, "show", f"{commit}:{file}"), file)
    except (LabError, RuntimeError, OSError):
        return None


def _inside(dist, value) -> bool:
    if hasattr(dist, "choices"):
        return value in dist.choices
    return is_number(value) and dist.low <= value <= dist.high


def propose(lab: Lab, history: History, main_head: str, want: int, author: str = "planner") -> list[Path]:
    """Up to `want` proposed hypotheses, each one parameter of main moved to where TPE points,
    each passing the gates; recorded with `source: {kind: optimizer, sampler, trial}`."""
    optuna = _optuna()
    main = _main_params(lab, main_head) or {}
    space = search_space(lab.params, main)
    names = sorted(n for n, d in space.items() if not _one_choice(d))
    if not names or want <= 0:
        return []
    told = trials(lab, space) + pending(lab, space, main)
    made: list[Path] = []
    for attempt in range(ATTEMPTS * len(names) * want):
        if len(made) >= want:
            break
        number = len(told) + attempt
        free = names[number % len(names)]
        fixed = {k: main[k] for k in names if k != free and k in main and _inside(space[k], main[k])}
        study = optuna.create_study(direction="minimize" if lab.minimize else "maximize",
                                    sampler=optuna.samplers.PartialFixedSampler(fixed, _tpe(optuna, number)))
        study.add_trials(told)
        trial = study.ask(space)
        value = _tidy(space[free], trial.params[free])
        change = {"params": {free: value}}
        if value == main.get(free) or gates.review_change(lab, history, change, base=main_head):
            continue
        hyp_id, path = new_hypothesis(
            lab, f"optimizer: {free} = {value!r} (main has {main.get(free)!r})", change, author=author,
            rationale=f"TPE over the {len(told)} trials the lab's files record proposes moving {free}.",
            source={"kind": "optimizer", "sampler": SAMPLER, "trial": trial.number})
        history.add(hyp_id, change, None, "proposed", kind="hypothesis")
        told.append(_trial(space, {**main, free: value}, optuna.trial.TrialState.RUNNING))
        made.append(path)
    return made


def _one_choice(dist) -> bool:
    return len(getattr(dist, "choices", (0, 1))) < 2


def _tidy(dist, value):
    """A float rounded to 3 significant digits (readable titles, stable fingerprints), kept in range."""
    if not isinstance(value, float) or value == 0:
        return value
    return min(max(float(f"{value:.3g}"), dist.low), dist.high)


def _tpe(optuna, seed: int):
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, constant_liar=True)
