"""A full wave with scripted fake agents in all four roles, driven by the runner itself."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml
from test_loop import toy_lab

from runner.lab import Lab
from runner.loop.reconcile import Runner
from runner.repo import gitops
from runner.roles import sandbox
from runner.state.events import read_events
from runner.state.scores import scores as read_scores
from runner.validation.validate import validate

FAKE = str(Path(__file__).with_name("fake_agent.py"))


def agent_lab(root: Path, sandbox: str = "bwrap") -> Lab:
    lab = toy_lab(root, slots=1)
    config = yaml.safe_load(lab.config_path.read_text())
    command = [sys.executable, FAKE, "{prompt_file}"]
    config["roles"] = {role: {"kind": "agent", "command": list(command), "time_limit_s": 20, "every_s": 0.1,
                              "sandbox": sandbox} for role in ("researcher", "planner", "worker", "reporter")}
    config["target"]["env"] = {}
    (lab.root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.commit_paths(lab.root, ["lab.yaml"], "agent roles")
    return Lab(lab.root)


def drive(lab: Lab, until, timeout: float = 90.0) -> Runner:
    runner = Runner(lab)
    runner.recover()
    deadline = time.time() + timeout
    while not until(lab) and time.time() < deadline:
        if not runner.reconcile():
            time.sleep(0.05)
    assert until(lab), "the wave did not finish in time"
    return runner


def experiments_done(lab: Lab) -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in lab.experiments.glob("*/experiment.yaml")]


def test_full_wave_with_agent_roles(tmp_path, monkeypatch):
    lab = agent_lab(tmp_path / "lab")

    def wave_done(lab):
        done = [e for e in experiments_done(lab) if e.get("kind") != "baseline"]
        return done and (lab.experiments / "LEADERBOARD.md").exists()

    runner = drive(lab, wave_done)
    runner.agents.stop_all()
    [exp] = [e for e in experiments_done(lab) if e.get("kind") != "baseline"][:1]
    assert exp["status"] == "finished", exp
    hyp = yaml.safe_load((lab.hypotheses / f"{exp['hypothesis']}.yaml").read_text())
    assert hyp["author"] and hyp["status"] == "accepted"        # researcher wrote it, planner accepted it
    assert [h["by"] for h in exp["history"]][:2] == ["planner", "runner"]
    assert "+X = " in (lab.experiments / exp["id"] / "patch.diff").read_text()   # the worker's edit
    scores = {r["id"]: r for r in read_scores(lab).to_pylist()}
    assert scores[exp["id"]]["value"] is not None
    assert validate(lab.root).ok
    logs = list((lab.logs / "agents").glob("*.log"))
    assert {p.name.split("-")[0] for p in logs} >= {"researcher", "planner", "worker", "reporter"}


def test_worker_editing_main_instead_of_its_worktree_is_refused(tmp_path, monkeypatch):
    """Unconfined (sandbox: none), the check after the worker exits catches the write to main."""
    monkeypatch.setenv("FAKE_AGENT_SCENARIO_WORKER", "edit-main")
    lab = agent_lab(tmp_path / "lab", sandbox="none")
    drive(lab, lambda lab: any(e.get("kind") != "baseline" for e in experiments_done(lab)))
    [exp] = [e for e in experiments_done(lab) if e.get("kind") != "baseline"][:1]
    assert exp["status"] == "failed"                            # its worktree holds no change
    assert "X = 1.0" in (lab.root / "score.py").read_text()     # main's checkout restored
    events = read_events(lab).to_pylist()
    assert any(e["kind"] == "refused" and "score.py" in (e["message"] + (e["path"] or "")) for e in events)


def test_in_the_sandbox_a_worker_cannot_write_main_at_all(tmp_path, monkeypatch):
    """Sandboxed, the same worker's write to main fails in the kernel: main never changes."""
    if sandbox.unavailable():
        pytest.skip(f"no sandbox here: {sandbox.unavailable()}")
    monkeypatch.setenv("FAKE_AGENT_SCENARIO_WORKER", "edit-main")
    lab = agent_lab(tmp_path / "lab")
    score = (lab.root / "score.py").read_bytes()
    drive(lab, lambda lab: any(e.get("kind") != "baseline" for e in experiments_done(lab)))
    [exp] = [e for e in experiments_done(lab) if e.get("kind") != "baseline"][:1]
    assert exp["status"] == "failed"
    assert (lab.root / "score.py").read_bytes() == score
    log = next((lab.logs / "agents").glob(f"worker-{exp['id']}.log")).read_text()
    assert "Read-only file system" in log                       # refused by the OS, not after the fact
