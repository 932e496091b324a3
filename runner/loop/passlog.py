"""What one reconcile pass changed, and the one commit that records it; what the runner
alone writes under experiments/ put back when anything else changed it.

Every pass that moves state ends in one commit with a structured message: a
subject naming the first transition (or the pass's own subject, e.g. a
promotion), and a body with one line per transition.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Callable

from ..files import written
from ..files.yamlio import atomic_write
from ..lab import Lab
from ..repo import gitops
from ..state import accounting, events


@dataclass
class PassLog:
    """Paths to commit and lines for the commit message."""
    paths: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    subject: str = ""

    def add(self, lab: Lab, *paths, line: str = "") -> None:
        self.paths += [p if isinstance(p, str) else lab.rel(p) for p in paths]
        if line:
            self.lines.append(line)

    def message(self) -> str:
        lines = [line for line in self.lines if line]
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        subject = self.subject or (f"lab: {lines[0]}{more}" if lines else "lab: record state files")
        body = "\n".join(lines)
        return f"{subject}\n\n{body}\n" if body else subject

    def clear(self) -> None:
        self.paths.clear()
        self.lines.clear()
        self.subject = ""


class Committer:
    """Commits passes; the events this process recorded since the last commit ride along
    (their file is then sealed: the next event starts a new one), and so do the agent-run files
    it wrote (accounting).
    `on_commit(commit, paths)` hears of each commit (the agents' supervisor, so that the
    runner's own changes are never taken for an agent's)."""

    def __init__(self, lab: Lab, on_commit: Callable[[str, list[str]], None] | None = None):
        self.lab = lab
        self.commits = 0
        self.on_commit = on_commit

    def commit(self, log: PassLog) -> str | None:
        batch = events.pending(self.lab)
        if batch is not None:
            log.add(self.lab, batch, line="" if log.lines else "runner: events")
        runs = accounting.uncommitted_agent_runs(self.lab)
        if runs:
            log.add(self.lab, *runs, line="" if log.lines else "runner: agent runs")
        if not log.paths:
            return None
        paths = list(dict.fromkeys(log.paths))
        commit = gitops.commit_paths(self.lab.root, paths, log.message())
        if batch is not None:
            events.seal(self.lab, batch)
        self._put_back(paths)
        if commit is not None:
            self.commits += 1
            if self.on_commit:
                self.on_commit(commit, paths)
        return commit

    def _put_back(self, paths: list[str]) -> None:
        """A file rewritten after the runner wrote it was committed as the runner wrote it;
        the disk gets that content back, and an event names the file."""
        for path in written.settle(self.lab.root / p for p in paths):
            events.record_event(self.lab, "error", "refused", f"{self.lab.rel(path)} changed after the runner "
                                "wrote it: the runner's content was committed and put back", path=self.lab.rel(path))


def guard_records(lab: Lab, log: PassLog) -> None:
    """experiments/ is written by the runner alone and committed in the pass that writes it:
    anything else found changed there (another experiment's score file rewritten, a file
    added) is put back as committed, or as the runner wrote it when not committed yet (a
    forged table must never be read, let alone swept into the next commit) and reported."""
    for rel in gitops.dirty(lab.root, "experiments"):
        path, ours = lab.root / rel, written.content(lab.root / rel)
        if ours is not None and path.is_file() and path.read_bytes() == ours:
            continue  # the runner's own write, not committed yet (events recorded after a commit)
        kept = lab.runtime / "refused" / "records" / rel
        if path.is_file():
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, kept)
        if ours is not None:
            atomic_write(path, ours)
        else:
            gitops.restore_committed(lab.root, rel)
        how = "as the runner wrote it" if ours is not None else "as committed"
        events.record_event(lab, "error", "refused", f"{rel} changed outside the runner: restored {how}; "
                            f"the changed file is kept in {lab.rel(kept)}", path=rel)
        log.add(lab, rel)
