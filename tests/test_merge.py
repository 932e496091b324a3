"""Labs that merge: two clones' results as a pull request would merge them (plain git), and
runners sharing one bare remote through `lab sync`. Real git repositories, the real CLI and the
toy target of test_loop.py."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import _env, _git, _run_lab, lab_executable
from test_loop import TOY, queue, toy_lab

from runner.lab import Lab
from runner.loop.run import run
from runner.loop.scoring import base_commit, score_of, target_key
from runner.repo import gitops
from runner.state.create import new_experiment, new_hypothesis
from runner.state.scores import scores

# Two constants lines apart: two labs that each move one of them merge without a conflict.
PAIR = TOY.replace("SLEEP = 0.0\n", "SLEEP = 0.0\nY = 1.0\n").replace(
    "score = (X - 3.0) ** 2 + 1.0", "score = (X - 3.0) ** 2 + (Y - 2.0) ** 2 + 1.0")


def pair_lab(root: Path) -> Lab:
    lab = toy_lab(root)
    (root / "score.py").write_text(PAIR)
    config = yaml.safe_load(lab.config_path.read_text())
    config["target"]["params"] = ["X", "Y", "MODE"]
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.commit_paths(root, ["score.py", "lab.yaml"], "a target of two constants")
    return Lab(root)


def clone(source: Path, target: Path) -> Lab:
    _git(target.parent, "clone", "-q", str(source), target.name)
    return Lab(target)


def recorded(lab: Lab) -> dict[str, dict]:
    return {p.parent.name: yaml.safe_load(p.read_text()) for p in lab.experiments.glob("*/experiment.yaml")}


def score_files(lab: Lab) -> list[str]:
    return sorted(p.stem for p in (lab.experiments / "scores").glob("*.parquet"))


def lab_cli(lab: Lab, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return _run_lab(*args, cwd=lab.root, timeout=timeout)


# -- a pull request between two labs ---------------------------------------------------------------
def test_two_labs_with_promotions_merge_both_ways_and_the_merged_main_is_measured(tmp_path):
    origin = pair_lab(tmp_path / "origin")
    a, b = clone(origin.root, tmp_path / "a"), clone(origin.root, tmp_path / "b")
    for lab, params in ((a, {"X": 2.5}), (b, {"Y": 1.5})):
        queue(lab, None, baseline=True)
        queue(lab, params, f"move {next(iter(params))}")
        run(lab, until_idle=True, plan=False, tick=0.1)
        assert sum(r["result"]["promoted"] for r in recorded(lab).values()) == 1
    ids = set(recorded(a)) | set(recorded(b))
    assert len(ids) == 4
    heads = {lab: gitops.head(lab.root) for lab in (a, b)}
    for lab, other in ((a, b), (b, a)):
        _git(lab.root, "fetch", "-q", str(other.root), "main")
        merged = subprocess.run(["git", "merge", "--no-edit", heads[other]], cwd=lab.root, env=_env(),
                                capture_output=True, text=True)
        assert merged.returncode == 0 and "CONFLICT" not in merged.stdout, merged.stdout + merged.stderr
    assert _git(a.root, "rev-parse", "HEAD^{tree}") == _git(b.root, "rev-parse", "HEAD^{tree}")
    for lab in (a, b):
        assert set(recorded(lab)) == ids and not list(lab.queue.glob("*.yaml"))   # each in one place
        assert score_files(lab) == sorted(ids)                                    # one score file each
        assert sorted(scores(lab)["id"].to_pylist()) == sorted(ids)               # read once each
        assert lab_cli(lab, "validate").returncode == 0
        rows = json.loads(lab_cli(lab, "query", "SELECT id, promoted FROM scores", "--json").stdout)
        assert {r["id"] for r in rows} == ids and sum(r["promoted"] for r in rows) == 2
        assert lab_cli(lab, "report", "--out", str(tmp_path / f"report-{lab.root.name}")).returncode == 0
        html = (tmp_path / f"report-{lab.root.name}" / "index.html").read_text()
        assert all(exp_id in html for exp_id in ids)
        assert not _git(lab.root, "ls-files", "experiments/LEADERBOARD.md")     # a view, never merged
    # merging re-judges: main holds both changes, a target nobody measured; the next run measures it
    main_a = base_commit(a)
    assert "X = 2.5" in (a.root / "score.py").read_text() and "Y = 1.5" in (a.root / "score.py").read_text()
    assert score_of(a, main_a) is None
    assert lab_cli(a, "run", "--until-idle").returncode == 0
    [merged_baseline] = [r for r in scores(a).to_pylist()
                         if r["kind"] == "baseline" and r["target"] == target_key(a, main_a)]
    assert merged_baseline["value"] == pytest.approx(1.5) and score_of(a, main_a) == pytest.approx(1.5)
    subjects = _git(a.root, "log", "--format=%s")
    assert sum("promote" in line for line in subjects.splitlines()) == 2          # one story: both sides
    assert _git(a.root, "log", "--merges", "--format=%H").strip()


# -- runners sharing one remote -------------------------------------------------------------------
def shared(tmp_path: Path, lab: Lab) -> Path:
    """A bare remote holding the lab's main, as the lab's `origin`."""
    remote = tmp_path / "remote.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    _git(lab.root, "remote", "add", "origin", str(remote))
    _git(lab.root, "push", "-q", "origin", "main")
    return remote


def test_a_claim_that_loses_the_push_race_is_dropped_and_nothing_starts(tmp_path):
    a = toy_lab(tmp_path / "a")
    remote = shared(tmp_path, a)
    exp_id = queue(a, {"X": 2.0})
    gitops.commit_paths(a.root, ["queue", "hypotheses"], "queue one")
    _git(a.root, "push", "-q", "origin", "main")
    b = clone(remote, tmp_path / "b")
    from runner.loop.reconcile import Runner
    runners = {lab: Runner(lab, plan=False, remote="origin", sync_every=3600) for lab in (a, b)}
    for lab, runner in runners.items():
        runner.recover()
        runner.reconcile()                                    # both claim it, neither has pushed
        claim = yaml.safe_load((lab.queue / f"{exp_id}.yaml").read_text())
        assert claim["status"] == "assigned" and claim["job"]["runner"] == runner.me
        assert not (lab.worktrees / exp_id).exists()          # nothing starts before the push
    assert runners[a].sync(now=True) is False                 # a's push lands first
    runners[b].sync(now=True)                                 # b's loses: it merges a's claim
    entry = yaml.safe_load((b.queue / f"{exp_id}.yaml").read_text())
    assert entry["job"]["runner"] == runners[a].me and not runners[b].sharing.unconfirmed
    assert runners[b].sharing.paused()                        # it backs off before claiming again
    assert [e["kind"] for e in json.loads(lab_cli(b, "query", "SELECT kind FROM events", "--json").stdout)] \
        == ["claim-lost"]
    runners[b].reconcile()
    assert not (b.worktrees / exp_id).exists() and not list((b.runtime / "jobs").glob("*"))
    runners[a].reconcile()                                    # a's claim is on the remote: a starts it
    assert yaml.safe_load((a.queue / f"{exp_id}.yaml").read_text())["status"] in ("ready", "running")


def test_a_promotion_the_remote_replaced_is_judged_again_on_the_merged_main(tmp_path):
    a = toy_lab(tmp_path / "a")
    remote = shared(tmp_path, a)
    queue(a, None, baseline=True)
    run(a, until_idle=True, plan=False, tick=0.1)
    _git(a.root, "push", "-q", "origin", "main")
    b = clone(remote, tmp_path / "b")
    win_a, win_b = queue(a, {"X": 2.0}), queue(b, {"X": 2.5})      # both move line X: a conflict
    for lab in (a, b):
        run(lab, until_idle=True, plan=False, tick=0.1)
        assert recorded(lab)[win_a if lab is a else win_b]["result"]["promoted"] is True
    assert lab_cli(a, "sync").returncode == 0
    result = lab_cli(b, "sync")
    assert result.returncode == 0, result.stderr
    assert "score.py: both sides changed it; the remote's version is main's now" in result.stdout
    assert "X = 2.0" in (b.root / "score.py").read_text()             # the remote's promotion stands
    assert recorded(b)[win_b]["result"]["promoted"] is True           # b's record stays as it was
    [again] = [yaml.safe_load(p.read_text()) for p in b.queue.glob("*.yaml")]
    assert again["requeued_from"] == win_b and again["change"] == {"params": {"X": 2.5}}
    assert again["base"] == base_commit(b)
    run(b, until_idle=True, plan=False, tick=0.1)                     # judged on the merged main: 1.25 < 2.0
    assert recorded(b)[again["id"]]["result"]["promoted"] is True and "X = 2.5" in (b.root / "score.py").read_text()
    assert lab_cli(b, "sync").returncode == 0 and lab_cli(a, "sync").returncode == 0
    assert gitops.head(a.root) == gitops.head(b.root) and lab_cli(a, "validate").returncode == 0


def test_sync_without_a_remote_is_one_line(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    result = lab_cli(lab, "sync")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: origin: -: cannot fetch from origin: ")


def test_two_runners_share_a_queue_of_20_through_one_remote(tmp_path):
    runs = tmp_path / "runs.log"
    a = toy_lab(tmp_path / "a", max_queue=60)
    logged = ('time.sleep(SLEEP)\nwith open(os.environ["RUNLOG"], "a") as log:\n'   # each run names itself
              '    log.write(os.path.basename(os.getcwd()) + "\\n")')
    (a.root / "score.py").write_text(TOY.replace("time.sleep(SLEEP)", logged))
    config = yaml.safe_load(a.config_path.read_text())
    config["target"]["env"] = {"RUNLOG": str(runs)}
    a.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.commit_paths(a.root, ["score.py", "lab.yaml"], "a target that logs each run")
    remote = shared(tmp_path, a)
    xs = [round(3.0 - 0.2 * k, 1) for k in (7, 2, 12, 0, 15, 5, 9, 19, 1, 11, 4, 17, 8, 3, 14, 6, 18, 10, 13, 16)]
    queued = set()
    for x in xs:
        hyp, _ = new_hypothesis(a, f"X = {x}", {"params": {"X": x}}, status="accepted")
        queued.add(new_experiment(a, hyp, {"params": {"X": x}}, gitops.head(a.root))[0])
    gitops.commit_paths(a.root, ["queue", "hypotheses"], "a queue of 20")
    _git(a.root, "push", "-q", "origin", "main")
    b = clone(remote, tmp_path / "b")
    procs = [subprocess.Popen([lab_executable(), "run", "--until-idle", "--sync-every", "1", "--quiet"],
                              cwd=lab.root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for lab in (a, b)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    for lab in (a, b, a):
        assert lab_cli(lab, "sync").returncode == 0
    assert gitops.head(a.root) == gitops.head(b.root)
    ran = runs.read_text().split()
    assert len(ran) == len(set(ran)), "an experiment ran twice"
    records = recorded(a)
    assert queued <= set(records) and set(ran) <= set(records)       # each ran once, each recorded
    for exp_id in set(records) - set(ran):   # main moved while its claim travelled: its change queued again
        assert records[exp_id]["status"] == "stale" and "before it ran" in records[exp_id]["result"]["reason"]
        assert any(r.get("requeued_from") == exp_id for r in records.values())
    assert not list(a.queue.glob("*.yaml"))                           # nothing left, nothing lost
    table = scores(a)
    assert sorted(table["id"].to_pylist()) == sorted(records) == score_files(a)
    assert {r["result"].get("value") for r in records.values()} >= {1.0}
    main = base_commit(a)                                             # the best, measured on main itself
    assert "X = 3.0" in (a.root / "score.py").read_text() and score_of(a, main) == pytest.approx(1.0)
    on_main = [r for r in table.to_pylist() if r["target"] == target_key(a, main) and r["value"] is not None]
    assert on_main and all(r["value"] == pytest.approx(1.0) for r in on_main)
    assert lab_cli(a, "validate").returncode == 0
    owners = {records[i]["job"]["runner"] for i in records}
    assert len(owners) == 2                                           # both runners ran some of it


def test_a_sync_killed_while_it_moved_the_checkout_is_finished_on_restart(tmp_path):
    a = toy_lab(tmp_path / "a")
    remote = shared(tmp_path, a)
    b = clone(remote, tmp_path / "b")
    queue(a, None, baseline=True)
    run(a, until_idle=True, plan=False, tick=0.1)
    _git(a.root, "push", "-q", "origin", "main")
    queue(b, {"X": 2.0})
    gitops.commit_paths(b.root, ["queue", "hypotheses"], "b queues one")     # b has a line of its own
    bin_dir = tmp_path / "bin"                                               # a git that kills its caller
    bin_dir.mkdir()                                                          # just before HEAD moves
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    (bin_dir / "git").write_text(f'#!/bin/sh\ncase "$*" in *"update-ref -m lab: sync"*) kill -9 $PPID; exit 1;; esac\n'
                                 f'exec {real_git} "$@"\n')
    (bin_dir / "git").chmod(0o755)
    killed = subprocess.run([lab_executable(), "sync"], cwd=b.root, capture_output=True, text=True,
                            env=_env({"PATH": f"{bin_dir}:{os.environ['PATH']}"}))
    assert killed.returncode == -9
    [baseline] = recorded(a)
    assert (b.experiments / baseline / "experiment.yaml").exists()           # the files moved...
    assert gitops.head(b.root) != gitops.head(a.root) and not _git(b.root, "log", "--merges", "--format=%H")
    result = lab_cli(b, "run", "--once", "--sync-every", "60", "--quiet")    # ...the next runner finishes the move
    assert result.returncode == 0, result.stderr
    assert _git(b.root, "log", "--merges", "--format=%H").strip()
    assert "interrupted runner" not in _git(b.root, "log", "--format=%B")     # nothing taken for its own
    assert not gitops.dirty(b.root, "experiments", "queue", "hypotheses", "score.py")
    assert baseline in recorded(b) and lab_cli(b, "validate").returncode == 0
    assert not (b.runtime / "locks" / "sync-move").exists()
