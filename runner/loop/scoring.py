"""Scores of targets and the noise they are judged with.

Main gets many state commits; only promotions change the target. So a score
belongs to a *target key*: a hash of the editable files' blobs at a commit.
The score of a key is the mean of every valid measurement of it (baselines,
the promoted run, its confirmation, re-runs), so repeated measurements sharpen
the estimate. The seed noise σ of one run is the stdev of the latest baseline
set; the margin follows from it (noise.py). All of it is taken within one
environment class (backends/envclass.py): a number measured on other hardware
or software never judges a result nor sets its margin.
"""
from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow.compute as pc

from ..files.tables import METRICS, read_table
from ..lab import Lab
from ..repo.gitops import run_git
from ..state.scores import scores
from .noise import derived_margin, implied_rate, z_score


def base_commit(lab: Lab, ref: str = "HEAD") -> str:
    """The commit that last changed the editable files: the base for new experiments.

    Main gets many state commits; anchoring every experiment on one target to the
    same commit keeps "same base" comparisons (gates, stale checks) meaningful."""
    editable = lab.config["target"]["editable"]
    return run_git(lab.root, "log", "-1", "--format=%H", ref, "--", *editable) or run_git(lab.root, "rev-parse", ref)


def target_key(lab: Lab, commit: str) -> str:
    return _target_key(str(lab.root), commit, tuple(lab.config["target"]["editable"]))


@lru_cache(maxsize=4096)
def _target_key(root: str, commit: str, editable: tuple[str, ...]) -> str:
    listing = run_git(Path(root), "ls-tree", commit, "--", *editable)
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def in_class(table, env_class: str | None):
    """The rows measured in `env_class` (None: every row)."""
    if env_class is None or table.num_rows == 0:
        return table
    return table.filter(pc.fill_null(pc.equal(table["env_class"], env_class), False))


def key_values(table, key: str, env_class: str | None = None, column: str = "value") -> list[float]:
    """Every valid measurement of a target key in one class (None: any): finished runs of any kind,
    each on its own seed; a reproduction re-runs its original's seed, so it adds no measurement."""
    table = in_class(table, env_class)
    if table.num_rows == 0:
        return []
    rows = table.filter(pc.and_(pc.equal(table["target"], key), pc.is_valid(table[column])))
    rows = rows.filter(pc.and_(pc.equal(rows["status"], "finished"), pc.not_equal(rows["kind"], "reproduction")))
    return [v for v in rows[column].to_pylist() if v == v]  # drop NaN


def score_of(lab: Lab, commit: str, env_class: str | None = None, table=None, column: str = "value") -> float | None:
    """Mean of the valid measurements of the target at `commit` in `env_class`, or None;
    column="holdout" gives the mean of its holdout figures."""
    values = key_values(scores(lab) if table is None else table, target_key(lab, commit), env_class, column)
    return statistics.fmean(values) if values else None


def runs_of(lab: Lab, commit: str, env_class: str | None = None, table=None) -> int:
    """How many measurements the score of the target at `commit` in `env_class` averages."""
    return len(key_values(scores(lab) if table is None else table, target_key(lab, commit), env_class))


@dataclass(frozen=True)
class Noise:
    """What a comparison of n_cand runs of a candidate with n_base runs of its base is judged with."""
    margin: float
    sigma: float | None        # seed stdev of one run, from the latest baseline set (None: not measured)
    sigma_runs: int            # runs in that estimate
    n_base: int
    n_cand: int = 1

    @property
    def df(self) -> int | None:
        return self.sigma_runs - 1 if self.sigma is not None else None

    @property
    def rate(self) -> float | None:
        """The false-promotion rate this margin implies for a change with no effect."""
        if self.sigma is None:
            return None
        return implied_rate(self.margin, self.sigma, self.n_base, self.n_cand, self.df)

    def z(self, gain: float) -> float | None:
        return z_score(gain, self.sigma, self.n_base, self.n_cand)


def baseline_sigma(table, env_class: str | None = None) -> tuple[float | None, int]:
    """(stdev, runs) of the latest baseline set in `env_class` (None: any): the baselines of the
    last target measured by one there."""
    table = in_class(table, env_class)
    if table.num_rows == 0:
        return None, 0
    base = table.filter(pc.and_(pc.equal(table["kind"], "baseline"), pc.is_valid(table["value"])))
    if base.num_rows < 2:
        return None, base.num_rows
    values = key_values(base, base["target"][base.num_rows - 1].as_py())
    return (statistics.stdev(values), len(values)) if len(values) >= 2 else (None, len(values))


def noise_for(objective: dict, sigma: float | None, sigma_runs: int, n_base: int, n_cand: int = 1) -> Noise:
    """The margin lab.yaml's objective asks for: noise_margin, raised to margin_from_baseline x σ
    and to the margin of false_promotion_rate once σ is measured."""
    margin = float(objective.get("noise_margin", 0.0))
    if sigma is not None:
        if objective.get("margin_from_baseline"):
            margin = max(margin, objective["margin_from_baseline"] * sigma)
        if objective.get("false_promotion_rate"):
            margin = max(margin, derived_margin(sigma, objective["false_promotion_rate"], n_base, n_cand,
                                                sigma_runs - 1))
    return Noise(margin, sigma, sigma_runs, max(1, n_base), n_cand)


def noise(lab: Lab, table=None, n_base: int = 1, n_cand: int = 1, env_class: str | None = None) -> Noise:
    """The noise a candidate of n_cand runs against a base of n_base runs, in `env_class`, is judged with."""
    table = scores(lab) if table is None else table
    return noise_for(lab.config["objective"], *baseline_sigma(table, env_class), n_base, n_cand)


def main_noise(lab: Lab, table=None) -> Noise:
    """The noise a one-run candidate on today's main would be judged with (status, report)."""
    table = scores(lab) if table is None else table
    return noise(lab, table, runs_of(lab, base_commit(lab), None, table))


def failed_baseline(lab: Lab, commit: str, table=None, env_class: str | None = None) -> str | None:
    """The id of the latest baseline of this target (in `env_class`, None: any) that failed, when no
    measurement of it succeeded since: the target itself fails, so more baselines would only fail too."""
    table = in_class(scores(lab) if table is None else table, env_class)
    if table.num_rows == 0:
        return None
    rows = table.filter(pc.and_(pc.equal(table["target"], target_key(lab, commit)),
                                pc.equal(table["kind"], "baseline")))
    last = rows.slice(rows.num_rows - 1).to_pylist() if rows.num_rows else []
    if last and last[0]["value"] is None and last[0]["status"] in ("failed", "timed_out"):
        return last[0]["id"]
    return None


def base_metrics(lab: Lab, commit: str, env_class: str | None, table=None) -> dict[str, float]:
    """Each summary metric of the target at `commit`, averaged over its measurements in `env_class`
    (for constraints)."""
    table = in_class(scores(lab) if table is None else table, env_class)
    if table.num_rows == 0:
        return {}
    rows = table.filter(pc.and_(pc.equal(table["target"], target_key(lab, commit)),
                                pc.equal(table["status"], "finished")))
    found: dict[str, list[float]] = {}
    for exp_id in rows["id"].to_pylist():
        metrics = read_table(lab.experiments / exp_id / "metrics.parquet", METRICS)
        metrics = metrics.filter(metrics["summary"])
        for name, value in zip(metrics["name"].to_pylist(), metrics["value"].to_pylist()):
            if value is not None and value == value:
                found.setdefault(name, []).append(value)
    return {name: statistics.fmean(values) for name, values in found.items()}
