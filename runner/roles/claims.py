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
    """Give an entry back (its worker gave up, or it left the queue)."""
    (Path(lab.runtime) / "claims" / exp_id).unlink(missing_ok=True)
