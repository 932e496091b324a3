"""An outside worker's side of the contract (roles.worker: off): take the oldest assigned
entry, hand it back ready (its change passing the gates) or give it up with a reason.

A claim (.lab/claims/<id>) decides between several outside workers; the transitions are
the worker's in the state machine and are checked here before anything is written.
"""
from __future__ import annotations

import getpass
import os
import socket

from ..errors import LabError
from ..lab import Lab
from ..repo import worktrees
from ..state import machine
from ..state.entries import Entry, load, transition
from ..state.ids import is_safe_id
from .claims import claim, claim_holder, release_claim
from .gates import check_diff


def worker_name() -> str:
    """Who takes work: $LAB_AGENT_ID, else user@host."""
    return os.environ.get("LAB_AGENT_ID") or f"{getpass.getuser()}@{socket.gethostname()}"


def next_entry(lab: Lab, worker: str) -> Entry | None:
    """Claim and return the oldest assigned entry nobody else holds; None when there is none."""
    entries = []
    for path in lab.queue.glob("*.yaml"):
        try:
            entry = load(lab, path)
        except LabError:
            continue
        if entry.status == machine.ASSIGNED and not entry.is_baseline:
            entries.append(entry)
    for entry in sorted(entries, key=lambda e: (e.created, e.id)):
        if claim_holder(lab, entry.id) == worker or claim(lab, entry.id, worker):
            return entry
    return None


def environment(lab: Lab, entry: Entry) -> dict[str, str]:
    """What the runner gives a worker it starts, for an outside worker to export."""
    return {"LAB_ROOT": str(lab.root), "LAB_ROLE": "worker", "LAB_TASK": entry.id, "LAB_ENTRY": str(entry.path),
            "LAB_WORKTREE": str(worktrees.path(lab, entry.id)), "LAB_CACHE": str(lab.runtime / "cache")}


def assigned(lab: Lab, exp_id: str) -> Entry:
    """The entry, refused unless it is still assigned (the runner may have moved it on)."""
    if not is_safe_id(exp_id):
        raise LabError(f"{exp_id!r} is not an experiment id", field="id")
    path = lab.queue / f"{exp_id}.yaml"
    if not path.is_file():
        raise LabError(f"{exp_id} is no longer in the queue (finished, cancelled or stale): leave it",
                       lab.rel(path), "id")
    entry = load(lab, path)
    if entry.status != machine.ASSIGNED:
        raise LabError(f"{exp_id} is {entry.status}, not assigned: leave it", lab.rel(path), "status")
    return entry


def done(lab: Lab, exp_id: str) -> Entry:
    """Check the worktree's change with the runner's gates, commit it, set `ready`."""
    entry = assigned(lab, exp_id)
    wt = worktrees.path(lab, exp_id)
    if not wt.is_dir():
        raise LabError(f"no worktree for {exp_id} at {lab.rel(wt)}", lab.rel(entry.path), "id")
    files, diff = worktrees.changes_in_worktree(wt, entry.base)
    rejection = check_diff(lab, files, diff, entry.change)
    if rejection:
        raise LabError(f"the change would be refused ({rejection.rule}): {rejection.message}",
                       lab.rel(entry.path), "change")
    worktrees.commit_leftovers(wt, exp_id, worker_name())
    transition(entry, machine.READY, "worker", note=f"by {worker_name()}")
    release_claim(lab, exp_id)
    return entry


def give_up(lab: Lab, exp_id: str, reason: str) -> Entry:
    """Hand the entry back, cancelled with the reason (another worker may try the idea again)."""
    entry = assigned(lab, exp_id)
    transition(entry, machine.CANCELLED, "worker", note=f"given up by {worker_name()}: {reason}")
    release_claim(lab, exp_id)
    return entry
