"""Claims on queue entries for outside workers: exactly one of several claimants wins.

`claim` creates .lab/claims/<exp_id> with O_EXCL, so the file system decides
between concurrent processes; the claim names its holder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..state.timeutil import iso


def claim(lab, exp_id: str, worker_name: str) -> bool:
    """Claim an entry for one worker; True for exactly one of concurrent callers."""
    path = Path(lab.runtime) / "claims" / exp_id
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"worker": worker_name, "pid": os.getpid(), "at": iso()}) + "\n")
    return True


def claim_holder(lab, exp_id: str) -> str | None:
    try:
        return json.loads((Path(lab.runtime) / "claims" / exp_id).read_text())["worker"]
    except (OSError, ValueError, KeyError):
        return None


def release_claim(lab, exp_id: str) -> None:
    """Give an entry back (its worker handed it in or gave up); a no-op without a claim (a
    worker the runner started holds none, and may sit in a sandbox where .lab is read-only)."""
    path = Path(lab.runtime) / "claims" / exp_id
    if path.exists():
        path.unlink()
