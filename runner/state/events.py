"""Events (anomalies, refusals, failures, promotions) in experiments/events.parquet."""
from __future__ import annotations

from ..lab import Lab
from ..files.locks import FileLock
from ..files.tables import EVENTS, append_rows, read_table
from .timeutil import now

LEVELS = ("info", "warn", "error")


def record_event(lab: Lab, level: str, kind: str, message: str, *, experiment: str | None = None,
                 hypothesis: str | None = None, path: str | None = None) -> dict:
    """Append one event; the lock keeps concurrent writers from losing rows."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")
    row = {"at": now(), "level": level, "kind": kind, "experiment": experiment,
           "hypothesis": hypothesis, "path": path, "message": message}
    with FileLock(lab.locks / "events.lock"):
        append_rows(lab.events_path, EVENTS, [row])
    return row


def read_events(lab: Lab):
    return read_table(lab.events_path, EVENTS)
