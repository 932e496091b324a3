"""Finishing an experiment, read top to bottom: the job's outcome parsed from its
output, the verdict against its base, the promotion or re-queue the verdict asks
for, the terminal record, the reporter's hook, and the commit when main moved.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from ..backends.base import Backend, JobStatus
from ..files.metrics import (
    is_finite,
    metrics_rows,
    objective,
    parse_summary,
    read_log,
    read_stream,
)
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..repo import gitops, worktrees
from ..roles.reporter import Reporter
from ..state import machine
from ..state.create import new_experiment, title_of, write_checked
from ..state.entries import Entry
from ..state.events import record_event
from ..state.scores import scores
from . import reproduction
from .jobs import job_spec
from .passlog import Committer, PassLog
from .promotion import PROMOTE, REQUEUE, judge, merge_into_main
from .record import Outcome, record
from .scoring import base_commit, noise_margin, score_of, target_key


def outcome_of(lab: Lab, status: JobStatus) -> Outcome:
    """What a finished job measured: its summary lines, metric stream and exit, judged by code."""
    text = read_log(status.log_path) if status.log_path.exists() else ""
    summary = parse_summary(text)
    stream = read_stream(status.metrics_path)
    value = objective(summary, lab.metric)
    o = Outcome(machine.FINISHED, value=value, summary=summary, stream=stream,
                metric_rows=metrics_rows(stream, summary), exit_code=status.exit_code,
                job_seconds=(status.finished - status.started) if status.finished else None)
    if status.state in ("timed_out", "stalled"):
        o.status, o.reason = machine.TIMED_OUT, status.reason
    elif status.exit_code != 0:
        o.status, o.reason = machine.FAILED, f"exit code {status.exit_code}: {_last_line(text)}"
    elif value is None:
        o.status, o.reason = machine.FAILED, f"no `{lab.metric}: <value>` line in the output"
    elif not is_finite(value):
        o.status, o.reason = machine.FAILED, f"{lab.metric} is {value}"
    return o


class Finisher:
    def __init__(self, lab: Lab, backends: dict[str, Backend], reporter: Reporter, committer: Committer,
                 on_event: Callable[[str, dict], None]):
        self.lab, self.backends, self.reporter, self.committer = lab, backends, reporter, committer
        self.on_event = on_event
        self.recorded = 0
        self.durations: list[float] = []

    def finish(self, entry: Entry, outcome: Outcome, log: PassLog, log_path: Path | None = None) -> None:
        if outcome.status == machine.CANCELLED and entry.last_status == machine.RUNNING:
            spec = job_spec(self.lab, entry)
            self.backends[entry.job.get("backend", "local")].cancel(spec, "cancelled")
        self._measured(entry, outcome)
        if outcome.status == machine.FINISHED and entry.kind == "reproduction":
            reproduction.judge(self.lab, entry, outcome, noise_margin(self.lab, scores(self.lab)))
        elif outcome.status == machine.FINISHED and not entry.is_baseline:
            self._judge(entry, outcome, log)
        patch = worktrees.changes(self.lab, entry.id, entry.base)[1] if outcome.commit else ""
        paths = record(self.lab, entry, outcome, log_path, patch)
        shutil.rmtree(self.lab.jobs / entry.id, ignore_errors=True)
        self.recorded += 1
        if outcome.job_seconds:
            self.durations.append(outcome.job_seconds)
        log.add(self.lab, *paths, line=f"{entry.id}: -> {outcome.status} {self._brief(outcome)}")
        self.reporter.recorded(entry, outcome, log)
        if outcome.promoted:
            self.committer.commit(log)  # main moved: later results in this pass must see the new HEAD
            log.clear()
        if outcome.status in (machine.FAILED, machine.TIMED_OUT):
            record_event(self.lab, "error" if outcome.status == machine.FAILED else "warn", outcome.status,
                         outcome.reason, experiment=entry.id, hypothesis=entry.hypothesis)
            log.add(self.lab, self.lab.events_path)
        self.on_event("recorded", {"entry": entry, "outcome": outcome})

    def _measured(self, entry: Entry, o: Outcome) -> None:
        """What was measured (the branch head and its target key) and its base's score."""
        branch = worktrees.branch(entry.id)
        if gitops.run_git(self.lab.root, "branch", "--list", branch):
            o.commit = gitops.head(self.lab.root, branch)
            o.target = target_key(self.lab, o.commit)
        o.title = title_of(self.lab, entry.hypothesis) if entry.kind == "experiment" else entry.kind
        holdout = self.lab.config["objective"].get("holdout")
        if holdout:   # recorded, and shown against the objective; never judged
            o.holdout = objective(o.summary, holdout)
        if entry.kind == "reproduction":
            o.title = f"reproduction of {entry.data['reproduces']}"
            return
        o.base_value = score_of(self.lab, entry.base, entry.env_class)
        if holdout:
            o.base_holdout = score_of(self.lab, entry.base, entry.env_class, column="holdout")

    def _judge(self, entry: Entry, o: Outcome, log: PassLog) -> None:
        main = base_commit(self.lab)
        verdict = judge(self.lab, o.value, o.base_value, noise_margin(self.lab, scores(self.lab)),
                        base_is_main=target_key(self.lab, main) == target_key(self.lab, entry.base))
        o.reason = verdict.reason
        if verdict.action == REQUEUE:
            o.status = machine.STALE
            new_id = self._requeue(entry, main, log)
            o.reason += f": re-queued on main as {new_id}"
        elif verdict.action == PROMOTE:
            self._promote(entry, o, log)

    def stale(self, entry: Entry, main: str, log: PassLog) -> None:
        """An entry whose base main moved past before it ran: recorded stale, re-queued on main."""
        new_id = self._requeue(entry, main, log)
        self.finish(entry, Outcome(machine.STALE, reason=f"main moved before it ran: re-queued on main as "
                                                         f"{new_id}"), log)

    def _requeue(self, entry: Entry, main: str, log: PassLog) -> str:
        """The same change again, on today's main, ahead of new work."""
        new_id, path = new_experiment(self.lab, entry.hypothesis, entry.change, main,
                                      priority=entry.priority + 10, wave=entry.wave, by="runner",
                                      backend=entry.data.get("backend"), flavor=entry.data.get("flavor"))
        data = load_yaml(path)[0]
        data["requeued_from"] = entry.id
        write_checked(path, "experiment", data, self.lab)
        log.add(self.lab, path, line=f"{entry.id}: stale, re-queued as {new_id}")
        return new_id

    def _promote(self, entry: Entry, o: Outcome, log: PassLog) -> None:
        changed = merge_into_main(self.lab, worktrees.branch(entry.id))
        o.promoted = True
        log.add(self.lab, *changed)
        pct = 100 * (o.value - o.base_value) / o.base_value
        log.subject = (f"lab: promote {entry.id}: {self.lab.metric} {o.base_value:.6g} -> {o.value:.6g} "
                       f"({pct:+.2f}%)")
        record_event(self.lab, "info", "promoted", o.reason, experiment=entry.id, hypothesis=entry.hypothesis)
        if is_finite(o.holdout) and is_finite(o.base_holdout) and \
                self.lab.better(o.base_holdout, o.holdout, noise_margin(self.lab, scores(self.lab))):
            record_event(self.lab, "warn", "holdout-worse", f"promoted, but {self.lab.config['objective']['holdout']} "
                         f"got worse: {o.base_holdout:.6g} -> {o.holdout:.6g}, beyond the noise margin "
                         "(selection overfitting?)", experiment=entry.id, hypothesis=entry.hypothesis)

    def _brief(self, o: Outcome) -> str:
        if not is_finite(o.value):
            return f"({o.reason})"
        base = f", base {o.base_value:.6g}" if o.base_value is not None else ""
        return f"({self.lab.metric} {o.value:.6g}{base}{', promoted' if o.promoted else ''})"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"
