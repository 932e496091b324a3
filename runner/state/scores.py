"""Reading experiments/scores.parquet: best score, main's score, history."""
from __future__ import annotations

import pyarrow.compute as pc

from ..files.tables import SCORES, read_table
from ..lab import Lab


def scores(lab: Lab):
    return read_table(lab.scores_path, SCORES)


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
