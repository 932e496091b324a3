"""What one reconcile pass changed, and the one commit that records it.

Every pass that moves state ends in one commit with a structured message: a
subject naming the first transition (or the pass's own subject, e.g. a
promotion), and a body with one line per transition.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..files import written
from ..lab import Lab
from ..repo import gitops
from ..state.events import record_event


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
    """Commits passes; events and accounting rows recorded since the last commit (by anyone) ride along.
    `on_commit(commit, paths)` hears of each commit (the agents' supervisor, so that the
    runner's own changes are never taken for an agent's)."""

    def __init__(self, lab: Lab, on_commit: Callable[[str, list[str]], None] | None = None):
        self.lab = lab
        self._mtimes = {path: _mtime(path) for path in _ride_along(lab)}
        self.commits = 0
        self.on_commit = on_commit

    def commit(self, log: PassLog) -> str | None:
        for path, seen in self._mtimes.items():
            if _mtime(path) != seen:
                self._mtimes[path] = _mtime(path)
                log.add(self.lab, path, line="" if log.lines else f"runner: {path.stem.replace('_', ' ')}")
        if not log.paths:
            return None
        paths = list(dict.fromkeys(log.paths))
        commit = gitops.commit_paths(self.lab.root, paths, log.message())
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
            record_event(self.lab, "error", "refused", f"{self.lab.rel(path)} changed after the runner wrote it: "
                         "the runner's content was committed and put back", path=self.lab.rel(path))


def _ride_along(lab: Lab) -> tuple[Path, ...]:
    """Tables appended to between passes (events, an agent's accounting row) that each commit takes."""
    return lab.events_path, lab.jobs_table, lab.agent_runs_path


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
