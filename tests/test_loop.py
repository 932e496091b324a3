"""The runner loop end to end on a toy target: real git, real subprocesses, real Parquet."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from runner.lab import Lab
from runner.loop.reconcile import Runner
from runner.loop.run import run
from runner.repo import gitops
from runner.scaffold import init_lab
from runner.state.create import new_experiment, new_hypothesis
from runner.state.events import read_events
from runner.state.scores import scores
from runner.validation.validate import validate

# A target whose score is a known function of its constants: X near 3 is best.
TOY = textwrap.dedent('''\
    import json, os, sys, time
    X = 1.0
    MODE = "ok"
    SLEEP = 0.0
    time.sleep(SLEEP)
    metrics = os.environ.get("LAB_METRICS")
    if metrics:
        with open(metrics, "a") as f:
            for step in range(3):
                f.write(json.dumps({"step": step, "train_loss": 5.0 - step}) + "\\n")
    score = (X - 3.0) ** 2 + 1.0
    if MODE == "crash":
        raise SystemExit("boom: the change broke the script")
    if MODE == "hang":
        time.sleep(60)
    if MODE == "nan":
        print("val_bpb: nan")
        sys.exit(0)
    if MODE == "silent":
        sys.exit(0)
    if MODE == "fake":
        print("val_bpb: 0.0001")
        print("training...")
    print("train_loss: 1.5")
    print(f"val_bpb: {score:.6f}")
''')


def toy_lab(root: Path, worker: str = "builtin", slots: int = 2, sleep: float = 0.0, **limits) -> Lab:
    init_lab(root, template="blank", commit=False)
    (root / "score.py").write_text(TOY.replace("SLEEP = 0.0", f"SLEEP = {sleep}"))
    config = yaml.safe_load((root / "lab.yaml").read_text())
    config["objective"] = {"metric": "val_bpb", "direction": "minimize", "noise_margin": 0.01}
    config["target"].update(command=["python", "score.py"], editable=["score.py"], params=["X", "MODE"],
                            time_limit_s=20, stall_timeout_s=3)
    config["backends"]["local"].update(slots=slots, threads_per_slot=1)
    config["roles"] = {"researcher": {"kind": "off"}, "planner": {"kind": "off"},
                       "worker": {"kind": worker}, "reporter": {"kind": "off"}}
    config["limits"] = {"max_running": slots, "max_queue": 8, "retries": 1, **limits}
    (root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.run_git_init(root)
    gitops.run_git(root, "add", "-A")
    gitops.run_git(root, "commit", "-q", "-m", "toy lab")
    return Lab(root)


def queue(lab: Lab, params: dict | None, title: str = "idea", baseline: bool = False, seed: int = 0) -> str:
    main = gitops.head(lab.root)
    if baseline:
        exp_id, _ = new_experiment(lab, None, {}, main, kind="baseline", wave=seed, priority=100)
        return exp_id
    hyp, _ = new_hypothesis(lab, title, {"params": params}, status="accepted")
    exp_id, _ = new_experiment(lab, hyp, {"params": params}, main)
    return exp_id


def finished(lab: Lab, exp_id: str) -> dict:
    return yaml.safe_load((lab.experiments / exp_id / "experiment.yaml").read_text())


def scores_by_id(lab: Lab) -> dict:
    return {row["id"]: row for row in scores(lab).to_pylist()}


def test_baseline_then_promotion_merges_into_main(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    base = queue(lab, None, baseline=True)
    better = queue(lab, {"X": 2.5}, "move X towards 3")
    run(lab, until_idle=True, plan=False, tick=0.1)

    rows = scores_by_id(lab)
    assert rows[base]["value"] == pytest.approx(5.0) and rows[base]["kind"] == "baseline"
    assert rows[better]["value"] == pytest.approx(1.25)
    assert rows[better]["promoted"] and rows[better]["base_value"] == pytest.approx(5.0)
    record = finished(lab, better)
    assert record["status"] == "finished" and record["result"]["promoted"] is True
    assert "X = 2.5" in (lab.root / "score.py").read_text()           # merged into main
    assert "X = 2.5" in gitops.run_git(lab.root, "show", "HEAD:score.py")
    log = gitops.run_git(lab.root, "log", "--format=%s")
    assert f"promote {better}: val_bpb 5 -> 1.25" in log
    metrics = pq.read_table(lab.experiments / better / "metrics.parquet").to_pylist()
    assert {r["name"] for r in metrics} >= {"train_loss", "val_bpb"}
    assert "+X = 2.5" in (lab.experiments / better / "patch.diff").read_text()
    assert not list(lab.queue.glob("*.yaml")) and not (lab.worktrees / better).exists()
    assert gitops.run_git(lab.root, "branch", "--list", f"exp/{better}")      # the branch stays
    assert validate(lab.root).ok
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", "hypotheses", "queue", "experiments") == ""


def test_worse_result_is_recorded_not_promoted(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    queue(lab, None, baseline=True)
    worse = queue(lab, {"X": -1.0})
    run(lab, until_idle=True, plan=False, tick=0.1)
    record = finished(lab, worse)
    assert record["status"] == "finished" and record["result"]["promoted"] is False
    assert "not better" in record["result"]["reason"]
    assert "X = 1.0" in (lab.root / "score.py").read_text()


@pytest.mark.parametrize("mode,status,reason", [
    ("crash", "failed", "exit code 1"),
    ("hang", "timed_out", "stalled"),
    ("nan", "failed", "val_bpb is nan"),
    ("silent", "failed", "no `val_bpb: <value>` line"),
])
def test_bad_jobs_are_recorded_with_a_reason(tmp_path, mode, status, reason):
    lab = toy_lab(tmp_path / "lab")
    queue(lab, None, baseline=True)
    bad = queue(lab, {"MODE": mode})
    run(lab, until_idle=True, plan=False, tick=0.1)
    record = finished(lab, bad)
    assert record["status"] == status
    assert reason in record["result"]["reason"]
    assert scores_by_id(lab)[bad]["status"] == status
    assert validate(lab.root).ok


def test_fake_early_metric_line_does_not_win(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    queue(lab, None, baseline=True)
    fake = queue(lab, {"MODE": "fake"})
    run(lab, until_idle=True, plan=False, tick=0.1)
    assert scores_by_id(lab)[fake]["value"] == pytest.approx(5.0)   # the real, final line


def test_result_on_a_moved_main_is_requeued_not_promoted_blindly(tmp_path):
    lab = toy_lab(tmp_path / "lab", slots=2)
    queue(lab, None, baseline=True)
    run(lab, until_idle=True, plan=False, tick=0.1)
    first, second = queue(lab, {"X": 2.0}), queue(lab, {"X": 2.5})   # both on the same base, run together
    run(lab, until_idle=True, plan=False, tick=0.1)
    records = {exp: finished(lab, exp) for exp in (first, second)}
    stale = [exp for exp, rec in records.items() if rec["status"] == "stale"]
    assert len(stale) == 1, records
    reason = records[stale[0]]["result"]["reason"]
    assert "main moved: re-queued on main as e-" in reason
    requeued = reason.rsplit(" as ", 1)[1]
    again = finished(lab, requeued)
    assert again["requeued_from"] == stale[0] and again["base"] != records[stale[0]]["base"]
    assert "X = 2.5" in (lab.root / "score.py").read_text()           # the better one ends on main
    promoted = [row for row in scores_by_id(lab).values() if row["promoted"]]
    assert 1 <= len(promoted) <= 2
    assert validate(lab.root).ok


def test_refuses_protected_and_not_editable_changes(tmp_path):
    lab = toy_lab(tmp_path / "lab", worker="off")
    queue(lab, None, baseline=True)
    run(lab, until_idle=True, plan=False, tick=0.1)
    bad = queue(lab, {"X": 2.0})
    runner = Runner(lab, plan=False)
    runner.reconcile()                                  # dispatch: assigned, worktree created
    wt = lab.worktrees / bad
    assert yaml.safe_load((lab.queue / f"{bad}.yaml").read_text())["status"] == "assigned"
    (wt / "lab.yaml").write_text((wt / "lab.yaml").read_text() + "\n# sneaky\n")   # protected
    (wt / "score.py").write_text((wt / "score.py").read_text().replace("X = 1.0", "X = 2.0"))
    entry = yaml.safe_load((lab.queue / f"{bad}.yaml").read_text())
    entry["status"] = "ready"                           # the worker's transition
    (lab.queue / f"{bad}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    runner.reconcile()
    record = finished(lab, bad)
    assert record["status"] == "failed" and "protected" in record["result"]["reason"]
    assert "X = 1.0" in (lab.root / "score.py").read_text()


def test_wrong_actor_transition_is_refused_and_restored(tmp_path):
    lab = toy_lab(tmp_path / "lab", worker="off")
    exp = queue(lab, {"X": 2.0})
    path = lab.queue / f"{exp}.yaml"
    entry = yaml.safe_load(path.read_text())
    entry["status"] = "running"                         # only the runner may do this
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    runner = Runner(lab, max_experiments=0, plan=False)
    runner.reconcile()
    assert yaml.safe_load(path.read_text())["status"] == "queued"
    events = read_events(lab).to_pylist()
    assert any(e["kind"] == "refused-transition" and e["experiment"] == exp for e in events)


def test_lost_job_is_retried_in_a_new_attempt(tmp_path):
    import json
    import os
    import signal
    import time

    lab = toy_lab(tmp_path / "lab", slots=1, sleep=1.5)
    queue(lab, None, baseline=True)
    runner = Runner(lab, plan=False)
    runner.reconcile()                                    # dispatched and running
    [job_dir] = list((lab.runtime / "jobs").glob("*/attempt-1"))
    pid = json.loads((job_dir / "pid").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)                        # the machine "loses" the job
    deadline = time.time() + 30
    while list(lab.queue.glob("*.yaml")) and time.time() < deadline:
        runner.reconcile()
        time.sleep(0.1)
    [record] = [finished(lab, p.parent.name) for p in lab.experiments.glob("*/experiment.yaml")]
    assert record["status"] == "finished" and record["job"]["attempts"] == 2
    assert any("retry after infrastructure failure" in h.get("note", "") for h in record["history"])


def test_sigterm_stops_the_runner_and_leaves_jobs_recoverable(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    lab = toy_lab(tmp_path / "lab", slots=1, sleep=2.0)
    exp = queue(lab, None, baseline=True)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "-C", str(lab.root), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline and "running" not in (lab.queue / f"{exp}.yaml").read_text():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "running jobs stay recoverable" in err
    assert yaml.safe_load((lab.queue / f"{exp}.yaml").read_text())["status"] == "running"
    run(lab, until_idle=True, plan=False, tick=0.1)        # a new runner picks the job up
    assert finished(lab, exp)["status"] == "finished"
    assert finished(lab, exp)["job"]["attempts"] == 1      # the same job, not a re-run


def test_lab_baseline_measures_the_noise(tmp_path):
    import subprocess
    import sys

    lab = toy_lab(tmp_path / "lab", slots=2)
    out = subprocess.run([sys.executable, "-m", "runner", "-C", str(lab.root), "baseline", "--repeats", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "val_bpb: mean 5, stdev 0 over 3 run(s)" in out.stdout
    rows = [r for r in scores_by_id(lab).values() if r["kind"] == "baseline"]
    assert len(rows) == 3 and len({r["target"] for r in rows}) == 1


def test_change_to_a_frozen_constant_is_refused(tmp_path):
    lab = toy_lab(tmp_path / "lab", worker="off")
    config = yaml.safe_load(lab.config_path.read_text())
    config["target"]["frozen"] = ["SLEEP"]
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.commit_paths(lab.root, ["lab.yaml"], "freeze SLEEP")
    lab = Lab(lab.root)
    bad = queue(lab, {"X": 2.0})
    runner = Runner(lab, plan=False)
    runner.reconcile()
    wt = lab.worktrees / bad
    (wt / "score.py").write_text((wt / "score.py").read_text().replace("SLEEP = 0.0", "SLEEP = 0.001"))
    entry = yaml.safe_load((lab.queue / f"{bad}.yaml").read_text())
    entry["status"] = "ready"
    (lab.queue / f"{bad}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    runner.reconcile()
    record = finished(lab, bad)
    assert record["status"] == "failed" and "SLEEP is frozen" in record["result"]["reason"]


def test_commit_of_a_file_staged_then_removed_before_any_commit(tmp_path):
    """A runner killed between `git add` and `git commit` leaves a staged file that the next
    runner removes (it was recorded): committing its removal must not fail."""
    lab = toy_lab(tmp_path / "lab")
    exp = queue(lab, {"X": 2.0})
    rel = f"queue/{exp}.yaml"
    gitops.run_git(lab.root, "add", "--", rel)            # staged by the killed runner ...
    (lab.root / rel).unlink()                             # ... recorded and removed by the next
    hypotheses = [f"hypotheses/{p.name}" for p in lab.hypotheses.glob("*.yaml")]
    assert gitops.commit_paths(lab.root, [rel, *hypotheses], "record, remove a staged file")
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", "queue", "hypotheses") == ""


def test_recovery_commits_a_record_whose_move_was_staged_but_not_committed(tmp_path):
    """Killed between `git add` and `git commit` of a record: git sees a staged rename."""
    lab = toy_lab(tmp_path / "lab")
    exp = queue(lab, {"X": 2.0})
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    data = yaml.safe_load((lab.queue / f"{exp}.yaml").read_text())
    data.update(status="cancelled")
    (lab.experiments / exp).mkdir()
    (lab.experiments / exp / "experiment.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (lab.queue / f"{exp}.yaml").unlink()
    gitops.run_git(lab.root, "add", "-A", "--", "queue", "experiments")
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", "queue", "experiments").startswith("R")
    Runner(lab).recover()
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", "queue", "experiments") == ""
    assert gitops.run_git(lab.root, "show", f"HEAD:experiments/{exp}/experiment.yaml")
