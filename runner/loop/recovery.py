"""Recovery after a crash or kill -9: drop orphan worktrees, jobs and agents,
and finish the records a killed runner left half-done. Idempotent: running it
twice, or after a clean exit, changes nothing.
"""
from __future__ import annotations

from pathlib import Path

from ..backends import Unreachable
from ..errors import LabError
from ..files.yamlio import load_yaml
from ..repo import gitops, merge, worktrees
from ..state import machine
from ..state.entries import load as load_entry
from ..state.scores import recorded_ids
from ..state.events import record_event
from .passlog import PassLog
from .promotion import merge_into_main


def recover(runner) -> None:
    lab = runner.lab
    log = PassLog()
    merge.resume(lab.root)  # a sync killed while it moved the checkout: its files first
    live = _live_entries(lab, log)
    for exp_id in worktrees.listed(lab):
        if exp_id not in live:
            worktrees.remove(lab, exp_id)
    for backend in runner.backends.values():
        try:
            backend.reattach(live, lab.jobs)
        except Unreachable as exc:  # its jobs are polled (and adopted) as usual; orphans wait for a later start
            record_event(lab, "warn", "backend-unreachable", f"reattach: {exc}")
    if runner.agents:
        for outcome in runner.agents.recover():
            log.add(lab, *outcome.to_commit, line=f"{outcome.role} agent {outcome.task_id}: stopped by restart")
    _finish_uncommitted_records(lab, log)
    runner.committer.commit(log)


def _live_entries(lab, log: PassLog) -> set[str]:
    """Ids of live entries; a queue file whose record exists is dropped (the record wins)."""
    live = set()
    for path in lab.queue.glob("*.yaml"):
        try:
            entry = load_entry(lab, path)
        except LabError:
            continue
        if (lab.experiments / entry.id / "experiment.yaml").exists():
            path.unlink()
            log.add(lab, path, line=f"{entry.id}: finish recording after restart")
        elif entry.status in machine.ACTIVE:
            live.add(entry.id)
    return live


def _finish_uncommitted_records(lab, log: PassLog) -> None:
    """Records written but not committed (killed before the commit): commit them now,
    with the merge of a promotion the record says happened."""
    status = gitops.run_git(lab.root, "status", "--porcelain", "--no-renames", "-uall", "--",
                            "experiments", "queue")
    done = recorded_ids(lab)
    for line in status.splitlines():
        rel = line[3:].strip().strip('"')
        parts = rel.split("/")
        if parts[0] == "queue":
            if "D" in line[:2] and (lab.experiments / Path(rel).stem / "experiment.yaml").exists():
                log.add(lab, rel)  # the record was written; its queue file's removal was not committed
            continue
        if len(parts) >= 2:
            log.add(lab, rel)
            exp_yaml = lab.experiments / parts[1] / "experiment.yaml"
            if exp_yaml.exists() and parts[1] in done:
                data = load_yaml(exp_yaml)[0]
                branch = worktrees.branch(parts[1])  # none for a record another runner made
                if (data.get("result") or {}).get("promoted") and gitops.run_git(lab.root, "branch", "--list", branch):
                    log.add(lab, *merge_into_main(lab, branch))
    if log.paths:
        log.lines.append("runner: commit records left by an interrupted runner")
