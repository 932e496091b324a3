"""Deterministic crash points for crash-safety tests: `LAB_CRASH_AT=name` (or `name:N`,
the Nth time that point is reached) makes the process SIGKILL itself there."""
from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die by SIGKILL here if LAB_CRASH_AT names this point (and this is the Nth hit)."""
    wanted = os.environ.get("LAB_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        die()


def die() -> None:
    """kill -9 of this process: no handler, no cleanup (in-process tests replace it)."""
    os.kill(os.getpid(), signal.SIGKILL)
