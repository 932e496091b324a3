"""Queue entries: reading them, and the state machine's allowed transitions.

Each transition has one allowed actor (DESIGN.md section 3). The runner writes
a history item for every transition it makes; a status in the file that differs
from the last history item was set by someone else and is checked against
EXTERNAL: anything else is refused and the runner's status is restored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import schema
from .lab import Lab
from .problems import LabError
from .timeutil import iso
from .yamlio import load_yaml, write_yaml

LIVE = ("queued", "assigned", "ready", "running")
TERMINAL = ("finished", "failed", "timed_out", "cancelled", "stale")
# (from, to) transitions an actor other than the runner may make
EXTERNAL = {("assigned", "ready"), ("queued", "cancelled"), ("assigned", "cancelled"),
            ("ready", "cancelled"), ("running", "cancelled")}


@dataclass
class Entry:
    path: Path
    data: dict

    @property
    def id(self) -> str: return self.data["id"]
    @property
    def status(self) -> str: return self.data["status"]
    @property
    def last_status(self) -> str:
        history = self.data.get("history") or []
        return history[-1]["status"] if history else "queued"
    @property
    def is_baseline(self) -> bool: return self.data.get("kind") == "baseline"


def load(lab: Lab, path: Path) -> Entry:
    """A queue entry, validated; LabError names the file and field otherwise."""
    data, lines = load_yaml(path)
    rel = lab.rel(path)
    if not isinstance(data, dict):
        raise LabError("expected a mapping of fields", rel, line=1)
    problems = schema.check("experiment", data, rel, lines)
    if problems:
        p = problems[0]
        raise LabError(p.message, p.path, p.field, p.line)
    if data["id"] != path.stem:
        raise LabError(f"id {data['id']!r} does not match the file name", rel, "id", lines.get("id"))
    return Entry(path, data)


def transition(entry: Entry, status: str, by: str, note: str = "", **fields) -> None:
    """Set status (plus fields), append history, write atomically."""
    entry.data.update(fields)
    entry.data["status"] = status
    entry.data["updated"] = iso()
    item = {"status": status, "at": entry.data["updated"], "by": by}
    if note:
        item["note"] = note[:500]
    entry.data.setdefault("history", []).append(item)
    write_yaml(entry.path, entry.data)


def external_change_allowed(entry: Entry) -> bool:
    return entry.status == entry.last_status or (entry.last_status, entry.status) in EXTERNAL
