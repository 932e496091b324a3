"""Events (anomalies, refusals, failures, promotions) under experiments/events/.

A process writes its events into one file of its own, `<utc>-<random>.parquet`, until the
runner commits it (`seal`); the next event starts a new file. No file is ever written by two
writers, so two runners' or two labs' events merge as new files.
"""
from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

from ..files.tabledir import read_many
from ..files.tables import EVENTS, TABLES, rows_table, write_part, write_table
from ..lab import Lab
from ..secrets import mask
from .timeutil import now

LEVELS = ("info", "warn", "error")
TABLE = TABLES["events"]
_LOCK = threading.Lock()
_OPEN: dict[str, tuple[Path, list[dict]]] = {}   # lab root -> (this process's open file, its rows)


def events_dir(lab: Lab) -> Path:
    return lab.root / TABLE.directory


def record_event(lab: Lab, level: str, kind: str, message: str, *, experiment: str | None = None,
                 hypothesis: str | None = None, path: str | None = None) -> dict:
    """Add one event to this process's open events file (rewritten whole: it stays small)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")
    row = {"at": now(), "level": level, "kind": kind, "experiment": experiment,
           "hypothesis": hypothesis, "path": path, "message": mask(message)}  # also what the webhook sends
    with _LOCK:
        target, rows = _OPEN.get(str(lab.root)) or (_new_file(lab), [])
        rows.append(row)
        write_table(target, rows_table(rows, EVENTS))
        _OPEN[str(lab.root)] = (target, rows)
    return row


def _new_file(lab: Lab) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return events_dir(lab) / f"{stamp}-{secrets.token_hex(4)}.parquet"


def pending(lab: Lab) -> Path | None:
    """The events file this process is still writing, if it holds any event."""
    with _LOCK:
        found = _OPEN.get(str(lab.root))
    return found[0] if found else None


def seal(lab: Lab, path: Path) -> None:
    """`path` is committed: the next event goes to a new file."""
    with _LOCK:
        if (_OPEN.get(str(lab.root)) or (None,))[0] == path:
            del _OPEN[str(lab.root)]


def write_events(lab: Lab, rows: list[dict]) -> Path:
    """Many events at once, as one compacted part (an import, a fixture)."""
    events_dir(lab).mkdir(parents=True, exist_ok=True)
    return write_part(events_dir(lab), rows_table(rows, EVENTS))


def read_events(lab: Lab, skipped: list[str] | None = None):
    """Every event once, oldest first."""
    return read_many(lab.root, TABLE, skipped)


def record_once(lab: Lab, kind: str, message: str, *, level: str = "error", experiment: str | None = None,
                hypothesis: str | None = None) -> dict | None:
    """Record an event unless one of this kind about this experiment is already recorded."""
    table = read_events(lab)
    if table.num_rows:
        seen = zip(table["kind"].to_pylist(), table["experiment"].to_pylist())
        if (kind, experiment) in set(seen):
            return None
    return record_event(lab, level, kind, message, experiment=experiment, hypothesis=hypothesis)
