"""What an agent left in its case's lab that the checks after it must not trust.

The checks run git, read files and write caches in the lab, unconfined. So before them:
links leading out of the lab and special files (fifos, sockets, devices) are removed, and
the git settings the agent could change (config, hooks, info, alternates, worktree links,
the lab's ledger of its own commits) are put back as set up: a hook, an fsmonitor or a
filter it configured would otherwise run outside any sandbox, and a `.git` link moved to
another repository would send the checks there.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .workspace import Workspace

GIT_SETTINGS = (".git/config", ".git/hooks", ".git/info", ".git/objects/info/alternates", ".lab/commits")
WORKTREE_LINKS = ("gitdir", "commondir", "config.worktree")


def git_settings(ws: Workspace) -> dict[str, bytes]:
    tops = [ws.root / rel for rel in GIT_SETTINGS]
    for admin in sorted((ws.root / ".git" / "worktrees").glob("*")):
        tops += [admin / name for name in WORKTREE_LINKS]
    if ws.cwd != ws.root:
        tops.append(ws.cwd / ".git")
    found = {}
    for top in tops:
        files = [top]
        if top.is_dir() and not top.is_symlink():
            for folder, dirs, names in os.walk(top):
                files += [Path(folder) / n for n in names] + [Path(folder) / d for d in dirs
                                                              if (Path(folder) / d).is_symlink()]
        for path in files:
            if not _inside(path, ws.root):
                continue
            if path.is_symlink():
                found[str(path)] = b"symlink:" + os.readlink(path).encode()
            elif path.is_file():
                found[str(path)] = path.read_bytes()
    return found


def restore_git_settings(ws: Workspace) -> None:
    """Put the git settings back as set up: what the agent added there goes, links become files.
    Nothing is written through a link that leads out of the lab (the checks then fail there)."""
    if (ws.root / ".git").is_symlink():
        (ws.root / ".git").unlink()
        return
    now = git_settings(ws)
    for path in now.keys() - ws.git_state.keys():
        Path(path).unlink()
    for path, data in ws.git_state.items():
        target = Path(path)
        if now.get(path) == data or not _inside(target, ws.root):
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def cut_strays(ws: Workspace) -> list[str]:
    """Remove what the agent left that the checks must not follow or open: links leading out of
    its lab (the checks write there, unconfined) and fifos, sockets or devices (reading one can
    block for ever). Returns them as `path -> target` or `path (fifo)`."""
    cut = []
    for folder, dirs, names in os.walk(ws.root):
        for name in dirs + names:
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                if _inside(Path(os.path.realpath(path)) / "x", ws.root):
                    continue
                cut.append(f"{ws.rel(path)} -> {os.readlink(path)}")
            elif stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                continue
            else:
                cut.append(f"{ws.rel(path)} ({'fifo' if stat.S_ISFIFO(mode) else 'special file'})")
            path.unlink()
    return sorted(cut)


def _inside(path: Path, root: Path) -> bool:
    """The path's folder, links resolved, is in the lab (the path itself may be a link)."""
    folder = Path(os.path.realpath(path.parent))
    return folder == root or root in folder.parents
