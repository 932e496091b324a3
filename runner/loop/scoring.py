"""Scores of targets and the noise margin.

Main gets many state commits; only promotions change the target. So a score
belongs to a *target key*: a hash of the editable files' blobs at a commit.
The score of a key is the mean of every valid measurement of it (baselines,
the promoted run, re-runs), so repeated measurements sharpen the estimate; and
it is taken within one environment class (backends/envclass.py): a number
measured on other hardware or software never judges a result.
"""
from __future__ import annotations

import hashlib
import statistics
from functools import lru_cache
from pathlib import Path

import pyarrow.compute as pc

from ..lab import Lab
from ..repo.gitops import run_git
from ..state.scores import scores


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


def key_values(table, key: str, env_class: str | None = None, column: str = "value") -> list[float]:
    """Valid measurements (baselines, promotions) of a target key, in one class (None: any class)."""
    if table.num_rows == 0:
        return []
    rows = table.filter(pc.and_(pc.equal(table["target"], key), pc.is_valid(table[column])))
    rows = rows.filter(pc.or_(rows["promoted"], pc.equal(rows["kind"], "baseline")))
    if env_class is not None:
        rows = rows.filter(pc.fill_null(pc.equal(rows["env_class"], env_class), False))
    return [v for v in rows[column].to_pylist() if v == v]  # drop NaN


def score_of(lab: Lab, commit: str, env_class: str | None, table=None, column: str = "value") -> float | None:
    """Mean of the valid measurements of the target at `commit` in `env_class`, or None;
    column="holdout" gives the mean of its holdout figures."""
    values = key_values(scores(lab) if table is None else table, target_key(lab, commit), env_class, column)
    return statistics.fmean(values) if values else None


def noise_margin(lab: Lab, table=None) -> float:
    """The configured margin, or k x the seed stdev of the latest baseline set if larger."""
    objective = lab.config["objective"]
    margin = float(objective.get("noise_margin", 0.0))
    k = objective.get("margin_from_baseline")
    table = scores(lab) if table is None else table
    if not k or table.num_rows == 0:
        return margin
    base = table.filter(pc.and_(pc.equal(table["kind"], "baseline"), pc.is_valid(table["value"])))
    if base.num_rows < 2:
        return margin
    latest = base["target"][base.num_rows - 1].as_py()
    values = [v for v in key_values(base, latest) if v == v]
    if len(values) < 2:
        return margin
    return max(margin, k * statistics.stdev(values))


def failed_baseline(lab: Lab, commit: str, table=None, env_class: str | None = None) -> str | None:
    """The id of the latest baseline of this target (in `env_class`, None: any) that failed, when no
    measurement of it succeeded since: the target itself fails, so more baselines would only fail too."""
    table = scores(lab) if table is None else table
    if table.num_rows == 0:
        return None
    rows = table.filter(pc.and_(pc.equal(table["target"], target_key(lab, commit)),
                                pc.equal(table["kind"], "baseline")))
    if env_class is not None:
        rows = rows.filter(pc.fill_null(pc.equal(rows["env_class"], env_class), False))
    last = rows.slice(rows.num_rows - 1).to_pylist() if rows.num_rows else []
    if last and last[0]["value"] is None and last[0]["status"] in ("failed", "timed_out"):
        return last[0]["id"]
    return None
