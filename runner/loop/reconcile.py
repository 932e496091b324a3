"""The reconcile pass: validate, dispatch, launch, poll; finishing is finish.py's.

`reconcile()` reads every queue entry and moves each one step along the state
machine (state/machine.py); it is idempotent, so the same pass after a kill -9
finishes whatever the killed one left half-done (recovery.py cleans up first).
File events and a periodic tick (run.py) only decide *when* a pass runs.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backends import Backend, JobStartError, Unreachable, default_backend, make_backends
from ..errors import LabError
from ..faults import crash_point
from ..files.yamlio import write_yaml
from ..lab import Lab
from ..repo import gitops, worktrees
from ..roles import builtin, gates
from ..roles.agents import AgentOutcome, AgentRunner
from ..roles.planning import Planning
from ..roles.reporter import Reporter
from ..state import machine
from ..state.accounting import job_timing, record_job
from ..state.entries import Entry, restore_status, transition
from ..state.entries import load as load_entry
from ..state.events import record_event
from ..state.scores import scores
from ..validation.validate import validate
from . import baselines, recovery, smoke
from .finish import Finisher, outcome_of
from .jobs import backend_of, environment_of, job_spec
from .passlog import Committer, PassLog, guard_records
from .record import Outcome
from .scoring import base_commit, target_key
from .stopping import Stopping
from .sync import Sharing, runner_id

FRESH_S = 1.0        # a file younger than this may be half-written by an agent: retry, don't report
UNREACHABLE_EVENT_S = 60.0   # one `backend-unreachable` event per experiment per this long


@dataclass
class DispatchLimit:
    """At most `most` experiments dispatched by this runner (None: no limit)."""
    most: int | None = None
    dispatched: int = 0

    def reached(self) -> bool:
        return self.most is not None and self.dispatched >= self.most

    def stop_dispatching(self) -> None:
        if not self.reached():
            self.most = self.dispatched


class Runner:
    def __init__(self, lab: Lab, on_event: Callable[[str, dict], None] | None = None,
                 max_experiments: int | None = None, plan: bool = True, remote: str | None = None,
                 sync_every: float = 60.0):
        self.lab = lab
        self.backends = make_backends(lab.config)
        self.default_backend = default_backend(lab.config)
        self.on_event = on_event or (lambda kind, info: None)
        self.limit = DispatchLimit(max_experiments)
        self.agents = AgentRunner(lab) if any(r["kind"] == "agent" for r in lab.config["roles"].values()) else None
        self.reporter = Reporter(lab)
        self.committer = Committer(lab, on_commit=self.agents.runner_committed if self.agents else None)
        self.finisher = Finisher(lab, self.backends, self.reporter, self.committer, self.on_event)
        self.planning = Planning(lab, self.agents) if plan else None
        self.me = runner_id(lab)
        self.sharing = Sharing(lab, self.committer, remote, sync_every) if remote else None
        self.stopping = Stopping(lab)
        self._reported: dict[str, float] = {}
        self._workers_started: set[str] = set()
        self._main: str | None = None
        self._unreachable_at: dict[str, float] = {}

    @property
    def recorded(self) -> int: return self.finisher.recorded
    @property
    def dispatched(self) -> int: return self.limit.dispatched

    def expected_run_s(self) -> float:
        """A new run's likely duration: the slowest of the last few (they grow as main grows)."""
        return max(self.finisher.durations[-4:], default=0.0) * 1.1

    def recover(self) -> None:
        recovery.recover(self)
        if self.sharing:
            self.sharing.adopt()

    def _mine(self, entry: Entry) -> bool:
        """With a shared remote, another runner's entries are its own to work on."""
        return self.sharing is None or self.sharing.mine(entry)

    def store(self, paths: list[str], why: str) -> None:
        """Commit what a table's storage changed (a compaction, a migration)."""
        if paths:
            self.committer.commit(PassLog(list(paths), subject=f"lab: {why} ({len(paths)} files)"))

    def sync(self, now: bool = False) -> bool:
        """One round with the shared remote when one is due; True if the merge moved the checkout."""
        if not self.sharing or not (now or self.sharing.due(self.finisher.promoted)):
            return False
        return self.sharing.round(self.finisher.promoted, on_lost=lambda exp_id: worktrees.remove(self.lab, exp_id))

    # -- one pass -------------------------------------------------------------
    def reconcile(self) -> bool:
        """One pass over all state. Returns True if anything moved."""
        log, commits = PassLog(), self.committer.commits
        self._main = None   # main's base commit, read once per pass when needed
        guard_records(self.lab, log)
        entries = self._scan(log)
        for entry in entries:
            self._step(entry, log)
        if self.stopping.check(log) is None:   # a budget or stopping rule reached: running work only
            self._dispatch([e for e in entries if e.path.exists()], log)
            if not log.paths and self.planning and not self.limit.reached():
                self.planning.plan(log)
        self.reporter.tick()
        self.committer.commit(log)
        moved = self.committer.commits > commits
        if self.agents:
            moved |= self._collect_agents()
        return moved

    def _scan(self, log: PassLog) -> list[Entry]:
        entries = []
        for path in sorted(self.lab.queue.glob("*.yaml")):
            try:
                entry = load_entry(self.lab, path)
            except LabError as exc:
                self._report_invalid(path, exc)
                continue
            if (self.lab.experiments / entry.id / "experiment.yaml").exists():
                path.unlink()  # recorded before a crash: the terminal record wins
                log.add(self.lab, path, line=f"{entry.id}: finish recording after restart")
                continue
            if not entry.outside_change_allowed:
                self._refuse_transition(entry, log)
            entries.append(entry)
        if self.agents is None or self.agents.idle():
            self._adopt_outside_files(log)  # an agent's writes are verified when it exits, not adopted early
        return entries

    def _report_invalid(self, path: Path, exc: LabError) -> None:
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return
        if time.time() - mtime < FRESH_S or self._reported.get(str(path)) == mtime:
            return
        self._reported[str(path)] = mtime
        record_event(self.lab, "error", "invalid-file", str(exc), path=self.lab.rel(path))

    def _refuse_transition(self, entry: Entry, log: PassLog) -> None:
        wrong = restore_status(entry)
        record_event(self.lab, "error", "refused-transition",
                     f"{entry.last_status} -> {wrong} is not allowed for this actor; restored {entry.last_status}",
                     experiment=entry.id, path=self.lab.rel(entry.path))
        log.add(self.lab, entry.path, line=f"{entry.id}: refused {entry.last_status} -> {wrong}")

    def _adopt_outside_files(self, log: PassLog) -> None:
        """Commit what humans (or agents the runner did not start) wrote: valid hypotheses and
        queue files, and reports (a reporter's own files)."""
        for rel in gitops.dirty(self.lab.root, "hypotheses", "queue", "reports"):
            if rel in log.paths or not (self.lab.root / rel).is_file():
                continue
            if rel.startswith("reports/") or (rel.endswith(".yaml") and
                                              validate(self.lab.root, [str(self.lab.root / rel)]).ok):
                log.add(self.lab, rel)

    # -- one step of one entry ----------------------------------------------------
    def _step(self, entry: Entry, log: PassLog) -> None:
        if not self._mine(entry) or (self.sharing and entry.id in self.sharing.unconfirmed):
            return  # another runner's, or claimed here but not on the remote yet
        try:
            if entry.status in (machine.ASSIGNED, machine.READY) and self._base_moved(entry):
                self._stale_before_running(entry, log)
            elif entry.status == machine.CANCELLED:
                self.finisher.finish(entry, Outcome(machine.CANCELLED, reason="cancelled"), log)
            elif entry.status == machine.ASSIGNED:
                self._work(entry, log)
            elif entry.status == machine.READY:
                self._launch(entry, log)
            elif entry.status == machine.RUNNING:
                self._poll(entry, log)
        except LabError as exc:
            self.finisher.finish(entry, Outcome(machine.FAILED, reason=str(exc.problem.message)), log)

    def _dispatch(self, entries: list[Entry], log: PassLog) -> None:
        active = [e for e in entries if e.status in machine.ACTIVE and self._mine(e)]
        used = {(e.job.get("backend", "local"), e.slot) for e in active}
        free = {name: [slot for slot in backend.slots if (name, slot) not in used]
                for name, backend in self.backends.items()}
        room = self.lab.config["limits"]["max_running"] - len(active)
        queued = [e for e in entries if e.status == machine.QUEUED]
        if not (queued and any(free.values())):
            return
        main, table = base_commit(self.lab), scores(self.lab)
        for entry in [e for e in queued if not e.runs_base]:
            if target_key(self.lab, entry.base) != target_key(self.lab, main):
                entry.base = main  # not started yet: measure it on today's main
        queued += baselines.missing(self.lab, queued, entries, table, log)
        for entry in sorted(queued, key=_dispatch_order):
            if room <= 0 or self.limit.reached():
                break
            backend = backend_of(self.lab, entry)
            if backend not in free:
                reason = f"backend {backend!r} is not configured in lab.yaml (backends.{backend})"
                self.finisher.finish(entry, Outcome(machine.FAILED, reason=reason), log)
                continue
            if not free[backend] or not entry.runs_base and not baselines.measured(self.lab, entry, table, entries):
                continue
            slot = free[backend].pop(0)
            room -= 1
            transition(entry, machine.ASSIGNED, "runner", branch=worktrees.branch(entry.id),
                       worker=self._worker_kind(), job={"backend": backend, "slot": slot, "runner": self.me},
                       environment=environment_of(self.lab, entry))
            crash_point("dispatch.after-assigned")
            self.limit.dispatched += 1
            log.add(self.lab, entry.path, line=f"{entry.id}: queued -> assigned ({slot})")
            self.on_event("assigned", {"entry": entry})
            if self.sharing:
                self.sharing.claimed(entry)
                continue  # it starts once the claim is on the remote (loop/sync.py)
            worktrees.ensure(self.lab, entry.id, entry.base)
            crash_point("dispatch.after-worktree")
            self._work(entry, log)
            if entry.status == machine.READY:
                self._launch(entry, log)

    def _base_moved(self, entry: Entry) -> bool:
        """Main's target changed since this entry's base: its result could only be stale."""
        if entry.runs_base:
            return False
        if self._main is None:
            self._main = base_commit(self.lab)
        return target_key(self.lab, entry.base) != target_key(self.lab, self._main)

    def _stale_before_running(self, entry: Entry, log: PassLog) -> None:
        """Stop its worker, record it stale and queue the same change on today's main at once,
        rather than spend a slot on a result that could only be stale."""
        if self.agents and self.agents.is_running("worker", entry.id):
            for outcome in self.agents.stop("worker", entry.id):
                log.add(self.lab, *outcome.to_commit)
        self.finisher.stale(entry, self._main, log)

    def _worker_kind(self) -> str:
        return self.lab.config["roles"]["worker"]["kind"]

    def _work(self, entry: Entry, log: PassLog) -> None:
        """The builtin worker edits the worktree synchronously; agent workers act on their own."""
        if entry.runs_base:
            transition(entry, machine.READY, "runner", note=f"{entry.kind}: its base as it is")
        elif self._worker_kind() == "builtin":
            wt = worktrees.ensure(self.lab, entry.id, entry.base)
            builtin.work(self.lab, entry.change, wt)
            worktrees.commit_leftovers(wt, entry.id, "builtin worker")
            transition(entry, machine.READY, "worker")
        else:
            if self._worker_kind() == "agent":
                self._start_worker_agent(entry)
            return  # "off": a person or an outside agent sets `ready`
        log.add(self.lab, entry.path, line=f"{entry.id}: assigned -> ready")

    def _launch(self, entry: Entry, log: PassLog) -> None:
        if self.agents and self.agents.is_running("worker", entry.id):
            return  # it may still be editing its worktree
        wt = worktrees.ensure(self.lab, entry.id, entry.base)
        if not entry.runs_base:
            worktrees.commit_leftovers(wt, entry.id, entry.worker or "worker")
            files, diff = worktrees.changes(self.lab, entry.id, entry.base)
            rejection = gates.check_diff(self.lab, files, diff, entry.change)
            if rejection:
                record_event(self.lab, "warn", "refused", f"{rejection.rule}: {rejection.message}",
                             experiment=entry.id, hypothesis=entry.hypothesis)
                reason = f"refused ({rejection.rule}): {rejection.message}"
                self.finisher.finish(entry, Outcome(machine.FAILED, reason=reason), log)
                return
        backend = self._backend(entry)
        if smoke.needed(self.lab, entry, backend.name):
            outcome, status = smoke.check(self.lab, entry, self.backends["local"])
            if outcome is None:
                return  # the smoke still runs
            if outcome.status != machine.FINISHED:
                self.finisher.finish(entry, outcome, log, status.log_path)
                return
        job = entry.job
        if not job.get("token"):
            # a new attempt and its token reach the entry before the job starts: a restarted runner
            # adopts exactly this attempt's job, and a job record it did not start is never adopted
            job.update(attempts=entry.attempts + 1, token=secrets.token_hex(16))
            entry.data["job"] = job
            write_yaml(entry.path, entry.data)
        try:
            job.update(backend.start(job_spec(self.lab, entry)))
        except Unreachable as exc:
            return self._unreachable(entry, exc, log)  # the next pass adopts or submits this attempt
        except JobStartError as exc:
            return self.finisher.finish(entry, Outcome(machine.FAILED, reason=f"infrastructure: {exc}"), log)
        crash_point("dispatch.after-job-start")
        transition(entry, machine.RUNNING, "runner", job=job)
        log.add(self.lab, entry.path, line=f"{entry.id}: ready -> running ({job.get('slot')})")
        self.on_event("running", {"entry": entry})

    def _poll(self, entry: Entry, log: PassLog) -> None:
        spec = job_spec(self.lab, entry)
        try:
            status = self._backend(entry).poll(spec)
        except Unreachable as exc:
            return self._unreachable(entry, exc, log)
        if status.state == "running":
            return
        self._unreachable_at.pop(entry.id, None)
        if status.state == "lost":
            if entry.attempts <= self.lab.config["limits"]["retries"]:
                record_event(self.lab, "warn", "retry", f"job lost ({status.reason}); retrying", experiment=entry.id)
                entry.data["job"] = {**entry.job, **job_timing(status)}
                if ran := record_job(self.lab, entry, "lost"):   # the lost attempt ran, and may have been billed
                    log.add(self.lab, ran)
                job = {k: v for k, v in entry.job.items() if k not in ("token", "run_started", "finished")}
                transition(entry, machine.READY, "runner", note=f"retry after infrastructure failure: {status.reason}",
                           job=job)
                log.add(self.lab, entry.path, line=f"{entry.id}: running -> ready (retry)")
                return
            outcome = Outcome(machine.FAILED, reason=f"infrastructure: {status.reason}")
        else:
            outcome = outcome_of(self.lab, status)
            if outcome.status == machine.FINISHED and baselines.awaiting(self.lab, entry):
                return
        entry.data["job"] = {**entry.job, **job_timing(status)}
        self.finisher.finish(entry, outcome, log, status.log_path)

    def _backend(self, entry: Entry) -> Backend:
        name = entry.job.get("backend", "local")
        if name not in self.backends:
            raise LabError(f"backend {name!r} is not configured in lab.yaml (backends.{name})", "lab.yaml",
                           field=f"backends.{name}")
        return self.backends[name]

    def _unreachable(self, entry: Entry, exc: Unreachable, log: PassLog) -> None:
        """A backend that did not answer: one event a minute per experiment; the entry stays as it
        is and is tried again on a later pass (other slots go on)."""
        if time.monotonic() - self._unreachable_at.get(entry.id, -UNREACHABLE_EVENT_S) < UNREACHABLE_EVENT_S:
            return
        self._unreachable_at[entry.id] = time.monotonic()
        record_event(self.lab, "warn", "backend-unreachable", f"{exc}; trying again on a later pass",
                     experiment=entry.id, hypothesis=entry.hypothesis)

    # -- agent workers ----------------------------------------------------------------
    def _start_worker_agent(self, entry: Entry) -> None:
        if entry.id in self._workers_started or self.stopping.halted or not self.agents.can_start("worker"):
            return
        wt = worktrees.ensure(self.lab, entry.id, entry.base)
        self.agents.start("worker", entry.id, wt, entry.path)
        self._workers_started.add(entry.id)

    def _collect_agents(self) -> bool:
        """Commit what finished agents were allowed to write; fail a worker's entry if it gave up."""
        outcomes = self.agents.poll()
        for outcome in outcomes:
            log = PassLog()
            # an entry recorded while the agent ran may come back as "restored" (its removal
            # looked like the agent's doing): the terminal record wins
            for rel in [*outcome.to_commit, *(path for path, _ in outcome.refused)]:
                recorded = self.lab.experiments / Path(rel).stem / "experiment.yaml"
                if rel.startswith("queue/") and recorded.exists():
                    (self.lab.root / rel).unlink(missing_ok=True)
            log.add(self.lab, *outcome.to_commit)
            refused = f", refused {len(outcome.refused)}" if outcome.refused else ""
            log.subject = f"lab: {outcome.role} agent {outcome.task_id} {outcome.state}{refused}"
            if outcome.role == "worker":
                self._worker_done(outcome, log)
            self.committer.commit(log)
        return bool(outcomes)

    def _worker_done(self, outcome: AgentOutcome, log: PassLog) -> None:
        path = self.lab.queue / f"{outcome.task_id}.yaml"
        if not path.exists():
            return
        entry = load_entry(self.lab, path)
        if entry.status == machine.ASSIGNED:
            why = outcome.reason or f"exit code {outcome.exit_code}"
            reason = f"worker agent {outcome.state} without setting ready: {why}"
            self.finisher.finish(entry, Outcome(machine.FAILED, reason=reason), log)


def _dispatch_order(entry: Entry) -> tuple:
    """Highest priority first, then oldest; files made in the same second by file time."""
    try:
        written = entry.path.stat().st_mtime_ns
    except FileNotFoundError:
        written = 0
    return -entry.priority, entry.created, written, entry.id
