"""What this process wrote through the atomic writers, kept until it is committed.

A commit takes exactly these bytes, whatever the file on disk says by then: a
table an agent overwrote between the runner's write and its commit is committed
as the runner wrote it, and `settle` puts the file back and names it.
"""
from __future__ import annotations

import os
from pathlib import Path

_CONTENT: dict[str, bytes] = {}


def _key(path) -> str:
    return os.path.realpath(path)


def remember(path, data: bytes) -> None:
    _CONTENT[_key(path)] = data


def content(path) -> bytes | None:
    """What this process last wrote at `path`, if it has not been settled yet."""
    return _CONTENT.get(_key(path))


def settle(paths) -> list[Path]:
    """After a commit of `paths`: forget what was written there, putting back (and returning)
    every file still on disk whose content is no longer what this process wrote."""
    from .yamlio import atomic_write
    changed = []
    for path in map(Path, paths):
        data = _CONTENT.pop(_key(path), None)
        if data is None or not path.is_file():
            continue  # a file removed since (a queue entry that became a record) is not a forgery
        if path.read_bytes() != data:
            atomic_write(path, data)
            _CONTENT.pop(_key(path), None)
            changed.append(path)
    return changed
