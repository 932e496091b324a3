"""Events (anomalies, refusals, failures, promotions) in experiments/events.parquet."""
from __future__ import annotations

from ..files.locks import FileLock
from ..files.tables import EVENTS, append_rows, read_table
from ..lab import Lab
from ..secrets import mask
from .timeutil import now

LEVELS = ("info", "warn", "error")


def record_event(lab: Lab, level: str, kind: str, message: str, *, experiment: str | None = None,
                 hypothesis: str | None = None, path: str | None = None) -> dict:
    """Append one event; the lock keeps concurrent writers from losing rows."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")
    row = {"at": now(), "level": level, "kind": kind, "experiment": experiment,
           "hypothesis": hypothesis, "path": path, "message": mask(message)}  # also what the webhook sends
    with FileLock(lab.locks / "events.lock"):
        append_rows(lab.events_path, EVENTS, [row])
    return row


def read_events(lab: Lab):
    return read_table(lab.events_path, EVENTS)


def record_once(lab: Lab, kind: str, message: str, *, level: str = "error", experiment: str | None = None,
                hypothesis: str | None = None) -> dict | None:
    """Record an event unless one of this kind about this experiment is already recorded."""
    table = read_events(lab)
    if table.num_rows:
        seen = zip(table["kind"].to_pylist(), table["experiment"].to_pylist())
        if (kind, experiment) in set(seen):
            return None
    return record_event(lab, level, kind, message, experiment=experiment, hypothesis=hypothesis)
