"""`lab run`: one runner per lab (a lock), recovery first, then reconcile passes
woken by file events or a periodic tick, until told to stop. With a shared remote,
a sync round after the passes that claimed or promoted, and every `sync_every`
seconds; the compaction owner folds small table files after its passes.

SIGINT/SIGTERM set `stop`: the current pass finishes and running jobs stay
recoverable by the next runner.
"""
from __future__ import annotations

import threading
import time

from ..errors import LabError
from ..files.locks import FileLock
from ..lab import Lab
from ..repo import gitops
from ..state import machine
from ..state.accounting import uncommitted_agent_runs
from ..state.entries import quick_status
from ..state.compact import compact as compact_tables
from ..state.compact import migrate
from .reconcile import Runner
from .watch import Watcher

TICK_S = 1.0  # periodic reconcile, so nothing depends on a file event arriving


def runner_lock(lab: Lab) -> FileLock:
    return FileLock(lab.locks / "runner.lock", timeout=0.5)


def run(lab: Lab, *, once: bool = False, until_idle: bool = False, max_experiments: int | None = None,
        on_event=None, stop: threading.Event | None = None, tick: float = TICK_S, plan: bool = True,
        deadline: float | None = None, remote: str | None = None, sync_every: float = 60.0,
        compact: bool | None = None) -> Runner:
    """The loop. `deadline` (time.monotonic()): no experiment is dispatched that would not
    end by then; the running ones are recorded. `plan=False` runs only what is queued.
    `remote`: sync with it (loop/sync.py). `compact`: this runner compacts the tables (by
    default a runner that shares no remote, the lab's only one, does)."""
    stop = stop or threading.Event()
    lock = runner_lock(lab)
    if not lock.acquire(blocking=False):
        raise LabError("another runner holds this lab (.lab/locks/runner.lock)", lab.rel(lab.locks / "runner.lock"))
    try:
        runner = Runner(lab, on_event=on_event, max_experiments=max_experiments, plan=plan, remote=remote,
                        sync_every=sync_every)
        runner.recover()
        runner.store(migrate(lab), "move the single-file tables of an earlier version into experiments/")
        runner.sync()
        owner = remote is None if compact is None else compact
        with Watcher(lab) as watcher:
            while not stop.is_set():
                if deadline is not None and time.monotonic() + runner.expected_run_s() > deadline:
                    runner.limit.stop_dispatching()  # a new run would not end in time
                moved = runner.reconcile()
                moved |= runner.sync()
                if owner:
                    runner.store(compact_tables(lab), "compact the tables' small files")
                waiting = runner.sharing is not None and runner.sharing.busy()
                idle = not waiting and _idle(lab)
                if once or (idle and ((until_idle and not moved) or runner.limit.reached())):
                    if runner.sync(now=True) and not once:
                        continue  # the last round brought the other runners' work: look again
                    break
                if not moved:
                    watcher.wait(tick)
        if stop.is_set():
            runner.sync(now=True)  # what this runner recorded reaches the remote
        runner.reporter.close()
        if runner.agents and stop.is_set():
            for outcome in runner.agents.stop_all():
                runs = [lab.rel(p) for p in uncommitted_agent_runs(lab)]
                gitops.commit_paths(lab.root, [*outcome.to_commit, *runs],
                                    f"lab: {outcome.role} agent stopped at shutdown")
        return runner
    finally:
        lock.release()


def _idle(lab: Lab) -> bool:
    """Nothing active in the queue (queued entries beyond --max-experiments don't count as work)."""
    return not any(quick_status(path) in machine.ACTIVE for path in lab.queue.glob("*.yaml"))
