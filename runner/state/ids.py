"""Collision-free ids with no central counter.

An id is `<prefix>-<UTC yyyymmdd-hhmmss>-<8 random base32 chars>`: sortable by
creation time and 40 random bits, so two machines creating ids in the same
second collide with probability ~1e-12 and merging their PRs never clashes.
Existing files are still checked, so a local clash is impossible.
"""
from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
MAX_ID_LENGTH = 100


def is_safe_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and bool(SAFE_ID.fullmatch(value))


def new_id(prefix: str, taken=lambda candidate: False) -> str:
    while True:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        suffix = "".join(secrets.choice(_ALPHABET) for _ in range(8))
        candidate = f"{prefix}-{stamp}-{suffix}"
        if not taken(candidate):
            return candidate


def new_file_id(prefix: str, *directories: Path) -> str:
    """An id whose `<id>.yaml` / `<id>/` exists in none of the directories."""
    def taken(candidate: str) -> bool:
        return any((d / f"{candidate}.yaml").exists() or (d / candidate).exists() for d in directories)
    return new_id(prefix, taken)
