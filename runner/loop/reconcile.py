"""The thin runner: validate, dispatch, record, promote. One reconcile pass at a time.

`reconcile()` reads every queue entry and moves each one step along the state
machine; it is idempotent, so the same pass after a kill -9 finishes whatever
the killed one left half-done. File events (watchdog) and a periodic tick only
decide *when* a pass runs; nothing depends on an event arriving.
"""
from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..report import anomalies, trackio_mirror, webhook
from ..roles import gates
from ..repo import gitops, worktrees
from ..roles.agents import AgentOutcome, AgentRunner
from ..backends.local import JobSpec, LocalBackend
from ..state.entries import Entry, restore_status, transition
from ..state.entries import load as load_entry
from ..state.events import record_event
from ..lab import Lab
from ..files.locks import FileLock
from ..files.metrics import metrics_rows, objective, parse_summary, read_log, read_stream
from ..errors import LabError
from .promotion import base_commit, merge_into_main, noise_margin, score_of, target_key
from .record import Outcome, record, recorded_ids
from ..report.leaderboard import write_leaderboard
from ..roles import builtin
from ..state.scores import scores
from ..state.create import new_experiment
from ..files.yamlio import load_yaml, write_yaml

# watchdog warns when a recursive watch sees a job dir re-created, and logs an error when an
# event arrives while the observer stops; both are harmless here
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
logging.getLogger("watchdog.observers.inotify").addFilter(
    lambda record: "called when the thread is inactive" not in record.getMessage())

FRESH_S = 1.0        # a file younger than this may be half-written by an agent: retry, don't report
TICK_S = 1.0         # periodic reconcile, so nothing depends on a file event arriving
ANOMALY_SCAN_S = 10.0  # lab-level anomaly scan (stalls, idle slots, live divergence)


@dataclass
class PassLog:
    """What one pass did: paths to commit and lines for the commit message."""
    paths: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    subject: str = ""

    def add(self, lab: Lab, *paths, line: str = "") -> None:
        self.paths += [p if isinstance(p, str) else lab.rel(p) for p in paths]
        if line:
            self.lines.append(line)


class Runner:
    def __init__(self, lab: Lab, on_event: Callable[[str, dict], None] | None = None):
        self.lab = lab
        self.backend = LocalBackend(lab.config)
        self.on_event = on_event or (lambda kind, info: None)
        self.recorded = 0
        self.dispatched = 0
        self.max_experiments: int | None = None
        self._reported: dict[str, float] = {}
        self._ideas_exhausted = False
        self.planning = True
        self._events_mtime: float | None = None
        roles = lab.config["roles"]
        self.agents = AgentRunner(lab) if any(r["kind"] == "agent" for r in roles.values()) else None
        self._workers_started: set[str] = set()
        self._role_last_start: dict[str, float] = {}
        self._durations: list[float] = []
        self._last_scan = -1e9

    # -- one pass -------------------------------------------------------------
    def reconcile(self) -> bool:
        """One pass over all state. Returns True if anything moved."""
        log = PassLog()
        entries = self._scan(log)
        for entry in entries:
            self._step(entry, log)
        self._dispatch([e for e in entries if e.path.exists()], log)
        if not log.paths and self.planning:
            self._plan(log)
        if self._builtin("reporter") and time.monotonic() - self._last_scan >= ANOMALY_SCAN_S:
            self._last_scan = time.monotonic()  # live streams grow: scanning them every tick costs a core
            anomalies.record_anomalies(self.lab, anomalies.lab_anomalies(self.lab))
            trackio_mirror.sync(self.lab)
        moved = bool(log.paths)
        self._commit(log)
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
            self._adopt_agent_files(log)  # an agent's writes are verified when it exits, not adopted early
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

    def _adopt_agent_files(self, log: PassLog) -> None:
        """Commit valid hypotheses/queue files that agents or humans wrote."""
        status = gitops.run_git(self.lab.root, "status", "--porcelain", "--no-renames", "-uall", "--",
                                "hypotheses", "queue")
        for line in status.splitlines():
            rel = line[3:].strip().strip('"')
            if rel.endswith(".yaml") and (self.lab.root / rel).exists() and rel not in log.paths:
                if self._valid(rel):
                    log.add(self.lab, rel)

    def _valid(self, rel: str) -> bool:
        from ..validation.validate import validate
        return validate(self.lab.root, [str(self.lab.root / rel)]).ok

    # -- the state machine ------------------------------------------------------
    def _step(self, entry: Entry, log: PassLog) -> None:
        try:
            if entry.status == "cancelled":
                self._finish(entry, Outcome("cancelled", reason="cancelled"), log)
            elif entry.status == "assigned":
                self._work(entry, log)
            elif entry.status == "ready":
                self._launch(entry, log)
            elif entry.status == "running":
                self._poll(entry, log)
        except LabError as exc:
            self._finish(entry, Outcome("failed", reason=str(exc.problem.message)), log)

    def _dispatch(self, entries: list[Entry], log: PassLog) -> None:
        live = [e for e in entries if e.status in ("assigned", "ready", "running")]
        used = {(e.data.get("job") or {}).get("slot") for e in live}
        free = [s for s in self.backend.slots if s not in used]
        room = self.lab.config["limits"]["max_running"] - len(live)
        queued = sorted((e for e in entries if e.status == "queued"), key=_dispatch_order)
        main = base_commit(self.lab) if queued and free else None
        for entry in queued:
            if not free or room <= 0 or self._limit_reached():
                break
            if not entry.is_baseline and target_key(self.lab, entry.data["base"]) != target_key(self.lab, main):
                entry.data["base"] = main  # not started yet: measure it on today's main
            slot = free.pop(0)
            room -= 1
            worktrees.ensure(self.lab, entry.id, entry.data["base"])
            transition(entry, "assigned", "runner", branch=worktrees.branch(entry.id), worker=self._worker_name(),
                       job={"backend": "local", "slot": slot})
            self.dispatched += 1
            log.add(self.lab, entry.path, line=f"{entry.id}: queued -> assigned ({slot})")
            self.on_event("assigned", {"entry": entry})
            self._work(entry, log)
            if entry.status == "ready":
                self._launch(entry, log)

    def expected_run_s(self) -> float:
        """A new run's likely duration: the slowest of the last few (they grow as main grows)."""
        return max(self._durations[-4:], default=0.0) * 1.1

    def _builtin(self, role: str) -> bool:
        return self.lab.config["roles"][role]["kind"] == "builtin"

    def _worker_name(self) -> str:
        return self.lab.config["roles"]["worker"]["kind"]

    def _work(self, entry: Entry, log: PassLog) -> None:
        """The builtin worker edits the worktree synchronously; agent workers act on their own."""
        if entry.is_baseline:
            transition(entry, "ready", "runner", note="baseline: main unchanged")
        elif self._worker_name() == "builtin":
            wt = worktrees.ensure(self.lab, entry.id, entry.data["base"])
            builtin.work(self.lab, entry.data, wt)
            worktrees.commit_leftovers(wt, entry.id, "builtin worker")
            transition(entry, "ready", "worker")
        else:
            if self._worker_name() == "agent":
                self._start_worker_agent(entry)
            return  # "off": a person or an outside agent sets `ready`
        log.add(self.lab, entry.path, line=f"{entry.id}: assigned -> ready")

    def _launch(self, entry: Entry, log: PassLog) -> None:
        if self.agents and self.agents.is_running("worker", entry.id):
            return  # it may still be editing its worktree
        wt = worktrees.ensure(self.lab, entry.id, entry.data["base"])
        if not entry.is_baseline:
            worktrees.commit_leftovers(wt, entry.id, entry.data.get("worker", "worker"))
            files, diff = worktrees.changes(self.lab, entry.id, entry.data["base"])
            rejection = gates.check_diff(self.lab, files, diff, entry.data.get("change") or {})
            if rejection:
                record_event(self.lab, "warn", "refused", f"{rejection.rule}: {rejection.message}",
                             experiment=entry.id, hypothesis=entry.data.get("hypothesis"))
                reason = f"refused ({rejection.rule}): {rejection.message}"
                self._finish(entry, Outcome("failed", reason=reason), log)
                return
        job = dict(entry.data.get("job") or {})
        job["attempts"] = int(job.get("attempts", 0)) + 1
        entry.data["job"] = job  # in memory only until `running` is written: a crash re-uses the job dir
        job.update(self.backend.start(self._spec(entry)))
        transition(entry, "running", "runner", job=job)
        log.add(self.lab, entry.path, line=f"{entry.id}: ready -> running ({job.get('slot')})")
        self.on_event("running", {"entry": entry})

    def _spec(self, entry: Entry) -> JobSpec:
        target = self.lab.config["target"]
        env = dict(target.get("env") or {})
        if entry.is_baseline:
            env["LAB_SEED"] = str(entry.data.get("wave", 0))
        job = entry.data.get("job") or {}
        command = list(target["command"])
        if command[0] in ("python", "python3"):
            command[0] = sys.executable  # the runner's own interpreter, venv or not
        return JobSpec(exp_id=entry.id, slot=job.get("slot", "cpu0"),
                       command=command, cwd=worktrees.path(self.lab, entry.id), env=env,
                       job_dir=self._job_root(entry.id) / f"attempt-{job.get('attempts', 1)}",
                       time_limit_s=float(target["time_limit_s"]),
                       stall_timeout_s=float(target["stall_timeout_s"]))

    def _job_root(self, exp_id: str) -> Path:
        return self.lab.runtime / "jobs" / exp_id

    def _poll(self, entry: Entry, log: PassLog) -> None:
        spec = self._spec(entry)
        status = self.backend.poll(spec)
        if status.state == "running":
            return
        if status.state == "lost":
            attempts = int((entry.data.get("job") or {}).get("attempts", 1))
            if attempts <= self.lab.config["limits"]["retries"]:
                record_event(self.lab, "warn", "retry", f"job lost ({status.reason}); retrying",
                             experiment=entry.id)
                transition(entry, "ready", "runner", note=f"retry after infrastructure failure: {status.reason}")
                log.add(self.lab, entry.path, line=f"{entry.id}: running -> ready (retry)")
                return
            self._finish(entry, Outcome("failed", reason=f"infrastructure: {status.reason}"), log, status.log_path)
            return
        self._finish(entry, self._outcome(entry, status, spec), log, status.log_path)

    def _outcome(self, entry: Entry, status, spec: JobSpec) -> Outcome:
        text = read_log(status.log_path) if status.log_path.exists() else ""
        summary = parse_summary(text)
        stream = read_stream(status.metrics_path)
        value = objective(summary, self.lab.metric)
        o = Outcome("finished", value=value, summary=summary, stream=stream,
                    metric_rows=metrics_rows(stream, summary), exit_code=status.exit_code,
                    job_seconds=(status.finished - status.started) if status.finished else None)
        if status.state in ("timed_out", "stalled"):
            o.status, o.reason = "timed_out", status.reason
        elif status.exit_code != 0:
            o.status, o.reason = "failed", f"exit code {status.exit_code}: {_last_line(text)}"
        elif value is None:
            o.status, o.reason = "failed", f"no `{self.lab.metric}: <value>` line in the output"
        elif value != value or value in (float("inf"), float("-inf")):
            o.status, o.reason = "failed", f"{self.lab.metric} is {value}"
        return o

    # -- recording and promotion ----------------------------------------------
    def _finish(self, entry: Entry, outcome: Outcome, log: PassLog, log_path: Path | None = None) -> None:
        if outcome.status == "cancelled" and entry.last_status == "running":
            self.backend.kill(self._spec(entry), "cancelled")
        base = entry.data.get("base")
        branch = worktrees.branch(entry.id)
        if gitops.run_git(self.lab.root, "branch", "--list", branch):
            outcome.commit = gitops.head(self.lab.root, branch)
            outcome.target = target_key(self.lab, outcome.commit)
        outcome.title = self._title(entry)
        table = scores(self.lab)
        if base:
            outcome.base_value = score_of(self.lab, base, table)
        if outcome.status == "finished" and not entry.is_baseline:
            self._judge(entry, outcome, table, log)
        patch = worktrees.changes(self.lab, entry.id, base)[1] if base and outcome.commit else ""
        paths = record(self.lab, entry, outcome, log_path, patch)
        shutil.rmtree(self._job_root(entry.id), ignore_errors=True)
        self.recorded += 1
        if outcome.job_seconds:
            self._durations.append(outcome.job_seconds)
        log.add(self.lab, *paths, line=f"{entry.id}: -> {outcome.status} {self._brief(outcome)}")
        if self._builtin("reporter"):
            window = self.lab.config["reporting"]["divergence_window"]
            anomalies.record_anomalies(self.lab, anomalies.stream_anomalies(
                entry.id, outcome.metric_rows, window, entry.data.get("hypothesis")))
            log.add(self.lab, write_leaderboard(self.lab))
        if outcome.promoted:
            self._commit(log)  # main moved: later results in this pass must see the new HEAD
            log.paths.clear(), log.lines.clear()
            log.subject = ""
        if outcome.status in ("failed", "timed_out"):
            record_event(self.lab, "error" if outcome.status == "failed" else "warn", outcome.status,
                         outcome.reason, experiment=entry.id, hypothesis=entry.data.get("hypothesis"))
            log.add(self.lab, self.lab.rel(self.lab.events_path))
        self.on_event("recorded", {"entry": entry, "outcome": outcome})

    def _judge(self, entry: Entry, o: Outcome, table, log: PassLog) -> None:
        if o.base_value is None:
            o.reason = "no score for the base yet (run `lab baseline`): not promoted"
            return
        margin = noise_margin(self.lab, table)
        if not self.lab.better(o.value, o.base_value, margin):
            o.reason = f"not better than its base {o.base_value:.6g} by more than the margin {margin:.4g}"
            return
        main = base_commit(self.lab)
        if target_key(self.lab, main) != target_key(self.lab, entry.data["base"]):
            o.status = "stale"
            new_id, path = new_experiment(self.lab, entry.data.get("hypothesis"), entry.data.get("change") or {},
                                          main, priority=int(entry.data.get("priority", 0)) + 10,
                                          wave=entry.data.get("wave", 0), by="runner")
            _set_requeued(path, entry.id)
            o.reason = f"beat its base by more than {margin:.4g} but main moved: re-queued on main as {new_id}"
            log.add(self.lab, path, line=f"{entry.id}: stale, re-queued as {new_id}")
            return
        changed = merge_into_main(self.lab, worktrees.branch(entry.id))
        o.promoted = True
        o.reason = f"promoted: {self.lab.metric} {o.base_value:.6g} -> {o.value:.6g} (margin {margin:.4g})"
        log.add(self.lab, *changed)
        pct = 100 * (o.value - o.base_value) / o.base_value
        log.subject = (f"lab: promote {entry.id}: {self.lab.metric} {o.base_value:.6g} -> {o.value:.6g} "
                       f"({pct:+.2f}%)")
        record_event(self.lab, "info", "promoted", o.reason, experiment=entry.id,
                     hypothesis=entry.data.get("hypothesis"))

    def _title(self, entry: Entry) -> str:
        if entry.is_baseline:
            return "baseline"
        hyp = self.lab.hypotheses / f"{entry.data.get('hypothesis')}.yaml"
        try:
            return load_yaml(hyp)[0].get("title", "")
        except Exception:
            return ""

    def _brief(self, o: Outcome) -> str:
        if o.value is None or o.value != o.value:
            return f"({o.reason})"
        base = f", base {o.base_value:.6g}" if o.base_value is not None else ""
        return f"({self.lab.metric} {o.value:.6g}{base}{', promoted' if o.promoted else ''})"

    # -- roles ----------------------------------------------------------------------
    def _plan(self, log: PassLog) -> None:
        """Builtin researcher and planner keep the queue fed (roles of kind 'off' or 'agent' are skipped)."""
        roles = self.lab.config["roles"]
        if self._limit_reached():
            return
        queued = sum(1 for p in self.lab.queue.glob("*.yaml"))
        room = self.lab.config["limits"]["max_queue"] - queued
        if room <= 0:
            return
        main = base_commit(self.lab)
        if self._needs_baseline(main):
            return self._queue_baseline(main, log)
        if self.agents:
            self._start_agents(queued, room)
        if "builtin" not in (roles["researcher"]["kind"], roles["planner"]["kind"]):
            return
        history = gates.History.load(self.lab)
        if roles["researcher"]["kind"] == "builtin" and not self._ideas_exhausted:
            made = builtin.research(self.lab, history, want=room)
            self._ideas_exhausted = not made
            log.add(self.lab, *made, line=f"researcher: {len(made)} hypotheses" if made else "")
        if roles["planner"]["kind"] == "builtin":
            researcher_done = roles["researcher"]["kind"] != "builtin" or self._ideas_exhausted
            touched = builtin.plan(self.lab, history, main, room, explore_ok=researcher_done)
            log.add(self.lab, *touched, line=f"planner: {len(touched)} files" if touched else "")

    def _needs_baseline(self, main: str) -> bool:
        if score_of(self.lab, main) is not None:
            return False
        for path in self.lab.queue.glob("*.yaml"):
            try:
                if load_yaml(path)[0].get("kind") == "baseline":
                    return False
            except Exception:
                continue
        return True

    def _queue_baseline(self, main: str, log: PassLog, repeats: int = 1) -> None:
        for seed in range(repeats):
            _, path = new_experiment(self.lab, None, {}, main, priority=100, wave=seed, kind="baseline",
                                     by="runner")
            log.add(self.lab, path, line="runner: main has no score yet: queued a baseline")

    def _limit_reached(self) -> bool:
        return self.max_experiments is not None and self.dispatched >= self.max_experiments

    # -- git ----------------------------------------------------------------------
    def _commit(self, log: PassLog) -> None:
        events_mtime = _mtime(self.lab.events_path)
        if events_mtime != self._events_mtime:  # events recorded this pass (by us or the reporter)
            self._events_mtime = events_mtime
            log.add(self.lab, self.lab.events_path, line="" if log.lines else "runner: events")
        if not log.paths:
            return
        paths = list(dict.fromkeys(log.paths))
        lines = [line for line in log.lines if line]
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        subject = log.subject or (f"lab: {lines[0]}{more}" if lines else "lab: record state files")
        body = "\n".join(lines)
        gitops.commit_paths(self.lab.root, paths, f"{subject}\n\n{body}\n" if body else subject)

    # -- agent roles ------------------------------------------------------------------
    def _start_worker_agent(self, entry: Entry) -> None:
        if entry.id in self._workers_started or not self.agents.can_start("worker"):
            return
        wt = worktrees.ensure(self.lab, entry.id, entry.data["base"])
        self.agents.start("worker", entry.id, wt, entry.path)
        self._workers_started.add(entry.id)

    def _start_agents(self, queued: int, room: int) -> None:
        """Triggers: researcher when proposals run low, planner when proposals wait or
        the queue runs low, reporter periodically; each at most every `every_s`."""
        roles = self.lab.config["roles"]
        proposed = _count_status(self.lab.hypotheses, "proposed")
        wants = {"researcher": proposed < 2, "planner": proposed > 0 or room > 0, "reporter": True}
        defaults = {"researcher": 120.0, "planner": 30.0, "reporter": 300.0}
        # least recently started first, so one busy role cannot starve the others
        for role, wanted in sorted(wants.items(), key=lambda kv: self._role_last_start.get(kv[0], -1e9)):
            cfg = roles[role]
            every = float(cfg.get("every_s", defaults[role]))
            last = self._role_last_start.get(role, -1e9)
            if cfg["kind"] == "agent" and wanted and time.monotonic() - last >= every \
                    and self.agents.can_start(role):
                self.agents.start(role, f"{role}-{int(time.time())}", self.lab.root, None)
                self._role_last_start[role] = time.monotonic()

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
            self._commit(log)
        return bool(outcomes)

    def _worker_done(self, outcome: AgentOutcome, log: PassLog) -> None:
        path = self.lab.queue / f"{outcome.task_id}.yaml"
        if not path.exists():
            return
        entry = load_entry(self.lab, path)
        if entry.status == "assigned":
            why = outcome.reason or f"exit code {outcome.exit_code}"
            reason = f"worker agent {outcome.state} without setting ready: {why}"
            self._finish(entry, Outcome("failed", reason=reason), log)

    # -- recovery -------------------------------------------------------------------
    def recover(self) -> None:
        """After a crash: drop orphan worktrees and processes, finish half-done records."""
        log = PassLog()
        live = set()
        for path in self.lab.queue.glob("*.yaml"):
            try:
                entry = load_entry(self.lab, path)
            except LabError:
                continue
            if (self.lab.experiments / entry.id / "experiment.yaml").exists():
                path.unlink()
                log.add(self.lab, path, line=f"{entry.id}: finish recording after restart")
            elif entry.status in ("assigned", "ready", "running"):
                live.add(entry.id)
        for exp_id in worktrees.listed(self.lab):
            if exp_id not in live:
                worktrees.remove(self.lab, exp_id)
        self.backend.orphans(live, self.lab.runtime / "jobs")
        if self.agents:
            for outcome in self.agents.recover():
                log.add(self.lab, *outcome.to_commit,
                        line=f"{outcome.role} agent {outcome.task_id}: stopped by restart")
        self._finish_uncommitted_records(log)
        self._commit(log)

    def _finish_uncommitted_records(self, log: PassLog) -> None:
        """Records written but not committed (killed before the commit): commit them now."""
        status = gitops.run_git(self.lab.root, "status", "--porcelain", "--no-renames", "-uall", "--",
                                "experiments", "queue")
        done = recorded_ids(self.lab)
        for line in status.splitlines():
            rel = line[3:].strip().strip('"')
            parts = rel.split("/")
            if parts[0] == "queue":
                if "D" in line[:2] and (self.lab.experiments / Path(rel).stem / "experiment.yaml").exists():
                    log.add(self.lab, rel)  # the record was written; its queue file's removal was not committed
                continue
            if len(parts) >= 2:
                log.add(self.lab, rel)
                exp_yaml = self.lab.experiments / parts[1] / "experiment.yaml"
                if exp_yaml.exists() and parts[1] in done:
                    data = load_yaml(exp_yaml)[0]
                    if (data.get("result") or {}).get("promoted"):
                        log.add(self.lab, *merge_into_main(self.lab, worktrees.branch(parts[1])))
        if log.paths:
            log.lines.append("runner: commit records left by an interrupted runner")


def _dispatch_order(entry: Entry) -> tuple:
    """Highest priority first, then oldest; files made in the same second by file time."""
    try:
        written = entry.path.stat().st_mtime_ns
    except FileNotFoundError:
        written = 0
    return -entry.data.get("priority", 0), entry.data["created"], written, entry.id


def _count_status(directory: Path, status: str) -> int:
    needle = f"status: {status}".encode()
    return sum(1 for p in directory.glob("*.yaml") if needle in p.read_bytes())


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _set_requeued(path: Path, origin: str) -> None:
    data = load_yaml(path)[0]
    data["requeued_from"] = origin
    write_yaml(path, data)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


class Watcher:
    """Wakes the loop on file changes (debounced); the periodic tick covers missed events."""

    def __init__(self, lab: Lab):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.wake = threading.Event()
        wake = self.wake
        jobs = str(lab.runtime / "jobs")

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                path = getattr(event, "dest_path", "") or event.src_path
                if path.endswith((".tmp", ".lock")) or "/.git/" in path:
                    return
                if jobs in path and not path.endswith("exit.json"):
                    return  # logs and metric lines stream here; only a job's end matters
                wake.set()

        self.observer = Observer()
        handler = Handler()
        for directory, recursive in ((lab.hypotheses, False), (lab.queue, False), (lab.root, False),
                                     (lab.runtime / "jobs", True), (lab.worktrees, False)):
            directory.mkdir(parents=True, exist_ok=True)
            self.observer.schedule(handler, str(directory), recursive=recursive)

    def __enter__(self) -> "Watcher":
        self.observer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.observer.stop()
        self.observer.join(timeout=2)

    def wait(self, timeout: float, debounce: float = 0.05) -> bool:
        fired = self.wake.wait(timeout)
        if fired:
            time.sleep(debounce)  # let a burst of writes settle
            self.wake.clear()
        return fired


def runner_lock(lab: Lab) -> FileLock:
    return FileLock(lab.locks / "runner.lock", timeout=0.5)


def run(lab: Lab, *, once: bool = False, until_idle: bool = False, max_experiments: int | None = None,
        on_event=None, stop: threading.Event | None = None, tick: float = TICK_S, plan: bool = True,
        deadline: float | None = None) -> Runner:
    """The `lab run` loop. SIGINT/SIGTERM set `stop`; running jobs stay recoverable.

    `deadline` (time.monotonic()): no new experiment is dispatched that would not
    end by then; the running ones are recorded. `plan=False` runs only what is queued.
    """
    stop = stop or threading.Event()
    lock = runner_lock(lab)
    if not lock.acquire(blocking=False):
        raise LabError("another runner holds this lab (.lab/locks/runner.lock)", lab.rel(lab.locks / "runner.lock"))
    try:
        runner = Runner(lab, on_event=on_event)
        runner.max_experiments = max_experiments
        runner.planning = plan
        runner.recover()
        with Watcher(lab) as watcher:
            while not stop.is_set():
                if deadline is not None and time.monotonic() + runner.expected_run_s() > deadline \
                        and not runner._limit_reached():
                    runner.max_experiments = runner.dispatched  # a new run would not end in time
                moved = runner.reconcile()
                if once or (until_idle and not moved and _idle(lab)):
                    break
                if max_experiments is not None and runner._limit_reached() and _idle(lab):
                    break
                if not moved:
                    watcher.wait(tick)
        sender = webhook.sender_for(lab)
        if sender:
            sender.flush(5)
        if runner.agents and stop.is_set():
            for outcome in runner.agents.stop_all():
                gitops.commit_paths(lab.root, outcome.to_commit, f"lab: {outcome.role} agent stopped at shutdown")
        return runner
    finally:
        lock.release()


def _idle(lab: Lab) -> bool:
    """Nothing live in the queue (queued entries beyond --max-experiments don't count as work)."""
    for path in lab.queue.glob("*.yaml"):
        try:
            if load_yaml(path)[0].get("status") in ("assigned", "ready", "running"):
                return False
        except Exception:
            continue
    return True
