"""Agent roles through the real agent-command path, played by tests/fake_agent.py."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runner.lab import Lab
from runner.repo import gitops, worktrees
from runner.roles import gates
from runner.roles.agents import AgentRunner
from runner.roles.claims import claim, claim_holder, release_claim
from runner.roles.prompts import build_prompt
from runner.scaffold import init_lab
from runner.state import create as state
from runner.state import machine
from runner.state.events import read_events
from runner.validation.validate import validate

FAKE = Path(__file__).with_name("fake_agent.py")
TRAIN = "LEARNING_RATE = 0.001\nBATCH_SIZE = 16\n\nprint(f'val_loss: {LEARNING_RATE * BATCH_SIZE}')\n"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def make_lab(tmp_path: Path, time_limit: float = 30, **env: str) -> Lab:
    root = init_lab(tmp_path / "lab", template="blank")
    (root / "train.py").write_text(TRAIN)
    config = yaml.safe_load((root / "lab.yaml").read_text())
    config["target"]["params"] = ["LEARNING_RATE", "BATCH_SIZE"]
    command = [sys.executable, str(FAKE), "{prompt_file}"]
    config["roles"] = {role: {"kind": "agent", "command": list(command), "time_limit_s": time_limit,
                              "concurrency": 2, "env": dict(env), "sandbox": "none"}
                       for role in machine.AGENT_ROLES}  # the after-exit check (test_sandbox.py: the OS)
    (root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    git(root, "add", "-A")
    git(root, "commit", "-q", "--no-verify", "-m", "fake agents")
    return Lab(root)


def run_to_end(runner: AgentRunner, timeout: float = 30) -> list:
    outcomes = []
    deadline = time.monotonic() + timeout
    while runner.tasks and time.monotonic() < deadline:
        outcomes += runner.poll()
        time.sleep(0.05)
    assert not runner.tasks, "agents still running"
    return outcomes


def only(outcomes: list):
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def commit_all(lab: Lab, message: str = "state") -> str:
    git(lab.root, "add", "-A")
    git(lab.root, "commit", "-q", "--no-verify", "-m", message)
    return gitops.head(lab.root)


def hypothesis(lab: Lab, change: dict, status: str = "proposed") -> str:
    hyp_id, _ = state.new_hypothesis(lab, "a learning rate", change, status=status)
    return hyp_id


def assigned_entry(lab: Lab, change: dict) -> tuple[str, Path, Path, str]:
    """A committed hypothesis + queue entry (status assigned) and its worktree."""
    base = gitops.head(lab.root)
    hyp_id = hypothesis(lab, change, "accepted")
    exp_id, entry = state.new_experiment(lab, hyp_id, change, base)
    data = yaml.safe_load(entry.read_text())
    data["status"] = "assigned"
    entry.write_text(yaml.safe_dump(data, sort_keys=False))
    commit_all(lab, "assign")
    worktree = lab.worktrees / exp_id
    git(lab.root, "worktree", "add", "-q", "-b", f"exp/{exp_id}", str(worktree), base)
    return exp_id, entry, worktree, base


def events(lab: Lab, kind: str) -> list[dict]:
    return [e for e in read_events(lab).to_pylist() if e["kind"] == kind]


# -- the four roles behaving --------------------------------------------------------------
def test_researcher_writes_a_hypothesis_and_it_is_accepted(tmp_path):
    lab = make_lab(tmp_path)
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    outcome = only(run_to_end(runner))
    assert outcome.state == "finished" and outcome.exit_code == 0 and not outcome.refused
    [path] = outcome.accepted_paths
    assert path.startswith("hypotheses/h-")
    data = yaml.safe_load((lab.root / path).read_text())
    assert data["change"] == {"params": {"LEARNING_RATE": 0.002}} and data["status"] == "proposed"
    assert validate(lab.root).ok
    prompt = (lab.runtime / "agents" / "researcher" / "r1" / "prompt.md").read_text()
    assert "you are the researcher" in prompt
    assert "scenario good" in (lab.logs / "agents" / "researcher-r1.log").read_text()


def test_planner_accepts_and_queues(tmp_path):
    lab = make_lab(tmp_path)
    hyp_id = hypothesis(lab, {"params": {"BATCH_SIZE": 32}})
    commit_all(lab)
    runner = AgentRunner(lab)
    runner.start("planner", "p1", lab.root, None)
    outcome = only(run_to_end(runner))
    assert not outcome.refused, outcome.refused
    queued = [p for p in outcome.accepted_paths if p.startswith("queue/")]
    assert f"hypotheses/{hyp_id}.yaml" in outcome.accepted_paths and len(queued) == 1
    entry = yaml.safe_load((lab.root / queued[0]).read_text())
    assert entry["status"] == "queued" and entry["hypothesis"] == hyp_id
    assert yaml.safe_load((lab.hypotheses / f"{hyp_id}.yaml").read_text())["status"] == "accepted"
    assert validate(lab.root).ok


def test_worker_edits_its_worktree_and_sets_ready(tmp_path):
    lab = make_lab(tmp_path)
    exp_id, entry, worktree, base = assigned_entry(lab, {"params": {"LEARNING_RATE": 0.003}})
    runner = AgentRunner(lab)
    runner.start("worker", exp_id, worktree, entry)
    outcome = only(run_to_end(runner))
    assert outcome.accepted_paths == [f"queue/{exp_id}.yaml"] and not outcome.refused
    assert yaml.safe_load(entry.read_text())["status"] == "ready"
    assert "LEARNING_RATE = 0.003" in (worktree / "train.py").read_text()
    assert (lab.root / "train.py").read_text() == TRAIN
    files, diff = worktrees.changes_in_worktree(worktree, base)
    assert files == ["train.py"]
    assert gates.check_diff(lab, files, diff, {"params": {"LEARNING_RATE": 0.003}}) is None


def test_reporter_writes_leaderboard_and_report(tmp_path):
    lab = make_lab(tmp_path)
    runner = AgentRunner(lab)
    runner.start("reporter", "rep1", lab.root, None)
    outcome = only(run_to_end(runner))
    assert sorted(outcome.accepted_paths) == ["reports/LEADERBOARD.md", "reports/rep1.md"]
    assert not outcome.refused


# -- refusals ---------------------------------------------------------------------------------
def test_invalid_yaml_is_refused_with_an_event_and_nothing_lost(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="invalid-yaml")
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    outcome = only(run_to_end(runner))
    [(path, rule)] = outcome.refused
    assert rule == "invalid" and path.startswith("hypotheses/") and not outcome.accepted_paths
    assert not (lab.root / path).exists()
    kept = lab.runtime / "refused" / "researcher-r1" / path
    assert "title: [unclosed" in kept.read_text()
    [event] = events(lab, "refused")
    assert event["level"] == "error" and event["path"] == path
    assert "researcher" in event["message"] and "invalid" in event["message"]
    assert validate(lab.root).ok


def test_worker_writing_invalid_entry_is_restored(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="invalid-yaml")
    exp_id, entry, worktree, _ = assigned_entry(lab, {"params": {"LEARNING_RATE": 0.003}})
    before = entry.read_text()
    runner = AgentRunner(lab)
    runner.start("worker", exp_id, worktree, entry)
    outcome = only(run_to_end(runner))
    assert outcome.refused == [(f"queue/{exp_id}.yaml", "invalid")]
    assert entry.read_text() == before
    assert (lab.runtime / "refused" / f"worker-{exp_id}" / "queue" / f"{exp_id}.yaml").read_text().endswith(
        "status: [ready\n")
    assert git(lab.root, "status", "--porcelain", "--", "queue", "hypotheses") == ""


def test_protected_file_in_main_is_refused_and_restored(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="edit-protected")
    original = (lab.root / "lab.yaml").read_text()
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    outcome = only(run_to_end(runner))
    assert ("lab.yaml", "protected") in outcome.refused
    assert len(outcome.accepted_paths) == 1  # its hypothesis is still fine
    assert (lab.root / "lab.yaml").read_text() == original
    assert (lab.runtime / "refused" / "researcher-r1" / "lab.yaml").read_text().endswith("fake agent\n")


def test_worker_editing_a_protected_file_in_its_worktree_is_refused_by_the_diff_gate(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="edit-protected")
    exp_id, entry, worktree, base = assigned_entry(lab, {"params": {"LEARNING_RATE": 0.003}})
    runner = AgentRunner(lab)
    runner.start("worker", exp_id, worktree, entry)
    only(run_to_end(runner))
    files, diff = worktrees.changes_in_worktree(worktree, base)
    rejection = gates.check_diff(lab, files, diff, {"params": {"LEARNING_RATE": 0.003}})
    assert rejection.rule == "protected" and "lab.yaml" in rejection.message


def test_agent_commit_of_a_protected_file_is_reverted(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="commit-protected")
    original = (lab.root / "lab.yaml").read_text()
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    outcome = only(run_to_end(runner))
    assert ("lab.yaml", "protected") in outcome.refused
    assert outcome.restored == ["lab.yaml"] and "lab.yaml" in outcome.to_commit
    assert (lab.root / "lab.yaml").read_text() == original
    assert "committed by a fake agent" in git(lab.root, "show", "HEAD:lab.yaml")


def test_worker_editing_main_checkout_is_refused(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="edit-main")
    exp_id, entry, worktree, base = assigned_entry(lab, {"params": {"LEARNING_RATE": 0.003}})
    runner = AgentRunner(lab)
    runner.start("worker", exp_id, worktree, entry)
    outcome = only(run_to_end(runner))
    assert outcome.refused == [("train.py", "not-owned")]
    assert (lab.root / "train.py").read_text() == TRAIN
    assert "0.003" in (lab.runtime / "refused" / f"worker-{exp_id}" / "train.py").read_text()
    [event] = events(lab, "refused")
    assert event["experiment"] == exp_id and "worktree" in event["message"]
    files, diff = worktrees.changes_in_worktree(worktree, base)
    assert gates.check_diff(lab, files, diff, {"params": {"LEARNING_RATE": 0.003}}).rule == "empty"


def test_planner_queueing_a_duplicate_is_refused_naming_the_original(tmp_path):
    lab = make_lab(tmp_path)
    change = {"params": {"BATCH_SIZE": 32}}
    original, _ = state.new_experiment(lab, hypothesis(lab, change, "accepted"), change, gitops.head(lab.root))
    hypothesis(lab, change)
    commit_all(lab)
    runner = AgentRunner(lab)
    runner.start("planner", "p1", lab.root, None)
    outcome = only(run_to_end(runner))
    [(path, rule)] = outcome.refused
    assert path.startswith("queue/") and rule == "duplicate"
    [gate] = events(lab, "gate")
    assert original in gate["message"]
    assert validate(lab.root).ok


# -- duplicates, claims, hangs, failures -----------------------------------------------------
def test_duplicate_hypothesis_is_marked_naming_the_original(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="duplicate")
    original = hypothesis(lab, {"params": {"LEARNING_RATE": 0.01}})
    commit_all(lab)
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    outcome = only(run_to_end(runner))
    [path] = outcome.accepted_paths
    data = yaml.safe_load((lab.root / path).read_text())
    assert data["status"] == "duplicate"
    assert data["review"]["rule"] == "duplicate" and data["review"]["collides_with"] == original
    assert original in data["review"]["reason"]
    assert validate(lab.root).ok


def _claim_in_process(root: str, barrier, results) -> None:
    barrier.wait()
    results.put(claim(Lab(Path(root)), "e-20260101-000000-aaaaaaaa", f"worker-{os.getpid()}"))


def test_concurrent_claims_have_exactly_one_winner(tmp_path):
    lab = make_lab(tmp_path)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(str(lab.root), barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    wins = [results.get(timeout=5) for _ in procs]
    assert wins.count(True) == 1
    assert claim_holder(lab, "e-20260101-000000-aaaaaaaa").startswith("worker-")
    release_claim(lab, "e-20260101-000000-aaaaaaaa")
    assert claim(lab, "e-20260101-000000-aaaaaaaa", "again")


def test_two_worker_agents_on_one_entry_one_wins(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="claim")
    exp_id, entry, worktree, _ = assigned_entry(lab, {"params": {"LEARNING_RATE": 0.003}})
    runner = AgentRunner(lab)
    runner.start("worker", "w1", worktree, entry)
    runner.start("worker", "w2", worktree, entry)
    outcomes = run_to_end(runner)
    logs = [(lab.logs / "agents" / f"worker-{w}.log").read_text() for w in ("w1", "w2")]
    assert sum("set " + exp_id + " ready" in log for log in logs) == 1
    assert sum("claimed by another worker" in log for log in logs) == 1
    assert claim_holder(lab, exp_id) in ("w1", "w2")
    assert all(o.state == "finished" for o in outcomes)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_hanging_agent_is_killed_at_its_limit_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    lab = make_lab(tmp_path, time_limit=1.5, FAKE_AGENT_SCENARIO="hang", FAKE_AGENT_PIDS=str(pids))
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    outcome = only(run_to_end(runner, timeout=15))
    assert outcome.state == "timed_out" and "time limit" in outcome.reason
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 3
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"process {pid} survived"
    assert events(lab, "agent-timed-out")


def test_failing_agent_and_missing_command_are_recorded(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="fail")
    runner = AgentRunner(lab)
    runner.start("reporter", "rep1", lab.root, None)
    outcome = only(run_to_end(runner))
    assert outcome.state == "failed" and outcome.exit_code == 3
    config = yaml.safe_load(lab.config_path.read_text())
    config["roles"]["reporter"]["command"] = [str(tmp_path / "no-such-agent"), "{prompt_file}"]
    lab.config_path.write_text(yaml.safe_dump(config))
    commit_all(lab)
    runner = AgentRunner(Lab(lab.root))
    runner.start("reporter", "rep2", lab.root, None)
    outcome = only(run_to_end(runner))
    assert outcome.state == "failed" and "no-such-agent" in outcome.reason
    assert len(events(lab, "agent-failed")) == 2


def test_stop_all_kills_running_agents(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="hang")
    runner = AgentRunner(lab)
    task = runner.start("researcher", "r1", lab.root, None)
    time.sleep(0.3)
    [outcome] = runner.stop_all()
    assert outcome.state == "stopped" and not runner.tasks
    assert task.process.poll() is not None


# -- concurrency ---------------------------------------------------------------------------------
def test_main_checkout_writers_are_serialised_and_workers_run_in_parallel(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="hang")
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    assert not runner.can_start("planner") and not runner.can_start("reporter")
    assert runner.can_start("worker")
    runner.start("worker", "w1", lab.root, None)
    runner.start("worker", "w2", lab.root, None)
    assert runner.running("worker") == 2 and not runner.can_start("worker")  # concurrency 2
    with pytest.raises(Exception, match="cannot start"):
        runner.start("planner", "p1", lab.root, None)
    runner.stop_all()


def test_a_researchers_write_is_not_blamed_on_a_worker_that_ends_first(tmp_path):
    lab = make_lab(tmp_path)
    exp_id, entry, worktree, _ = assigned_entry(lab, {"params": {"LEARNING_RATE": 0.003}})
    known = set(lab.hypotheses.glob("*.yaml"))
    runner = AgentRunner(lab)
    runner.config("researcher")["env"] = {"FAKE_AGENT_LINGER": "4"}
    runner.start("researcher", "r1", lab.root, None)
    deadline = time.monotonic() + 10
    while set(lab.hypotheses.glob("h-*.yaml")) == known and time.monotonic() < deadline:
        time.sleep(0.05)  # until the researcher has written; it then lingers
    runner.start("worker", exp_id, worktree, entry)
    outcomes = {}
    deadline = time.monotonic() + 30
    while runner.tasks and time.monotonic() < deadline:
        for outcome in runner.poll():
            assert outcome.role == "worker" or "worker" in outcomes, "the researcher ended first"
            outcomes[outcome.role] = outcome
        time.sleep(0.05)
    assert outcomes["worker"].accepted_paths == [f"queue/{exp_id}.yaml"] and not outcomes["worker"].refused
    [hyp] = outcomes["researcher"].accepted_paths
    assert hyp.startswith("hypotheses/") and not outcomes["researcher"].refused


def test_prompt_has_skills_entry_and_task(tmp_path):
    lab = make_lab(tmp_path)
    for name in ("autolab", "autolab-worker"):
        (lab.root / "skills" / name).mkdir(parents=True, exist_ok=True)
        (lab.root / "skills" / name / "SKILL.md").write_text(f"---\nname: {name}\n---\nskill text of {name}\n")
    entry = lab.queue / "e-1.yaml"
    entry.write_text("id: e-1\nstatus: assigned\n")
    prompt = build_prompt(lab, "worker", entry, "do the thing")
    assert "skill text of autolab\n" in prompt and "skill text of autolab-worker" in prompt
    assert "status: assigned" in prompt and prompt.rstrip().endswith("do the thing")
    assert prompt.index("autolab-worker") < prompt.index("queue/e-1.yaml")


def test_recover_after_a_runner_crash_kills_orphans_and_verifies_their_writes(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="edit-protected", FAKE_AGENT_LINGER="60")
    original = (lab.root / "lab.yaml").read_text()
    script = ("import sys, time; from pathlib import Path; from runner.roles.agents import AgentRunner; "
              "from runner.lab import Lab; r = AgentRunner(Lab(Path(sys.argv[1]))); "
              "r.start('researcher', 'r1', Path(sys.argv[1]), None); time.sleep(60)")
    runner_process = subprocess.Popen([sys.executable, "-c", script, str(lab.root)])
    deadline = time.monotonic() + 20
    while (lab.root / "lab.yaml").read_text() == original and time.monotonic() < deadline:
        time.sleep(0.05)
    while not list(lab.hypotheses.glob("h-*.yaml")) and time.monotonic() < deadline:
        time.sleep(0.05)
    runner_process.kill()  # kill -9: the agent lives on in its own process group
    runner_process.wait()
    record = yaml.safe_load((lab.runtime / "agents" / "researcher" / "r1" / "run.json").read_text())
    assert _alive(record["pid"])
    [outcome] = AgentRunner(Lab(lab.root)).recover()
    assert outcome.state == "stopped" and ("lab.yaml", "protected") in outcome.refused
    assert len(outcome.accepted_paths) == 1 and outcome.accepted_paths[0].startswith("hypotheses/")
    assert (lab.root / "lab.yaml").read_text() == original
    deadline = time.monotonic() + 3
    while _alive(record["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(record["pid"])
    assert events(lab, "agent-orphan")
    assert AgentRunner(Lab(lab.root)).recover() == []


def test_researcher_may_not_accept_its_own_hypothesis(tmp_path):
    lab = make_lab(tmp_path, FAKE_AGENT_SCENARIO="self-accept")
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    outcome = only(run_to_end(runner))
    [(path, rule)] = outcome.refused
    assert path.startswith("hypotheses/") and rule == "status" and not (lab.root / path).exists()
    assert "status: accepted" in (lab.runtime / "refused" / "researcher-r1" / path).read_text()


def test_a_wave_through_all_four_agent_roles(tmp_path):
    """What the loop does with agent roles, minus the job: each outcome's paths are committed."""
    lab = make_lab(tmp_path)
    runner = AgentRunner(lab)

    def run(role, task, cwd, entry=None):
        runner.start(role, task, cwd, entry)
        outcome = only(run_to_end(runner))
        assert outcome.state == "finished" and not outcome.refused, outcome
        gitops.commit_paths(lab.root, outcome.to_commit, f"lab: {role} {task}")
        return outcome

    [hyp] = run("researcher", "r1", lab.root).accepted_paths
    planned = run("planner", "p1", lab.root).accepted_paths
    [queued] = [p for p in planned if p.startswith("queue/")]
    assert hyp in planned
    entry = lab.root / queued
    data = yaml.safe_load(entry.read_text())
    exp_id, base = data["id"], data["base"]
    assert claim(lab, exp_id, "runner")
    data["status"] = "assigned"
    entry.write_text(yaml.safe_dump(data, sort_keys=False))
    gitops.commit_paths(lab.root, [queued], "lab: assign")
    worktree = lab.worktrees / exp_id
    git(lab.root, "worktree", "add", "-q", "-b", f"exp/{exp_id}", str(worktree), base)
    run("worker", exp_id, worktree, entry)
    assert yaml.safe_load(entry.read_text())["status"] == "ready"
    files, diff = worktrees.changes_in_worktree(worktree, base)
    assert gates.check_diff(lab, files, diff, data["change"]) is None
    run("reporter", "rep1", lab.root)
    assert git(lab.root, "status", "--porcelain", "--", "hypotheses", "queue", "experiments/LEADERBOARD.md",
               "reports") == ""
    assert validate(lab.root).ok
