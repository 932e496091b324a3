"""What an agent role may have written in main's checkout, path by path.

The rights come from the tables in state/machine.py (ROLE_FILES, the
transitions); the gates review new hypotheses and queue entries. A check only
decides: it returns the rule a change breaks, or records that a new hypothesis
must be marked (a duplicate is kept, but judged); the agent supervisor carries
that out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError
from ..files.yamlio import parse_data, read_text
from ..repo.gitops import git_bytes
from ..state import machine
from ..state.events import record_event
from ..validation.validate import validate
from . import gates
from .history import History

RULE_TEXT = {
    "not-owned": "the role does not own this file; a worker's code belongs in its worktree",
    "protected": "target.protected in lab.yaml",
    "invalid": "`lab validate` rejects it",
    "deleted": "agents never delete lab files",
    "fields": "changed fields the role does not own",
    "status": "a status this role may not set",
    **{rule: "a gate on the change (runner/roles/gates.py)" for rule in gates.RULES},
}


@dataclass(frozen=True)
class Mark:
    """A new hypothesis the gates judged on the researcher's behalf: keep it, with this verdict."""
    path: str
    rejection: gates.Rejection


@dataclass
class Ownership:
    lab: object
    role: str
    task_id: str
    fresh: set[str] = field(default_factory=set)   # ids of files new in this batch, not yet reviewed
    marks: list[Mark] = field(default_factory=list)
    _history: History | None = None

    def check(self, path: str, old: str | None, new: str | None) -> str | None:
        """None if the role may have made this change, else the rule it breaks."""
        if new is None:
            return "deleted"
        if gates.is_protected(self.lab, path):
            return "protected"
        rule = machine.rule_for(self.role, path, self.task_id)
        if rule is None:
            return "not-owned"
        if rule.free:
            return None
        if not validate(Path(self.lab.root), [str(Path(self.lab.root) / path)]).ok:
            return "invalid"
        kind = "hypothesis" if path.startswith("hypotheses/") else "experiment"
        data = _load(Path(self.lab.root) / path)
        if old is None:
            if rule.create_as is None:
                return "not-owned"
            return "status" if data.get("status") != rule.create_as else self._gate(path, data, kind)
        return self._edit(rule, kind, _load_blob(Path(self.lab.root), old), data)

    def _edit(self, rule: machine.FileRule, kind: str, previous: dict, data: dict) -> str | None:
        changed = {k for k in previous.keys() | data.keys() if previous.get(k) != data.get(k)}
        owned = set(rule.fields) if rule.only_fields else changed - set(rule.fields)
        if not rule.fields and rule.only_fields:
            return "not-owned"           # it may create such files, not edit them (a planner's live entry)
        if changed - owned:
            return "status" if changed - owned <= {"status", "review"} else "fields"
        if "status" in changed and not machine.may_set(self.role, kind, previous.get("status"), data.get("status")):
            return "status"
        return None

    def _gate(self, path: str, data: dict, kind: str) -> str | None:
        if self._history is None:
            self._history = History.load(self.lab)
        own = data.get("id")
        self.fresh.discard(own)
        queue = kind == "experiment"
        rejection = gates.review_change(self.lab, self._history, data.get("change") or {},
                                        base=data.get("base"), exclude_id=self.fresh | {own},
                                        hypothesis_id=data.get("hypothesis") if queue else own)
        if rejection is None:
            self._history.add(own, data.get("change") or {}, data.get("base"), data.get("status", ""), kind=kind)
            return None
        if queue:
            record_event(self.lab, "warn", "gate", f"{path}: {rejection}", experiment=own,
                         hypothesis=data.get("hypothesis"), path=path)
            return rejection.rule
        self.marks.append(Mark(path, rejection))
        return None


def _load(path: Path) -> dict:
    try:
        data = parse_data(read_text(path), str(path))
    except LabError:
        return {}
    return data if isinstance(data, dict) else {}


def _load_blob(root: Path, digest: str) -> dict:
    try:
        data = parse_data(git_bytes(root, "cat-file", "blob", digest).decode("utf-8"), digest)
    except (LabError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
