"""Queue entries (queue/<id>.yaml): loading them, typed access, and transitions.

The runner writes a history item for every transition it makes; a status in the
file that differs from the last history item was set by someone else and must be
one the state machine lets an outside actor make (`machine.external`), else the
runner restores its own status.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError
from ..files.yamlio import load_yaml, write_yaml
from ..lab import Lab
from ..validation import schema
from . import machine
from .timeutil import iso


@dataclass
class Entry:
    path: Path
    data: dict

    @property
    def id(self) -> str: return self.data["id"]
    @property
    def status(self) -> str: return self.data["status"]
    @property
    def kind(self) -> str: return self.data.get("kind", "experiment")
    @property
    def is_baseline(self) -> bool: return self.kind == "baseline"
    @property
    def runs_base(self) -> bool:
        """A baseline or a reproduction: runs its base commit as it is (no worker, no gate, never stale)."""
        return self.kind in ("baseline", "reproduction")
    @property
    def env_class(self) -> str | None: return (self.data.get("environment") or {}).get("class")
    @property
    def hypothesis(self) -> str | None: return self.data.get("hypothesis")
    @property
    def change(self) -> dict: return self.data.get("change") or {}
    @property
    def priority(self) -> int: return int(self.data.get("priority", 0))
    @property
    def wave(self) -> int: return int(self.data.get("wave", 0))
    @property
    def created(self) -> str: return self.data["created"]
    @property
    def worker(self) -> str | None: return self.data.get("worker")
    @property
    def job(self) -> dict: return dict(self.data.get("job") or {})
    @property
    def slot(self) -> str | None: return self.job.get("slot")
    @property
    def attempts(self) -> int: return int(self.job.get("attempts", 0))

    @property
    def base(self) -> str: return self.data["base"]

    @base.setter
    def base(self, commit: str) -> None: self.data["base"] = commit

    @property
    def last_status(self) -> str:
        """The status of the last transition the history records."""
        history = self.data.get("history") or []
        return history[-1]["status"] if history else machine.QUEUED

    @property
    def changed_from_outside(self) -> bool:
        """The file's status differs from its history: someone else set it."""
        return self.status != self.last_status

    @property
    def outside_change_allowed(self) -> bool:
        return not self.changed_from_outside or machine.external(self.last_status, self.status)


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
    if entry.status != status and not machine.allowed(entry.status, status, by):
        raise ValueError(f"{entry.id}: {entry.status} -> {status} is not a transition {by} may make")
    entry.data.update(fields)
    entry.data["status"] = status
    entry.data["updated"] = iso()
    item = {"status": status, "at": entry.data["updated"], "by": by}
    if note:
        item["note"] = note[:500]
    entry.data.setdefault("history", []).append(item)
    write_yaml(entry.path, entry.data)


def restore_status(entry: Entry) -> str:
    """Put back the runner's last status over a change an outside actor may not make; returns the refused one."""
    refused = entry.status
    entry.data["status"] = entry.last_status
    write_yaml(entry.path, entry.data)
    return refused


_STATUS_LINE = re.compile(rb"^status:\s*['\"]?([a-z_]+)", re.M)


def quick_status(path: Path) -> str | None:
    """The `status:` of a state file by a regex, without parsing it: 10,000 files in well
    under a second. None if unreadable or without a status line."""
    try:
        found = _STATUS_LINE.search(path.read_bytes())
    except OSError:
        return None
    return found.group(1).decode() if found else None


def count_statuses(paths) -> Counter:
    """{status: files} by `quick_status`; files without a readable status count as `invalid`."""
    return Counter(quick_status(path) or "invalid" for path in paths)
