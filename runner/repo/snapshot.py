"""Snapshots of a checkout: HEAD plus the content of every path that differs from it,
written to git's object store so that any earlier content can be restored.

The agents' after-exit check compares a snapshot taken before an agent started
with one taken when it ended; `restore` puts a path back as it was.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..files.yamlio import atomic_write
from .gitops import git_bytes


@dataclass
class Snapshot:
    """HEAD plus an explicit content digest (git blob id, None if absent) of every
    path that differs from HEAD; any other path is as in HEAD."""
    head: str
    digests: dict[str, str | None]

    def digest(self, path: str, blobs: dict) -> str | None:
        if path in self.digests:
            return self.digests[path]
        return blobs.get((self.head, path))


def snapshot(root: Path) -> Snapshot:
    """The checkout as it is now."""
    head = git_bytes(root, "rev-parse", "HEAD").decode().strip()
    out = git_bytes(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    paths = [item[3:].decode("utf-8", "surrogateescape") for item in out.split(b"\0") if len(item) > 3]
    return Snapshot(head, hash_files(root, paths))


def hash_files(root: Path, paths: list[str]) -> dict[str, str | None]:
    """Blob ids of these files, written to the object store (so they can be restored)."""
    present = [p for p in paths if (root / p).is_file() and not (root / p).is_symlink()]
    digests: dict[str, str | None] = {p: None for p in paths}
    if present:
        out = git_bytes(root, "hash-object", "-w", "--stdin-paths",
                   stdin="\n".join(present).encode() + b"\n")
        digests.update(zip(present, out.decode().split()))
    for p in paths:
        if (root / p).is_symlink():
            digests[p] = "link:" + hashlib.sha1(os.readlink(root / p).encode()).hexdigest()
    return digests


def blobs_at(root: Path, head: str, paths: list[str]) -> dict:
    """{(head, path): blob id} for the paths that exist in commit `head`."""
    found = {}
    for start in range(0, len(paths), 500):
        out = git_bytes(root, "ls-tree", "-z", head, "--", *paths[start:start + 500])
        for item in out.split(b"\0"):
            if item:
                meta, _, name = item.decode("utf-8", "surrogateescape").partition("\t")
                found[(head, name)] = meta.split()[2]
    return found



def restore(root: Path, path: str, digest: str | None) -> None:
    """Put back the content `digest` (None: remove the file) and unstage the path."""
    target = root / path
    listed = git_bytes(root, "ls-tree", "HEAD", "--", path).decode()
    tracked = bool(listed.strip())
    if digest is None or digest.startswith("link:"):
        if target.is_file() or target.is_symlink():
            target.unlink()
    else:
        atomic_write(target, git_bytes(root, "cat-file", "blob", digest))
        os.chmod(target, 0o755 if listed.startswith("100755") else 0o644)
    if tracked:
        git_bytes(root, "restore", "--staged", "--", path, check=False)
    else:
        git_bytes(root, "rm", "-q", "--cached", "--ignore-unmatch", "--", path, check=False)
