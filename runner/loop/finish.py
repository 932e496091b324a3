"""Finishing an experiment, read top to bottom: the job's outcome parsed from its
output, the constraints it keeps, the verdict against its base, the promotion,
re-queue or confirmation run the verdict asks for, the terminal record, the
reporter's hook, and the commit when main moved.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pyarrow.compute as pc

from ..backends.base import Backend, JobStatus
from ..faults import crash_point
from ..files.metrics import (
    is_finite,
    metrics_rows,
    objective,
    parse_summary,
    read_log,
    read_stream,
)
from ..errors import LabError
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..repo import gitops, worktrees
from ..roles.reporter import Reporter
from ..state import machine
from ..state.create import new_experiment, title_of, write_checked
from ..state.entries import Entry
from ..state.events import record_event
from ..state.scores import scores
from . import constraints, reproduction
from .jobs import job_spec, seed_of
from .passlog import Committer, PassLog
from .promotion import CONFIRM, PROMOTE, REQUEUE, judge, merge_into_main
from .record import Outcome, record
from .scoring import base_commit, base_metrics, noise, runs_of, score_of, target_key


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
        self.promoted = 0
        self.durations: list[float] = []

    def finish(self, entry: Entry, outcome: Outcome, log: PassLog, log_path: Path | None = None) -> None:
        if outcome.status == machine.CANCELLED and entry.last_status == machine.RUNNING:
            spec = job_spec(self.lab, entry)
            self.backends[entry.job.get("backend", "local")].cancel(spec, "cancelled")
        self._measured(entry, outcome)
        if outcome.status == machine.FINISHED and entry.kind == "reproduction":
            reproduction.judge(self.lab, entry, outcome, noise(self.lab, env_class=entry.env_class).margin)
        elif outcome.status == machine.FINISHED:
            base_broken = self._check_constraints(entry, outcome)
            if not entry.is_baseline:
                self._judge(entry, outcome, log, base_broken)
        patch = worktrees.changes(self.lab, entry.id, entry.base)[1] if outcome.commit else ""
        paths = record(self.lab, entry, outcome, log_path, patch)
        crash_point("record.before-commit")
        shutil.rmtree(self.lab.jobs / entry.id, ignore_errors=True)
        self.recorded += 1
        if outcome.job_seconds:
            self.durations.append(outcome.job_seconds)
        log.add(self.lab, *paths, line=f"{entry.id}: -> {outcome.status} {self._brief(outcome)}")
        self.reporter.recorded(entry, outcome, log)
        if outcome.promoted:
            self.committer.commit(log)  # main moved: later results in this pass must see the new HEAD
            crash_point("promote.after-commit")
            log.clear()
        if outcome.status in (machine.FAILED, machine.TIMED_OUT):
            record_event(self.lab, "error" if outcome.status == machine.FAILED else "warn", outcome.status,
                         outcome.reason, experiment=entry.id, hypothesis=entry.hypothesis)
        self.on_event("recorded", {"entry": entry, "outcome": outcome})

    def _measured(self, entry: Entry, o: Outcome) -> None:
        """What was measured (the branch head, its target key, seed and cost) and its base's score."""
        branch = worktrees.branch(entry.id)
        if gitops.run_git(self.lab.root, "branch", "--list", branch):
            o.commit = gitops.head(self.lab.root, branch)
            o.target = target_key(self.lab, o.commit)
        o.title = "baseline" if entry.is_baseline else f"reproduction of {entry.data['reproduces']}" \
            if entry.kind == "reproduction" else title_of(self.lab, entry.hypothesis)
        o.seed = seed_of(entry)
        cost, holdout = self.lab.config["objective"].get("cost"), self.lab.config["objective"].get("holdout")
        o.cost = o.summary.get(cost) if cost else None
        if holdout:   # recorded, and shown against the objective; never judged
            o.holdout = objective(o.summary, holdout)
        if entry.kind == "reproduction":
            return  # judged against its original's recorded value (reproduction.py)
        o.base_value = score_of(self.lab, entry.base, entry.env_class)
        if holdout:
            o.base_holdout = score_of(self.lab, entry.base, entry.env_class, column="holdout")

    def _check_constraints(self, entry: Entry, o: Outcome) -> str | None:
        """Sets the rule a finished result breaks (a baseline: the absolute rules only); returns the
        absolute rule an experiment's base breaks."""
        rules = constraints.rules(self.lab.config["objective"])
        if not rules:
            return None
        if entry.is_baseline:
            o.constraint = constraints.broken(constraints.absolute(rules), o.summary)
            if o.constraint:
                o.reason = f"main breaks the constraint {o.constraint}: a result that keeps every rule replaces it"
                record_event(self.lab, "warn", "base-violates", o.reason, experiment=entry.id)
            return None
        base = base_metrics(self.lab, entry.base, entry.env_class)
        o.constraint = constraints.broken(rules, o.summary, base)
        return constraints.broken(constraints.absolute(rules), base)

    def _judge(self, entry: Entry, o: Outcome, log: PassLog, base_broken: str | None) -> None:
        main, table = base_commit(self.lab), scores(self.lab)
        value, runs = self._candidate(entry, o, table)
        margin = noise(self.lab, table, runs_of(self.lab, entry.base, entry.env_class, table), len(runs),
                       entry.env_class)
        verdict = judge(self.lab, value, o.base_value, margin,
                        base_is_main=target_key(self.lab, main) == target_key(self.lab, entry.base),
                        broken=o.constraint, base_broken=base_broken, confirming=len(runs) > 1)
        o.reason, o.z, o.margin, o.evidence = verdict.reason, verdict.z, verdict.margin, verdict.evidence
        if verdict.action == REQUEUE:
            o.status = machine.STALE
            new_id = self._follow_up(entry, main, "requeued_from", log)
            o.reason += f": re-queued on main as {new_id}"
        elif verdict.action == CONFIRM:
            new_id = self._follow_up(entry, entry.base, "confirms", log)
            o.reason += f" as {new_id}"
        elif verdict.action == PROMOTE:
            self._promote(entry, o, log)

    def stale(self, entry: Entry, main: str, log: PassLog) -> None:
        """An entry whose base main moved past before it ran: recorded stale, re-queued on main."""
        new_id = self._follow_up(entry, main, "requeued_from", log)
        self.finish(entry, Outcome(machine.STALE, reason=f"main moved before it ran: re-queued on main as "
                                                         f"{new_id}"), log)

    def _candidate(self, entry: Entry, o: Outcome, table) -> tuple[float, list[float]]:
        """The value judged and the runs it averages: a confirmation run of the same target
        adds the run it confirms."""
        first = entry.data.get("confirms")
        if entry.kind == "confirm" and first and table.num_rows:
            rows = table.filter(pc.equal(table["id"], first)).to_pylist()
            if rows and rows[0]["target"] == o.target and is_finite(rows[0]["value"]):
                runs = [rows[0]["value"], o.value]
                return sum(runs) / 2, runs
        return o.value, [o.value]

    def _follow_up(self, entry: Entry, base: str, link: str, log: PassLog) -> str:
        """The same change again on `base`, ahead of new work: a re-queue of a stale winner
        (link requeued_from) or a confirmation run on another seed (link confirms). Made once:
        after a restart the entry queued before the crash is found again."""
        for path in sorted(self.lab.queue.glob("*.yaml")):
            try:
                data = load_yaml(path)[0]
            except LabError:
                continue  # `lab validate` reports it
            if isinstance(data, dict) and data.get(link) == entry.id:
                return str(data.get("id", path.stem))
        kind = "confirm" if link == "confirms" else "experiment"
        new_id, path = new_experiment(self.lab, entry.hypothesis, entry.change, base, kind=kind,
                                      priority=entry.priority + 10, wave=entry.wave, by="runner",
                                      backend=entry.data.get("backend"), flavor=entry.data.get("flavor"))
        data = load_yaml(path)[0]
        data[link] = entry.id
        write_checked(path, "experiment", data, self.lab)
        log.add(self.lab, path, line=f"{entry.id}: {'confirmation' if kind == 'confirm' else 'stale'}, "
                                     f"queued as {new_id}")
        return new_id

    def _promote(self, entry: Entry, o: Outcome, log: PassLog) -> None:
        changed = merge_into_main(self.lab, worktrees.branch(entry.id))
        crash_point("promote.after-merge")
        o.promoted = True
        self.promoted += 1
        log.add(self.lab, *changed)
        pct = 100 * (o.value - o.base_value) / o.base_value
        log.subject = (f"lab: promote {entry.id}: {self.lab.metric} {o.base_value:.6g} -> {o.value:.6g} "
                       f"({pct:+.2f}%)")
        record_event(self.lab, "info", "promoted", o.reason, experiment=entry.id, hypothesis=entry.hypothesis)
        if is_finite(o.holdout) and is_finite(o.base_holdout) and \
                self.lab.better(o.base_holdout, o.holdout, o.margin):
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
