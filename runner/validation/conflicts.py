"""An unmerged tree: paths git still holds unmerged (`git ls-files -u`), conflict markers left in
YAML and Markdown files, a table file a merge left as text; each is
`path: unresolved merge conflict`. git is run as a subprocess (pre-commit runs validation)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ..errors import Problem

MESSAGE = "unresolved merge conflict"
_OPEN = re.compile(rb"^<{7}(?: |\r?$)", re.M)
_CLOSE = re.compile(rb"^>{7}(?: |\r?$)", re.M)


def marker_line(data: bytes | str) -> int | None:
    """The line of the first conflict marker (`<<<<<<<` followed later by `>>>>>>>`), or None."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    if b"<<<<<<<" not in raw:
        return None
    opened = _OPEN.search(raw)
    if not opened or not _CLOSE.search(raw, opened.end()):
        return None
    return raw.count(b"\n", 0, opened.start()) + 1


def marker_problem(rel: str, data: bytes | str) -> Problem | None:
    line = marker_line(data)
    return Problem(rel, f"{MESSAGE} (conflict markers from line {line})", line=line) if line else None


def _git(root: Path, *args: str) -> list[str]:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [p for p in done.stdout.decode("utf-8", "surrogateescape").split("\0") if p] if done.returncode == 0 else []


def unmerged(root: Path) -> set[str]:
    """Paths git holds in an unmerged state (a merge stopped on them and they were not added)."""
    if not (root / ".git").exists():
        return set()
    return {line.split("\t", 1)[1] for line in _git(root, "ls-files", "-u", "-z") if "\t" in line}


def check(root: Path, chosen, state_files: set[str]) -> list[Problem]:
    """Unmerged paths, and markers in the tracked YAML and Markdown files that validation does not
    parse as state files (those report their markers themselves); `chosen(rel)` limits the paths."""
    problems = [Problem(rel, f"{MESSAGE} (git holds it unmerged: resolve it, then `git add` it)")
                for rel in sorted(unmerged(root)) if chosen(rel)]
    held = {p.path for p in problems}
    if (root / ".git").exists():
        for rel in _git(root, "ls-files", "-z", "--", "*.md", "*.yaml", "*.yml"):
            if rel in held or rel in state_files or rel.startswith(".lab/") or not chosen(rel):
                continue
            try:
                found = marker_problem(rel, (root / rel).read_bytes())
            except OSError:
                continue
            if found:
                problems.append(found)
    return problems
