"""kill -9 at each named crash point (runner/faults.py), then a clean `lab run`: nothing lost,
nothing duplicated, nothing orphaned, and a promotion lands in main exactly once.

Each test runs the real `lab run --until-idle` with LAB_CRASH_AT=<point>:<hit> on a lab with a
baseline and one winning experiment, one slot, so the order of hits is fixed: hit 1 of a
dispatch or record point is the baseline's, hit 2 the experiment's.
"""
from __future__ import annotations

import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from runner.backends import jobwrap
from runner.lab import Lab
from runner.repo import gitops
from runner.scaffold import init_lab
from runner.state.create import new_experiment, new_hypothesis

TARGET = "X = 1.0\nprint(f'val_bpb: {(X - 3.0) ** 2 + 1.0:.6f}')\n"
POINTS = {  # point: the hit that falls on the winning experiment (dispatch: claimed, then its worktree)
    "dispatch.after-assigned": 2,
    "dispatch.after-worktree": 2,
    "dispatch.after-job-start": 2,
    "record.after-files": 2,
    "record.after-score": 2,
    "record.after-experiment-yaml": 2,
    "record.after-queue-removal": 2,
    "record.before-commit": 2,
    "promote.after-merge": 1,
    "promote.after-commit": 1,
}


def crash_lab(root: Path) -> tuple[Lab, str, str]:
    """A blank lab whose target prints val_bpb at once; a baseline and a winner (X = 2.5) queued."""
    init_lab(root, template="blank", commit=False)
    (root / "score.py").write_text(TARGET)
    config = yaml.safe_load((root / "lab.yaml").read_text())
    config["objective"] = {"metric": "val_bpb", "direction": "minimize", "noise_margin": 0.01}
    config["target"].update(command=["python", "score.py"], editable=["score.py"], params=["X"],
                            time_limit_s=30, stall_timeout_s=30)
    config["backends"]["local"].update(slots=1, threads_per_slot=1)
    config["roles"] = {role: {"kind": "off"} for role in ("researcher", "planner", "reporter")}
    config["roles"]["worker"] = {"kind": "builtin"}
    config["limits"] = {"max_running": 1, "max_queue": 8, "retries": 1}
    (root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.run_git_init(root)
    gitops.run_git(root, "add", "-A")
    gitops.run_git(root, "commit", "-q", "-m", "crash lab")
    lab = Lab(root)
    main = gitops.head(root)
    baseline, _ = new_experiment(lab, None, {}, main, kind="baseline", priority=100)
    hyp, _ = new_hypothesis(lab, "X towards 3", {"params": {"X": 2.5}}, status="accepted")
    winner, _ = new_experiment(lab, hyp, {"params": {"X": 2.5}}, main)
    gitops.commit_paths(root, ["queue", "hypotheses"], "queue a baseline and a winner")
    return lab, baseline, winner


def assert_recovered(lab: Lab, ids: set[str], winner: str, run_lab, git) -> None:
    for exp_id in ids:
        assert not (lab.queue / f"{exp_id}.yaml").exists(), f"{exp_id} still queued"
        assert (lab.experiments / exp_id / "experiment.yaml").is_file(), f"{exp_id} not recorded"
    files = sorted(p.name for p in (lab.experiments / "scores").iterdir())
    assert files == sorted(f"{i}.parquet" for i in ids), "an experiment's score file is missing or extra"
    rows = [row for name in files for row in pq.read_table(lab.experiments / "scores" / name).to_pylist()]
    assert sorted(r["id"] for r in rows) == sorted(ids), "a score row is missing or duplicated"
    assert not (lab.worktrees.exists() and any(lab.worktrees.iterdir())), "orphan worktree"
    assert git(lab.root, "worktree", "list").count("\n") == 1, "git still lists an experiment worktree"
    assert jobwrap.marked_processes(under=str(lab.jobs)) == [], "orphan job process"
    assert git(lab.root, "status", "--porcelain") == "", "lab state left uncommitted"
    validated = run_lab("validate", cwd=lab.root)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    changes = git(lab.root, "log", "--format=%s", "--", "score.py").splitlines()
    assert len(changes) == 2, f"the target changed {len(changes) - 1} times on main, not once: {changes}"
    assert "X = 2.5" in git(lab.root, "show", "HEAD:score.py")
    assert yaml.safe_load((lab.experiments / winner / "experiment.yaml").read_text())["result"]["promoted"]
    assert [r["id"] for r in rows if r["promoted"]] == [winner]


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_at_crash_point_then_recovery(point, tmp_path, run_lab, git):
    lab, baseline, winner = crash_lab(tmp_path / "lab")
    crashed = run_lab("run", "--until-idle", "--quiet", cwd=lab.root,
                      env={"LAB_CRASH_AT": f"{point}:{POINTS[point]}"})
    assert crashed.returncode == -signal.SIGKILL, f"did not die at {point}:\n{crashed.stdout}{crashed.stderr}"
    again = run_lab("run", "--until-idle", "--quiet", cwd=lab.root, env={"LAB_CRASH_AT": ""})
    assert again.returncode == 0, again.stdout + again.stderr
    assert_recovered(Lab(lab.root), {baseline, winner}, winner, run_lab, git)


def test_without_a_crash_point_the_same_run_completes(tmp_path, run_lab, git):
    """The control: the lab and its invariants hold when nothing is injected."""
    lab, baseline, winner = crash_lab(tmp_path / "lab")
    done = run_lab("run", "--until-idle", "--quiet", cwd=lab.root, env={"LAB_CRASH_AT": "no-such-point"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert_recovered(Lab(lab.root), {baseline, winner}, winner, run_lab, git)
