"""The scores table (one file per experiment under experiments/scores/): reading it as one
table, writing an experiment's row once, the best score."""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from ..files.tabledir import read_many
from ..files.tables import SCORES, TABLES, rows_table, write_part, write_table
from ..lab import Lab

TABLE = TABLES["scores"]


def scores_dir(lab: Lab) -> Path:
    return lab.root / TABLE.directory


def scores(lab: Lab, skipped: list[str] | None = None):
    """Every score row once, in the order the experiments finished (files/tabledir.py)."""
    return read_many(lab.root, TABLE, skipped)


def score_file(lab: Lab, exp_id: str) -> Path:
    return scores_dir(lab) / f"{exp_id}.parquet"


def write_score(lab: Lab, row: dict) -> Path:
    """The experiment's own file, written once (a runner killed after writing it keeps it; it is
    committed with the experiment's record, and only committed files are ever compacted)."""
    path = score_file(lab, row["id"])
    if not path.exists():
        write_table(path, rows_table([row], SCORES))
    return path


def write_scores(lab: Lab, rows: list[dict]) -> Path:
    """Many rows at once, as one compacted part (an import, a fixture)."""
    scores_dir(lab).mkdir(parents=True, exist_ok=True)
    return write_part(scores_dir(lab), rows_table(rows, SCORES))


def recorded_ids(lab: Lab) -> set[str]:
    table = scores(lab)
    return set(table["id"].to_pylist()) if table.num_rows else set()


def best_row(lab: Lab, table=None, main_only: bool = True) -> dict | None:
    """Best score of a finished run (a failed run may have printed a value, a run may break a
    constraint: neither counts); main_only keeps baselines and promotions (what main holds)."""
    table = scores(lab) if table is None else table
    if table.num_rows == 0:
        return None
    mask = pc.and_(pc.is_valid(table["value"]), pc.equal(table["status"], "finished"))
    mask = pc.and_(mask, pc.is_null(table["constraint"]))
    if main_only:
        mask = pc.and_(mask, pc.or_(table["promoted"], pc.equal(table["kind"], "baseline")))
    candidates = table.filter(mask)
    if candidates.num_rows == 0:
        return None
    pick = pc.min_max(candidates["value"])["min" if lab.minimize else "max"].as_py()
    index = pc.index(candidates["value"], pick).as_py()
    return candidates.slice(index, 1).to_pylist()[0]
