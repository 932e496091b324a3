"""Baselines the dispatcher needs: a base every waiting experiment is judged against gets a score
in that experiment's environment class, or a baseline in flight there (run where the experiment
runs); a finished run whose base is still being measured in its class waits."""
from __future__ import annotations

from ..errors import LabError
from ..lab import Lab
from ..state import machine
from ..state.create import new_experiment
from ..state.entries import Entry
from ..state.entries import load as load_entry
from ..state.events import record_once
from .jobs import backend_of, environment_of, flavor_of
from .passlog import PassLog
from .scoring import failed_baseline, score_of, target_key


def missing(lab: Lab, queued: list[Entry], entries: list[Entry], table, log: PassLog) -> list[Entry]:
    """A baseline for every (base, class) that experiments wait on and nobody measures yet, so that
    an experiment is judged against a number, never recorded "no score for the base". A base whose
    own baseline failed there gets no more (one event; its experiments wait until main changes)."""
    made = []
    waiting = {(e.base, environment_of(lab, e)["class"]): e for e in queued if not e.runs_base}
    for (base, env_class), example in waiting.items():
        if score_of(lab, base, env_class, table) is not None or _in_flight(lab, base, env_class, entries + made):
            continue
        failed = failed_baseline(lab, base, table, env_class)
        if failed:
            record_once(lab, "base-fails", f"the target at {base[:12]} fails in {env_class}: see "
                        f"experiments/{failed}/log.txt; experiments on it wait until main changes",
                        experiment=failed)
            continue
        _, path = new_experiment(lab, None, {}, base, priority=100, kind="baseline", by="runner",
                                 backend=backend_of(lab, example), flavor=flavor_of(lab, example) or None)
        made.append(load_entry(lab, path))
        log.add(lab, path, line=f"runner: base {base[:12]} has no score in {env_class} yet: queued a baseline")
    entries += made
    return made


def _in_flight(lab: Lab, base: str, env_class: str, entries: list[Entry], active_only: bool = False) -> bool:
    key = target_key(lab, base)
    return any(e.is_baseline and (not active_only or e.status in machine.ACTIVE) and target_key(lab, e.base) == key
               and environment_of(lab, e)["class"] == env_class for e in entries)


def measured(lab: Lab, entry: Entry, table, entries: list[Entry]) -> bool:
    """The entry's base has a score in its class, or a baseline there is in flight (dispatched
    ahead, priority 100)."""
    env_class = environment_of(lab, entry)["class"]
    return score_of(lab, entry.base, env_class, table) is not None or \
        _in_flight(lab, entry.base, env_class, entries, active_only=True)


def awaiting(lab: Lab, entry: Entry) -> bool:
    """A finished run whose base's baseline in its class is still in flight waits to be judged."""
    if entry.runs_base or score_of(lab, entry.base, entry.env_class) is not None:
        return False
    others = []
    for path in lab.queue.glob("*.yaml"):
        try:
            others.append(load_entry(lab, path))
        except LabError:
            continue
    return _in_flight(lab, entry.base, entry.env_class, others, active_only=True)
