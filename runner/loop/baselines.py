"""Baselines the dispatcher needs: a base every waiting experiment is judged against gets
a score or a baseline in flight; a finished run whose base is still being measured waits."""
from __future__ import annotations

from ..errors import LabError
from ..lab import Lab
from ..state import machine
from ..state.create import new_experiment
from ..state.entries import Entry
from ..state.entries import load as load_entry
from ..state.events import record_once
from .passlog import PassLog
from .scoring import failed_baseline, score_of, target_key


def missing(lab: Lab, queued: list[Entry], entries: list[Entry], table, log: PassLog) -> list[Entry]:
    """A baseline for every base that experiments wait on and nobody measures yet, so that an
    experiment is judged against a number, never recorded "no score for the base". A base whose
    own baseline failed gets no more (one event; its experiments wait until main changes)."""
    made = []
    for base in dict.fromkeys(e.base for e in queued if not e.is_baseline):
        key = target_key(lab, base)
        if score_of(lab, base, table) is not None or any(
                e.is_baseline and target_key(lab, e.base) == key for e in entries + made):
            continue
        failed = failed_baseline(lab, base, table)
        if failed:
            record_once(lab, "base-fails", f"the target at {base[:12]} fails: see "
                        f"experiments/{failed}/log.txt; experiments on it wait until main changes",
                        experiment=failed)
            continue
        _, path = new_experiment(lab, None, {}, base, priority=100, kind="baseline", by="runner")
        made.append(load_entry(lab, path))
        log.add(lab, path, line=f"runner: base {base[:12]} has no score yet: queued a baseline")
    entries += made
    return made

def measured(lab: Lab, base: str, table, entries: list[Entry]) -> bool:
    """A base with a score, or whose baseline is in flight (dispatched ahead, priority 100)."""
    if score_of(lab, base, table) is not None:
        return True
    key = target_key(lab, base)
    return any(e.is_baseline and e.status in machine.ACTIVE and target_key(lab, e.base) == key
               for e in entries)

def awaiting(lab: Lab, entry: Entry) -> bool:
    """A finished run whose base's baseline is still in flight waits to be judged."""
    if entry.is_baseline or score_of(lab, entry.base) is not None:
        return False
    key = target_key(lab, entry.base)
    for path in lab.queue.glob("*.yaml"):
        try:
            other = load_entry(lab, path)
        except LabError:
            continue
        if other.is_baseline and other.status in machine.ACTIVE and target_key(lab, other.base) == key:
            return True
    return False
