"""`lab run`: one runner per lab (a lock), recovery first, then reconcile passes
woken by file events or a periodic tick, until told to stop.

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
from ..state.entries import quick_status
from .reconcile import Runner
from .watch import Watcher

TICK_S = 1.0  # periodic reconcile, so nothing depends on a file event arriving


def runner_lock(lab: Lab) -> FileLock:
    return FileLock(lab.locks / "runner.lock", timeout=0.5)


def run(lab: Lab, *, once: bool = False, until_idle: bool = False, max_experiments: int | None = None,
        on_event=None, stop: threading.Event | None = None, tick: float = TICK_S, plan: bool = True,
        deadline: float | None = None) -> Runner:
    """The loop. `deadline` (time.monotonic()): no experiment is dispatched that would not
    end by then; the running ones are recorded. `plan=False` runs only what is queued."""
    stop = stop or threading.Event()
    lock = runner_lock(lab)
    if not lock.acquire(blocking=False):
        raise LabError("another runner holds this lab (.lab/locks/runner.lock)", lab.rel(lab.locks / "runner.lock"))
    try:
        runner = Runner(lab, on_event=on_event, max_experiments=max_experiments, plan=plan)
        runner.recover()
        with Watcher(lab) as watcher:
            while not stop.is_set():
                if deadline is not None and time.monotonic() + runner.expected_run_s() > deadline:
                    runner.limit.stop_dispatching()  # a new run would not end in time
                moved = runner.reconcile()
                if once or (until_idle and not moved and _idle(lab)):
                    break
                if runner.limit.reached() and _idle(lab):
                    break
                if not moved:
                    watcher.wait(tick)
        runner.reporter.close()
        if runner.agents and stop.is_set():
            for outcome in runner.agents.stop_all():
                gitops.commit_paths(lab.root, [*outcome.to_commit, lab.rel(lab.agent_runs_path)],
                                    f"lab: {outcome.role} agent stopped at shutdown")
        return runner
    finally:
        lock.release()


def _idle(lab: Lab) -> bool:
    """Nothing active in the queue (queued entries beyond --max-experiments don't count as work)."""
    return not any(quick_status(path) in machine.ACTIVE for path in lab.queue.glob("*.yaml"))
