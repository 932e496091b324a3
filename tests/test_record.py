"""Recording a terminal experiment and recovering from a runner killed halfway, in process:
real labs in git, real worktrees, Parquet read back. (tests/test_crash_points.py kills the
real CLI at each step; these pin down each step's own rules.)"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import yaml
from test_agents import make_lab as agents_lab
from test_loop import queue, toy_lab

from runner import faults
from runner.backends import jobwrap
from runner.files.tables import METRICS
from runner.loop.jobs import job_spec
from runner.loop.reconcile import Runner
from runner.loop.record import LOG_TAIL_BYTES, Outcome, record
from runner.repo import gitops, worktrees
from runner.state import entries
from runner.state.scores import recorded_ids
from runner.state.timeutil import parse_iso


def status(lab) -> str:
    return gitops.run_git(lab.root, "status", "--porcelain", "-uall", "--", "queue", "experiments", "score.py")


def assigned(lab, params: dict):
    """A committed queue entry, assigned, with its worktree and one commit on exp/<id>."""
    exp = queue(lab, params)
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    entry = entries.load(lab, lab.queue / f"{exp}.yaml")
    base = entry.data["base"]
    wt = worktrees.ensure(lab, exp, base)
    (wt / "score.py").write_text((wt / "score.py").read_text().replace("X = 1.0", f"X = {params['X']}"))
    worktrees.commit_leftovers(wt, exp, "test")
    entries.transition(entry, "assigned", "runner", branch=worktrees.branch(exp), worker="builtin",
                       job={"slot": "cpu0", "started": "2026-11-21T08:30:00Z"})
    gitops.commit_paths(lab.root, [f"queue/{exp}.yaml"], "assign")
    return entry, wt


def outcome(**fields) -> Outcome:
    base = dict(status="finished", value=1.5, summary={"val_bpb": 1.5, "steps": 3.0}, base_value=2.0,
                commit="c" * 40, target="t-1", title="idea", metric_rows=[
                    {"step": 0, "time_s": 0.1, "name": "loss", "value": 3.0, "summary": False},
                    {"step": None, "time_s": None, "name": "val_bpb", "value": 1.5, "summary": True}])
    return Outcome(**{**base, **fields})


def score_file(lab, exp_id: str):
    return lab.experiments / "scores" / f"{exp_id}.parquet"


def scores(lab) -> list[dict]:
    """Every row of every file of the scores table, read back with pyarrow alone."""
    return [row for path in sorted((lab.experiments / "scores").glob("*.parquet"))
            for row in pq.read_table(path).to_pylist()]


# -- recording --------------------------------------------------------------------------------------
def test_record_writes_every_file_then_removes_the_queue_entry_and_worktree(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, wt = assigned(lab, {"X": 2.0})
    log = tmp_path / "job.log"
    log.write_text("training\nval_bpb: 1.5\n")
    judged = outcome(reason="because", seed=7, cost=2.5, margin=0.25, z=1.5, evidence="single-run",
                     constraint="memory_gb <= 10", holdout=1.6, base_holdout=2.1)
    paths = record(lab, entry, judged, log, "the patch\n")
    exp = entry.id
    assert paths == [f"queue/{exp}.yaml", *(f"experiments/{exp}/{name}" for name in (
        "metrics.parquet", "patch.diff", "log.txt", "experiment.yaml")), f"experiments/scores/{exp}.parquet"]
    out = lab.experiments / exp
    assert (out / "patch.diff").read_text() == "the patch\n" and (out / "log.txt").read_text() == log.read_text()
    assert pq.read_schema(out / "metrics.parquet").equals(METRICS)
    metrics = pq.read_table(out / "metrics.parquet").to_pylist()
    assert [(m["name"], m["summary"]) for m in metrics] == [("loss", False), ("val_bpb", True)]
    data = yaml.safe_load((out / "experiment.yaml").read_text())
    assert data["status"] == "finished" and data["change"] == {"params": {"X": 2.0}}
    assert data["history"][-1] == {"status": "finished", "at": data["updated"], "by": "runner", "note": "because"}
    assert data["result"] == {"metric": "val_bpb", "value": 1.5, "metrics": {"val_bpb": 1.5, "steps": 3.0},
                              "base_value": 2.0, "delta": -0.5, "promoted": False, "commit": "c" * 40,
                              "seed": 7, "z": 1.5, "margin": 0.25, "evidence": "single-run",
                              "constraint": "memory_gb <= 10", "reason": "because", "holdout": 1.6,
                              "base_holdout": 2.1}
    assert not entry.path.exists() and not wt.exists()
    assert gitops.run_git(lab.root, "branch", "--list", f"exp/{exp}")             # the branch stays
    [row] = scores(lab)
    timing = {k: row.pop(k) for k in ("started", "finished", "duration_s")}
    assert row == {"id": exp, "hypothesis": entry.data["hypothesis"], "kind": "experiment", "status": "finished",
                   "title": "idea", "change": json.dumps({"params": {"X": 2.0}}),
                   "fingerprint": entry.data["fingerprint"], "base": entry.data["base"], "commit": "c" * 40,
                   "target": "t-1", "metric": "val_bpb", "value": 1.5, "base_value": 2.0, "delta": -0.5,
                   "promoted": False, "slot": "cpu0", "worker": "builtin", "wave": 0, "reason": "because",
                   "seed": 7, "cost": 2.5, "constraint": "memory_gb <= 10", "z": 1.5, "margin": 0.25,
                   "evidence": "single-run", "env_class": None, "holdout": 1.6, "base_holdout": 2.1}
    assert timing["started"] == parse_iso("2026-11-21T08:30:00Z") and timing["finished"] > timing["started"]
    assert timing["duration_s"] == pytest.approx((timing["finished"] - timing["started"]).total_seconds())
    assert recorded_ids(lab) == {exp}


class Killed(Exception):
    """Stands in for the SIGKILL of runner/faults.py, so the state at a crash point can be read."""


@pytest.mark.parametrize("point, done", [
    ("record.after-files", {"files"}), ("record.after-score", {"files", "score"}),
    ("record.after-experiment-yaml", {"files", "score", "record"}),
    ("record.after-queue-removal", {"files", "score", "record", "dequeued"})])
def test_each_recording_step_is_done_before_its_crash_point_and_none_after(tmp_path, monkeypatch, point, done):
    lab = toy_lab(tmp_path / "lab")
    entry, wt = assigned(lab, {"X": 2.0})
    monkeypatch.setenv("LAB_CRASH_AT", point)
    monkeypatch.setattr(faults, "_hits", {})
    monkeypatch.setattr(faults, "die", lambda: (_ for _ in ()).throw(Killed(point)))
    with pytest.raises(Killed):
        record(lab, entry, outcome(), None, "the patch\n")
    out = lab.experiments / entry.id
    reached = {"files": (out / "patch.diff").exists() and (out / "metrics.parquet").exists(),
               "score": score_file(lab, entry.id).exists() and recorded_ids(lab) == {entry.id},
               "record": (out / "experiment.yaml").exists(), "dequeued": not entry.path.exists()}
    assert {step for step, yes in reached.items() if yes} == done
    assert wt.exists()                                     # the worktree goes last


def test_the_second_hit_of_a_crash_point_is_the_one_named_by_n(monkeypatch):
    monkeypatch.setenv("LAB_CRASH_AT", "here:2")
    monkeypatch.setattr(faults, "_hits", {})
    hits = []
    monkeypatch.setattr(faults, "die", lambda: hits.append(dict(faults._hits)))
    for name in ("here", "elsewhere", "here", "here"):
        faults.crash_point(name)
    assert hits == [{"here": 2}]


def test_a_second_recording_of_the_same_experiment_adds_no_score_row(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    paths = record(lab, entry, outcome(), None, "")
    assert f"experiments/{entry.id}/log.txt" not in paths                      # no log: none to commit
    again = entries.Entry(entry.path, dict(entry.data))      # what a restarted runner still holds in queue/
    record(lab, again, outcome(value=9.0), None, "")
    assert [r["id"] for r in scores(lab)] == [entry.id]
    assert scores(lab)[0]["value"] == 1.5                                      # the first one stands
    assert not (lab.experiments / entry.id / "log.txt").exists()               # no log: none written


def test_a_job_attempt_recorded_again_keeps_its_one_row_in_a_file_named_by_the_attempt(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    entry.data["job"] = {**entry.job, "backend": "local", "attempts": 1}
    assert f"experiments/jobs/{entry.id}-1.parquet" in record(lab, entry, outcome(), None, "")
    again = entries.Entry(entry.path, dict(entry.data))      # a restarted runner finishing the same attempt
    assert f"experiments/jobs/{entry.id}-1.parquet" in record(lab, again, outcome(status="failed"), None, "")
    assert [p.name for p in (lab.experiments / "jobs").iterdir()] == [f"{entry.id}-1.parquet"]
    [row] = pq.read_table(lab.experiments / "jobs").to_pylist()
    assert (row["experiment"], row["attempt"], row["status"], row["backend"]) == (entry.id, 1, "finished", "local")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None])
def test_a_result_without_a_finite_value_has_no_value_and_no_delta(tmp_path, value):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    record(lab, entry, outcome(status="failed", value=value, reason="x" * 800, commit="", title="", metric_rows=[]),
           None, "")
    data = yaml.safe_load((lab.experiments / entry.id / "experiment.yaml").read_text())
    assert data["result"]["value"] is None and data["result"]["delta"] is None
    assert pq.read_schema(lab.experiments / entry.id / "metrics.parquet").equals(METRICS)
    assert "commit" not in data["result"] and data["result"]["reason"] == "x" * 800
    assert data["history"][-1]["note"] == "x" * 500
    [row] = scores(lab)
    assert row["value"] is None and row["delta"] is None and row["title"] is None and row["status"] == "failed"


def test_the_terminal_transition_is_stamped_and_noted_only_with_a_reason(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    del entry.data["history"]                                     # an entry written without one
    record(lab, entry, outcome(reason=""), None, "")
    data = yaml.safe_load((lab.experiments / entry.id / "experiment.yaml").read_text())
    assert parse_iso(data["updated"]) and data["history"] == [
        {"status": "finished", "at": data["updated"], "by": "runner"}]
    assert "reason" not in data["result"]


def test_a_log_with_bytes_that_are_not_utf8_is_kept_readable(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    log = tmp_path / "job.log"
    log.write_bytes(b"caf\xc3\xa9 \xff\nval_bpb: 1.5\n")
    record(lab, entry, outcome(), log, "")
    assert (lab.experiments / entry.id / "log.txt").read_text() == "caf\u00e9 \ufffd\nval_bpb: 1.5\n"


def test_a_large_log_keeps_its_tail(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    log = tmp_path / "job.log"
    log.write_bytes(b"x" * LOG_TAIL_BYTES + b"the end\n")
    record(lab, entry, outcome(), log, "")
    kept = (lab.experiments / entry.id / "log.txt").read_bytes()
    assert len(kept) == LOG_TAIL_BYTES and kept.endswith(b"the end\n")


def test_a_baseline_row_has_the_baseline_kind_and_no_title(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    exp = queue(lab, None, baseline=True)
    entry = entries.load(lab, lab.queue / f"{exp}.yaml")
    shutil.rmtree(lab.experiments)                              # a fresh clone: nothing recorded, no directory
    record(lab, entry, outcome(base_value=None, title=""), None, "")
    [row] = scores(lab)
    assert row["kind"] == "baseline" and row["base_value"] is None and row["delta"] is None
    assert row["duration_s"] is None and row["started"] is None and not math.isnan(row["value"])


# -- recovery -------------------------------------------------------------------------------------------
def test_recover_removes_orphan_worktrees_and_keeps_live_ones(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    live, live_wt = assigned(lab, {"X": 2.0})
    others = [assigned(lab, {"X": x}) for x in (2.25, 2.5)]
    for (entry, _), steps in zip(others, (["ready"], ["ready", "running"])):
        for status in steps:
            entries.transition(entry, status, "runner")
    idle = queue(lab, {"X": 2.5})                               # queued: nothing may hold a worktree yet
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    idle_wt = worktrees.ensure(lab, idle, gitops.head(lab.root))
    gone_wt = worktrees.ensure(lab, "e-gone", gitops.head(lab.root))   # its entry no longer exists
    (lab.queue / "e-broken.yaml").write_text("id: [unclosed\n")       # unreadable: skipped, not fatal
    Runner(lab).recover()
    assert live_wt.exists() and not idle_wt.exists() and not gone_wt.exists()
    assert worktrees.listed(lab) == sorted([live.id] + [entry.id for entry, _ in others])


def _alive(pid: int) -> bool:
    stat = jobwrap.proc_stat(pid)
    return stat is not None and stat["state"] not in ("Z", "X")


def test_recover_kills_the_job_of_an_experiment_no_longer_live_and_keeps_a_live_one(tmp_path):
    lab = toy_lab(tmp_path / "lab", sleep=60)
    live, _ = assigned(lab, {"X": 2.0})
    entries.transition(live, "ready", "runner")
    entries.transition(live, "running", "runner", job={"slot": "cpu0", "attempts": 1})
    backend = Runner(lab).backends["local"]
    spec = job_spec(lab, live)
    orphan = replace(spec, exp_id="e-gone", slot="cpu1", job_dir=lab.job_dir("e-gone", 1))
    pids = {s.exp_id: backend.start(s)["pid"] for s in (spec, orphan)}
    try:
        Runner(lab).recover()
        deadline = time.monotonic() + 30
        while _alive(pids["e-gone"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pids["e-gone"]) and _alive(pids[live.id])
    finally:
        backend.cancel(spec, "test over")


def test_recover_commits_nothing_for_a_new_entry_or_a_record_cut_short(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    kept = entry.path.read_text()
    record(lab, entry, outcome(promoted=True), None, "")
    (lab.experiments / entry.id / "experiment.yaml").unlink()   # killed after the score row
    entry.path.write_text(kept)
    new = queue(lab, {"X": 2.5})                                 # someone's new entry: not the runner's to commit
    dropped = queue(lab, {"X": 2.75})
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue two")
    (lab.queue / f"{new}.yaml").write_text((lab.queue / f"{new}.yaml").read_text() + "# edited\n")
    (lab.queue / f"{dropped}.yaml").unlink()                     # a person's deletion, no record behind it
    Runner(lab).recover()
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", f"queue/{new}.yaml").startswith(" M")
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", f"queue/{dropped}.yaml").startswith(" D")
    assert "X = 1.0" in gitops.run_git(lab.root, "show", "HEAD:score.py")      # nothing merged without a record


def test_recover_commits_a_record_left_uncommitted(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    record(lab, entry, outcome(), None, "")                      # killed before the commit
    assert status(lab)
    Runner(lab).recover()
    assert status(lab) == ""
    assert gitops.run_git(lab.root, "show", f"HEAD:experiments/{entry.id}/experiment.yaml")
    assert not gitops.run_git(lab.root, "ls-tree", "HEAD", "--", f"queue/{entry.id}.yaml")
    body = gitops.run_git(lab.root, "log", "-1", "--format=%b").splitlines()
    assert body == ["runner: commit records left by an interrupted runner"]


def test_recover_removes_a_queue_entry_whose_record_exists(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    kept = entry.path.read_text()
    record(lab, entry, outcome(), None, "")
    entry.path.write_text(kept)                                  # killed before removing it
    gitops.commit_paths(lab.root, ["queue", "experiments"], "the record and the stale entry")
    Runner(lab).recover()
    assert not entry.path.exists() and status(lab) == ""
    assert not gitops.run_git(lab.root, "ls-tree", "HEAD", "--", f"queue/{entry.id}.yaml")
    assert f"{entry.id}: finish recording after restart" in gitops.run_git(lab.root, "log", "-1", "--format=%B")


def test_recover_lands_a_promotion_recorded_but_not_committed(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    record(lab, entry, outcome(promoted=True), None, "")        # merged in memory, killed before the commit
    Runner(lab).recover()
    assert "X = 2.0" in gitops.run_git(lab.root, "show", "HEAD:score.py") and status(lab) == ""


def test_recover_leaves_an_unpromoted_record_off_main(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    entry, _ = assigned(lab, {"X": 2.0})
    record(lab, entry, outcome(promoted=False), None, "")
    Runner(lab).recover()
    assert "X = 1.0" in gitops.run_git(lab.root, "show", "HEAD:score.py") and status(lab) == ""


def test_recover_with_nothing_to_do_commits_nothing(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    head = gitops.head(lab.root)
    Runner(lab).recover()
    assert gitops.head(lab.root) == head


def test_recover_commits_what_an_orphaned_agent_was_allowed_to_write_and_undoes_the_rest(tmp_path):
    lab = agents_lab(tmp_path, FAKE_AGENT_SCENARIO="edit-protected", FAKE_AGENT_LINGER="60")
    original = (lab.root / "lab.yaml").read_text()
    script = ("import sys, time; from pathlib import Path; from runner.roles.agents import AgentRunner; "
              "from runner.lab import Lab; r = AgentRunner(Lab(Path(sys.argv[1]))); "
              "r.start('researcher', 'r1', Path(sys.argv[1]), None); time.sleep(60)")
    crashed = subprocess.Popen([sys.executable, "-c", script, str(lab.root)])
    deadline = time.monotonic() + 30
    while not list(lab.hypotheses.glob("h-*.yaml")) and time.monotonic() < deadline:
        time.sleep(0.05)
    crashed.kill()                                               # kill -9 of the runner; the agent lives on
    crashed.wait()
    Runner(type(lab)(lab.root)).recover()
    [hyp] = lab.hypotheses.glob("h-*.yaml")
    assert gitops.run_git(lab.root, "ls-tree", "--name-only", "HEAD", "--", f"hypotheses/{hyp.name}")
    assert (lab.root / "lab.yaml").read_text() == original
    message = gitops.run_git(lab.root, "log", "-1", "--format=%B").splitlines()
    assert message[0].startswith("lab: researcher agent r1: stopped by restart")
    assert "researcher agent r1: stopped by restart" in message[2:]
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", "hypotheses", "lab.yaml") == ""
