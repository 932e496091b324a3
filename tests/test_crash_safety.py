"""kill -9 of the runner at random points, and concurrent writers: nothing lost or duplicated."""
from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import sys
import time

import pytest
import yaml
from test_loop import queue, toy_lab

from runner.backends import jobwrap
from runner.lab import Lab
from runner.loop.run import run
from runner.repo import gitops
from runner.state.create import new_experiment, new_hypothesis
from runner.state.scores import scores
from runner.validation.validate import validate

LAB = [sys.executable, "-m", "runner.cli"]


def places(lab: Lab, exp_id: str) -> list[str]:
    found = []
    if (lab.queue / f"{exp_id}.yaml").exists():
        found.append("queue")
    if (lab.experiments / exp_id / "experiment.yaml").exists():
        found.append("experiments")
    return found


def live_entries(lab: Lab) -> dict[str, str]:
    return {p.stem: yaml.safe_load(p.read_text())["status"] for p in lab.queue.glob("*.yaml")}


def check_invariants(lab: Lab, ids: set[str]) -> None:
    for exp_id in ids:
        assert len(places(lab, exp_id)) == 1, (exp_id, places(lab, exp_id))
    rows = scores(lab).column("id").to_pylist()
    assert len(rows) == len(set(rows)), "a score was recorded twice"
    recorded = {p.parent.name for p in lab.experiments.glob("*/experiment.yaml")}
    assert recorded == set(rows), "experiments/ and the scores table disagree"
    live = live_entries(lab)
    worktrees = {p.name for p in lab.worktrees.iterdir()} if lab.worktrees.exists() else set()
    assert worktrees <= {i for i, st in live.items() if st in ("assigned", "ready", "running")}, "orphan worktree"
    for proc in jobwrap.marked_processes(under=str(lab.runtime / "jobs")):
        assert live.get(proc["experiment"]) == "running", f"orphan job process {proc}"
    report = validate(lab.root)
    assert report.ok, [str(p) for p in report.problems]
    dirty = gitops.run_git(lab.root, "status", "--porcelain", "--", "queue", "experiments", "hypotheses")
    assert dirty == "", f"uncommitted state after recovery:\n{dirty}"


def kill_trials(lab: Lab, trials: int, seed: int = 20261121) -> set[str]:
    """Queue two experiments, start `lab run`, kill -9 it at a random point, restart
    (one recovery pass), check the invariants; `trials` times. Returns all ids."""
    rng = random.Random(seed)
    ids = {queue(lab, None, baseline=True)}
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue baseline")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for _ in range(trials):
        for _ in range(2):
            ids.add(queue(lab, {"X": round(rng.uniform(-2, 6), 3)}))
        proc = subprocess.Popen([*LAB, "-C", str(lab.root), "run", "--until-idle", "--quiet"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.0))
        proc.kill()                                             # kill -9, at a random point
        proc.wait()
        again = subprocess.run([*LAB, "-C", str(lab.root), "run", "--once", "--quiet"], env=env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        check_invariants(lab, ids)
    return ids


@pytest.mark.slow
def test_kill_9_at_random_points_loses_and_duplicates_nothing(tmp_path):
    lab = toy_lab(tmp_path / "lab", slots=2, sleep=0.3)
    ids = kill_trials(lab, 30)
    run(lab, until_idle=True, plan=False, tick=0.1)
    check_invariants(lab, ids)
    assert all(places(lab, exp_id) == ["experiments"] for exp_id in ids)


def _writer(root: str, n: int, seed: int) -> None:
    lab = Lab(root)
    rng = random.Random(seed)
    main = gitops.head(lab.root)
    for i in range(n):
        hyp, hpath = new_hypothesis(lab, f"writer {seed} idea {i}", {"params": {"X": round(rng.uniform(-5, 9), 4)}},
                                    status="accepted", author=f"agent-{seed}")
        exp, epath = new_experiment(lab, hyp, {"params": {"X": round(rng.uniform(-5, 9), 4)}}, main)
        if i % 3 == 0:   # some agents commit their own files, as a human would
            _agent_commit(root, lab.rel(hpath), f"agent {seed}: idea {i}")


def _agent_commit(root: str, rel: str, message: str) -> None:
    """What a careful agent does: commit, retrying while another git process holds the index."""
    for _ in range(200):
        if subprocess.run(["git", "-C", root, "add", "--", rel], capture_output=True).returncode == 0 and \
                subprocess.run(["git", "-C", root, "commit", "-q", "--no-verify", "-m", message, "--", rel],
                               capture_output=True).returncode == 0:
            return
        if not subprocess.run(["git", "-C", root, "status", "--porcelain", "--", rel],
                              capture_output=True, text=True).stdout.strip():
            return  # the runner committed it first
        time.sleep(0.05)
    raise AssertionError(f"could not commit {rel}")


@pytest.mark.slow
def test_eight_concurrent_writers_while_the_runner_commits(tmp_path):
    lab = toy_lab(tmp_path / "lab", slots=2)
    queue(lab, None, baseline=True)
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(lab.root), 6, seed)) for seed in range(8)]
    import threading
    stop = threading.Event()
    runner = threading.Thread(target=run, kwargs=dict(lab=lab, plan=False, stop=stop, tick=0.05))
    runner.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    time.sleep(0.5)
    stop.set()
    runner.join(60)
    run(lab, until_idle=True, plan=False, tick=0.05)
    hyps = list(lab.hypotheses.glob("*.yaml"))
    assert len(hyps) == 48
    records = [yaml.safe_load(p.read_text()) for p in lab.experiments.glob("*/experiment.yaml")]
    originals = [r for r in records if "requeued_from" not in r]
    assert len(originals) == 49                             # 48 + the baseline, each exactly once
    stale = {r["id"] for r in records if r["status"] == "stale"}
    assert {r["requeued_from"] for r in records if "requeued_from" in r} <= stale   # re-runs of stale ones only
    assert not list(lab.queue.glob("*.yaml"))
    assert validate(lab.root).ok
    tracked = gitops.run_git(lab.root, "ls-files", "hypotheses").split()
    assert len([t for t in tracked if t.endswith(".yaml")]) == 48, "every hypothesis committed"
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", "hypotheses", "queue", "experiments") == ""
