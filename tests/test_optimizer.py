"""The optimizer-backed planner (roles.planner.exploration: optuna): single changes from main
inside the declared ranges that pass the gates, a trial history rebuilt from the lab's files
(a kill between ask and queue loses and duplicates nothing), and a toy lab that improves."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import _run_lab
from test_loop import toy_lab

from runner.lab import Lab
from runner.loop.run import run
from runner.repo import gitops
from runner.roles import builtin, gates, optimizer
from runner.roles.history import History
from runner.state.params import read_params

pytest.importorskip("optuna")

SPACE = {"X": {"low": 0.0, "high": 10.0}, "MODE": {"choices": ["ok"]}}


def optuna_lab(root, params=None, **limits) -> Lab:
    lab = toy_lab(root, **limits)
    config = yaml.safe_load(lab.config_path.read_text())
    config["target"]["params"] = params or SPACE
    config["roles"]["planner"] = {"kind": "builtin", "exploration": "optuna"}
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.commit_paths(lab.root, ["lab.yaml"], "explore with optuna")
    return Lab(lab.root)


def hypotheses(lab: Lab) -> dict[str, dict]:
    docs = (yaml.safe_load(p.read_text()) for p in lab.hypotheses.glob("*.yaml"))
    return {d["id"]: d for d in docs}


def queued(lab: Lab) -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in lab.queue.glob("*.yaml")]


def with_history(lab: Lab, xs=(2.0, 6.0, 0.5)) -> None:
    """A baseline and a few single changes of X, measured by the real loop (the planner off)."""
    config = yaml.safe_load(lab.config_path.read_text())
    planner = config["roles"]["planner"]
    config["roles"]["planner"] = {"kind": "off"}
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    from test_loop import queue
    queue(lab, None, baseline=True)
    for x in xs:
        queue(lab, {"X": x}, f"X = {x}")
    run(Lab(lab.root), until_idle=True, plan=False, tick=0.1)
    config["roles"]["planner"] = planner
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.commit_paths(lab.root, ["lab.yaml"], "planner back")


def test_proposals_are_single_changes_from_main_inside_the_ranges_that_pass_the_gates(tmp_path):
    lab = optuna_lab(tmp_path / "lab", params={**SPACE, "SLEEP": {"low": 0.0, "high": 0.001}})
    with_history(lab)
    lab = Lab(lab.root)
    main = gitops.head(lab.root)
    current = read_params(gitops.run_git(lab.root, "show", f"{main}:score.py"))
    made = optimizer.propose(lab, History.load(lab), main, want=6)
    assert len(made) == 6
    history = History.load(lab)
    for path in made:
        hyp = yaml.safe_load(path.read_text())
        [(name, value)] = hyp["change"]["params"].items()
        assert hyp["status"] == "proposed" and hyp["source"]["kind"] == "optimizer"
        assert hyp["source"]["sampler"] == "tpe" and isinstance(hyp["source"]["trial"], int)
        assert value != current[name] and gates.out_of_range(lab.params[name], value) is None
        assert gates.review_change(lab, history, hyp["change"], base=main, hypothesis_id=hyp["id"]) is None
    assert _run_lab("validate", cwd=lab.root).returncode == 0
    # MODE has one choice, main's: there is nothing to move it to
    assert not any("MODE" in yaml.safe_load(p.read_text())["change"]["params"] for p in made)


def test_trials_are_the_finished_single_changes_recorded_in_the_lab(tmp_path):
    lab = optuna_lab(tmp_path / "lab")
    with_history(lab, xs=(2.0, 6.0))
    main = gitops.head(lab.root)
    space = optimizer.search_space(lab.params, read_params((lab.root / "score.py").read_text()))
    told = optimizer.trials(lab, space)
    rows = pq.read_table(lab.experiments / "scores").to_pylist()
    assert len(told) == len(rows) == 3
    by_x = {t.params["X"]: t.value for t in told}
    assert by_x[6.0] == pytest.approx((6.0 - 3.0) ** 2 + 1.0)
    # a promotion moved main to X = 2.0: a change of main is told with main's X underneath
    assert read_params(gitops.run_git(lab.root, "show", f"{main}:score.py"))["X"] == 2.0
    assert by_x[1.0] == pytest.approx(5.0)
    assert optimizer.trials(lab, space)[0].params == told[0].params   # same files, same trials


KILLED = textwrap.dedent("""
    import os, signal, sys
    from runner.lab import Lab
    from runner.loop.scoring import base_commit
    from runner.roles import builtin, optimizer
    from runner.roles.history import History
    lab = Lab(sys.argv[1])
    made = optimizer.propose(lab, History.load(lab), base_commit(lab), want=2)
    print(" ".join(p.stem for p in made), flush=True)
    if sys.argv[2] == "after-accept":        # killed between the review and the queue entry
        builtin._queue = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        builtin.plan(lab, History.load(lab), base_commit(lab), room=2)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("when", ["after-ask", "after-accept"])
def test_a_kill_between_ask_and_queue_loses_nothing_and_duplicates_nothing(tmp_path, when):
    lab = optuna_lab(tmp_path / "lab")
    with_history(lab)
    lab = Lab(lab.root)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", KILLED, str(lab.root), when], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == -9, done.stderr
    asked = done.stdout.split()
    assert len(asked) == 2
    main = gitops.head(lab.root)
    # the restarted planner: queues what was asked, asks again only for the room left
    builtin.plan(Lab(lab.root), History.load(Lab(lab.root)), main, room=3)
    entries = queued(lab)
    assert sorted(e["hypothesis"] for e in entries if e["hypothesis"] in asked) == sorted(asked)
    changes = [yaml.safe_dump(e["change"], sort_keys=True) for e in entries]
    assert len(entries) == 3 and len(set(changes)) == 3
    hyps = hypotheses(lab)
    assert all(hyps[a]["status"] == "accepted" for a in asked)
    assert [h for h in hyps.values() if h["status"] == "proposed"] == []
    # and a second restart adds nothing more
    builtin.plan(Lab(lab.root), History.load(Lab(lab.root)), main, room=0)
    assert len(queued(lab)) == 3


def test_the_same_files_ask_the_same_question_after_a_restart(tmp_path):
    lab = optuna_lab(tmp_path / "lab")
    with_history(lab)
    main = gitops.head(lab.root)
    [first] = optimizer.propose(Lab(lab.root), History.load(lab), main, want=1)
    change = yaml.safe_load(first.read_text())["change"]
    first.unlink()                                   # killed before the hypothesis reached the disk
    [again] = optimizer.propose(Lab(lab.root), History.load(lab), main, want=1)
    assert yaml.safe_load(again.read_text())["change"] == change


def test_a_lab_run_with_the_optimizer_planner_improves_the_toy_target(tmp_path):
    lab = optuna_lab(tmp_path / "lab", max_queue=2)
    run(lab, until_idle=True, max_experiments=14, tick=0.05)
    rows = pq.read_table(lab.experiments / "scores").to_pylist()
    [baseline] = [r for r in rows if r["kind"] == "baseline"]
    assert baseline["value"] == pytest.approx(5.0)
    x = read_params((lab.root / "score.py").read_text())["X"]
    assert abs(x - 3.0) < 1.0, x                     # main moved from X = 1 (score 5) towards 3 (score 1)
    assert any(r["promoted"] for r in rows)
    made = [h for h in hypotheses(lab).values() if h["author"] == "planner"]
    assert made and all(h["source"]["kind"] == "optimizer" for h in made)


def test_the_exploration_key_is_validated(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    config = yaml.safe_load(lab.config_path.read_text())
    config["roles"]["planner"] = {"kind": "builtin", "exploration": "grid"}
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = _run_lab("validate", cwd=lab.root)
    assert result.returncode == 1 and "roles.planner.exploration" in result.stdout
