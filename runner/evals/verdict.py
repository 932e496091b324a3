"""The `accepted` assertion: would the runner accept what the agent wrote in its role?

The same checks as after a real agent ends (roles/agents.py): every path changed in the
lab's checkout since the case was set up (in the working tree or in commits) against the
role's rights (roles/ownership.py), new hypotheses through the gates (a duplicate or
rejected idea counts against it); for a worker whose entry is `ready`, its worktree's diff
against the entry's base through the launch gates (roles/gates.py: protected, editable,
frozen constants, one change).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..lab import Lab
from ..repo.gitops import changed_by_others, run_git
from ..repo.snapshot import Snapshot, blobs_at, snapshot
from ..roles import gates
from ..roles.ownership import RULE_TEXT, Ownership
from ..state import machine
from .cases import Case
from .workspace import Workspace


def refusals(case: Case, ws: Workspace) -> list[str]:
    lab = Lab(ws.root)
    problems = _ownership(lab, case.role, ws) if case.role else []
    if case.role == "worker":
        problems += _launch_gates(lab, case.task, ws)
    return problems


def _ownership(lab: Lab, role: str, ws: Workspace) -> list[str]:
    before, after = Snapshot(ws.setup_commit, {}), snapshot(ws.root)
    candidates = sorted(set(after.digests) | changed_by_others(ws.root, before.head, after.head))
    blobs = {**blobs_at(ws.root, before.head, candidates), **blobs_at(ws.root, after.head, candidates)}
    changed = [(p, before.digest(p, blobs), after.digest(p, blobs)) for p in candidates]
    changed = [(p, old, new) for p, old, new in changed if old != new]
    fresh = {Path(p).stem for p, old, _ in changed if old is None and p.endswith(".yaml")}
    checker = Ownership(lab, role, ws.values["task"], fresh)
    problems = []
    for path, old, new in changed:
        rule = checker.check(path, old, new)
        if rule:
            problems.append(f"{path}: refused by rule {rule} ({RULE_TEXT.get(rule, 'roles/gates.py')})")
    problems += [f"{mark.path}: the gates mark it {mark.rejection}" for mark in checker.marks]
    return problems


def _launch_gates(lab: Lab, task: str, ws: Workspace) -> list[str]:
    from ..state.entries import load as load_entry
    path = lab.queue / f"{task}.yaml"
    if not path.is_file():
        return []
    entry = load_entry(lab, path)
    if entry.status != machine.READY:
        return []     # not handed back: the runner launches nothing
    with tempfile.TemporaryDirectory(prefix="benchlab-verdict-") as scratch:
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}   # the worktree's own index is the agent's
        run_git(ws.cwd, "read-tree", "HEAD", env=index)
        run_git(ws.cwd, "add", "-A", env=index)
        files = run_git(ws.cwd, "diff", "--cached", "--name-only", entry.base, env=index).splitlines()
        diff = run_git(ws.cwd, "diff", "--cached", entry.base, env=index)
    rejection = gates.check_diff(lab, files, diff + "\n", entry.change)
    return [f"{task}: the launch gates refuse its worktree ({rejection})"] if rejection else []
