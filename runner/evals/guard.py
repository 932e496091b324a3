"""Nothing outside a case's lab may change while its agent runs: what is watched, and what changed.

Watched: the skills directory the cases come from (evals and results included); lab.yaml,
schemas/, .git/config and .git/hooks of the lab `lab skills eval` runs in; where agents read
a user's skills (~/.claude/skills, ~/.agents/skills, ~/.codex/skills,
~/.config/opencode/skills); the home's startup files (.bashrc, .gitconfig, .ssh/ ...); and
the case's temporary directory around its lab. A file counts as changed when it appears,
disappears, or its size or modification time differs. The sandbox makes all of these
read-only or hides them; this check also covers an agent run unconfined, whose run is then
recorded as `refused`.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..roles.sandbox import HOME_PINNED
from .launch import home_skill_dirs
from .workspace import Workspace

SKIPPED_HOME = (".local/lib", ".cache/pre-commit")   # large trees; pinned read-only in the sandbox


def watched(source: Path, user_lab: Path | None, ws: Workspace) -> list[Path]:
    home = Path(os.environ.get("HOME") or Path.home())
    paths = [source, ws.tmp] + home_skill_dirs()
    paths += [home / name for name in HOME_PINNED if name not in SKIPPED_HOME]
    if user_lab is not None:
        paths += [user_lab / "lab.yaml", user_lab / "schemas", user_lab / ".git" / "config",
                  user_lab / ".git" / "hooks"]
    return list(dict.fromkeys(Path(os.path.abspath(p)) for p in paths))


def snapshot(paths: list[Path], skip: tuple[Path, ...]) -> dict[str, tuple]:
    """{path: (size, mtime_ns)} of every file under `paths`, leaving out `skip` (the case's lab, its log)."""
    out: dict[str, tuple] = {}
    for top in paths:
        if top.is_file() or top.is_symlink():
            out[str(top)] = _stat(top)
            continue
        for folder, dirs, files in os.walk(top):
            here = Path(folder)
            dirs[:] = [d for d in dirs if here / d not in skip]
            out[str(here)] = ("dir",)
            for name in files:
                if here / name not in skip:
                    out[str(here / name)] = _stat(here / name)
    return out


def changed(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def _stat(path: Path) -> tuple:
    try:
        st = path.lstat()
    except OSError:
        return ("gone",)
    return (st.st_size, st.st_mtime_ns)
