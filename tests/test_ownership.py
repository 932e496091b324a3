"""Every ownership rule for every role, each triggered by a real agent process (tests/fake_agent.py)
started by the runner's AgentRunner: what is refused, by which rule, and what the role may do.

A refused file is restored (or removed if new), a `refused` event names role, file and rule,
and nothing the agent was allowed to write is lost. The rights are state/machine.py's ROLE_FILES,
checked by roles/ownership.py; the events table is the runner's alone (no agent may write it).
The roles run with `sandbox: none` (test_agents.make_lab), so this is the check after they exit."""
from __future__ import annotations

import fnmatch
import time
from pathlib import Path

import pytest
import yaml

from test_agents import assigned_entry, commit_all, events, hypothesis, make_lab, only, run_to_end

from runner.loop.reconcile import Runner
from runner.repo import gitops
from runner.roles.agents import AgentRunner
from runner.state import create as state
from runner.state import machine
from runner.state.events import pending, record_event, seal
from runner.validation.validate import validate

EVENTS = "experiments/events/*.parquet"   # the runner's files: an agent may neither add one nor change one


def events_files(lab) -> list[str]:
    return sorted(lab.rel(p) for p in (lab.root / "experiments" / "events").glob("*.parquet"))


def main_lab(tmp_path, scenario: str, role: str, **env):
    """A lab with a proposed hypothesis, another one queued, two events and a report, all committed."""
    lab = make_lab(tmp_path, **{f"FAKE_AGENT_SCENARIO_{role.upper()}": scenario, **env})
    hyp = hypothesis(lab, {"params": {"LEARNING_RATE": 0.004}})
    queued = hypothesis(lab, {"params": {"BATCH_SIZE": 32}}, status="accepted")
    exp, _ = state.new_experiment(lab, queued, {"params": {"BATCH_SIZE": 32}}, gitops.head(lab.root))
    record_event(lab, "info", "note", "first")
    record_event(lab, "info", "note", "second")
    (lab.root / "reports").mkdir(exist_ok=True)
    (lab.root / "reports" / "summary.md").write_text("# Summary\n")
    commit_all(lab, "state")
    seal(lab, pending(lab))           # committed, as the runner's commit does: its next event opens a new file
    return lab, {"hyp": f"hypotheses/{hyp}.yaml", "exp": f"queue/{exp}.yaml", "report": "reports/summary.md"}


def run_agent(lab, role: str, task: str = "t1", cwd=None, entry=None):
    runner = AgentRunner(lab)
    runner.start(role, task, cwd or lab.root, entry)
    return only(run_to_end(runner))


def assert_refused(lab, outcome, role: str, pattern: str, rule: str, before: dict[str, bytes]) -> str:
    [(path, got)] = outcome.refused
    assert fnmatch.fnmatch(path, pattern) and got == rule, outcome.refused
    assert path not in outcome.accepted_paths and outcome.state == "finished"
    [event] = events(lab, "refused")
    assert event["path"] == path and role in event["message"] and f"rule {rule}" in event["message"]
    if path in before:
        assert (lab.root / path).read_bytes() == before[path], f"{path} was not restored"
    else:
        assert not (lab.root / path).exists(), f"new file {path} was not removed"
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", path) == ""
    return path


def snapshot(lab, *paths: str) -> dict[str, bytes]:
    return {p: (lab.root / p).read_bytes() for p in paths if (lab.root / p).exists()}


# -- researcher, planner, reporter: refusals ------------------------------------------------------
MAIN_ROLE_RULES = [
    # role, scenario, FAKE_AGENT_PATH, refused path, rule
    ("researcher", "write-file", "queue/e-mine.yaml", "queue/e-mine.yaml", "not-owned"),
    ("researcher", "write-file", "reports/r.md", "reports/r.md", "not-owned"),
    ("researcher", "write-file", "lab.yaml", "lab.yaml", "protected"),
    ("researcher", "invalid-yaml", None, "hypotheses/h-*.yaml", "invalid"),
    ("researcher", "delete-file", "{hyp}", "{hyp}", "deleted"),
    ("researcher", "self-accept", None, "hypotheses/h-*.yaml", "status"),
    ("researcher", "rejudge", None, "{hyp}", "status"),
    ("researcher", "write-file", "experiments/scores/e-forged.parquet", "experiments/scores/e-forged.parquet",
     "not-owned"),
    ("planner", "write-file", "{report}", "{report}", "not-owned"),
    ("planner", "propose", None, "hypotheses/h-*.yaml", "not-owned"),
    ("planner", "edit-live", None, "{exp}", "not-owned"),
    ("planner", "write-file", "lab.yaml", "lab.yaml", "protected"),
    ("planner", "invalid-yaml", None, "queue/e-*.yaml", "invalid"),
    ("planner", "delete-file", "{exp}", "{exp}", "deleted"),
    ("planner", "edit-title", None, "{hyp}", "fields"),
    ("planner", "queue-assigned", None, "queue/e-*.yaml", "status"),
    ("planner", "write-file", "experiments/e-forged/experiment.yaml", "experiments/e-forged/experiment.yaml",
     "not-owned"),
    ("reporter", "write-file", "hypotheses/h-mine.yaml", "hypotheses/h-mine.yaml", "not-owned"),
    ("reporter", "write-file", "train.py", "train.py", "not-owned"),
    ("reporter", "write-file", "lab.yaml", "lab.yaml", "protected"),
    ("reporter", "delete-file", "{report}", "{report}", "deleted"),
    ("reporter", "write-file", "experiments/scores/e-forged.parquet", "experiments/scores/e-forged.parquet",
     "not-owned"),
]


@pytest.mark.parametrize("role, scenario, target, refused, rule", MAIN_ROLE_RULES,
                         ids=[f"{r[0]}-{r[4]}-{r[1]}" for r in MAIN_ROLE_RULES])
def test_main_checkout_roles_are_refused_what_they_do_not_own(tmp_path, role, scenario, target, refused, rule):
    lab, paths = main_lab(tmp_path, scenario, role)
    env = {"FAKE_AGENT_PATH": target.format(**paths)} if target else {}
    lab.config["roles"][role]["env"].update(env)
    before = snapshot(lab, refused.format(**paths), *events_files(lab), "lab.yaml", *paths.values())
    outcome = run_agent(lab, role)
    assert_refused(lab, outcome, role, refused.format(**paths), rule, before)
    assert validate(lab.root).ok


# -- the worker: refusals ---------------------------------------------------------------------------
WORKER_RULES = [
    ("write-file", "notes.md", "notes.md", "not-owned"),
    ("write-file", "lab.yaml", "lab.yaml", "protected"),
    ("mark-ready", "{other}", "{other}", "not-owned"),
    ("invalid-yaml", None, "{own}", "invalid"),
    ("delete-file", "{own}", "{own}", "deleted"),
    ("edit-change", None, "{own}", "fields"),
    ("set-running", None, "{own}", "status"),
]


@pytest.mark.parametrize("scenario, target, refused, rule", WORKER_RULES,
                         ids=[f"worker-{r[3]}-{r[0]}" for r in WORKER_RULES])
def test_a_worker_is_refused_anything_but_its_own_entry_set_ready(tmp_path, scenario, target, refused, rule):
    lab, paths = main_lab(tmp_path, scenario, "worker")
    exp_id, entry, worktree, _ = assigned_entry(lab, {"params": {"LEARNING_RATE": 0.003}})
    paths.update(own=f"queue/{exp_id}.yaml", other=paths["exp"])
    if target:
        lab.config["roles"]["worker"]["env"]["FAKE_AGENT_PATH"] = target.format(**paths)
    before = snapshot(lab, refused.format(**paths), *events_files(lab), "lab.yaml", *paths.values())
    outcome = run_agent(lab, "worker", exp_id, worktree, entry)
    assert_refused(lab, outcome, "worker", refused.format(**paths), rule, before)
    assert validate(lab.root).ok


# -- the events table: the runner's alone ------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["append-event", "truncate-events", "corrupt-events"])
@pytest.mark.parametrize("role", machine.AGENT_ROLES)
def test_no_role_may_write_the_events_table(tmp_path, role, scenario):
    """Appending, truncating or replacing it: refused as not-owned, the table put back as it was."""
    lab, paths = main_lab(tmp_path, scenario, role)
    start = {}
    if role == "worker":
        exp_id, entry, worktree, _ = assigned_entry(lab, {"params": {"LEARNING_RATE": 0.003}})
        start = {"task": exp_id, "cwd": worktree, "entry": entry}
    before = snapshot(lab, *events_files(lab))
    outcome = run_agent(lab, role, **start)
    assert_refused(lab, outcome, role, EVENTS, "not-owned", before)
    assert validate(lab.root).ok


# -- what each role may do -----------------------------------------------------------------------------

def test_a_researcher_may_refine_its_hypothesis_without_judging_it(tmp_path):
    lab, paths = main_lab(tmp_path, "refine", "researcher")
    outcome = run_agent(lab, "researcher")
    assert outcome.accepted_paths == [paths["hyp"]] and outcome.refused == []
    data = yaml.safe_load((lab.root / paths["hyp"]).read_text())
    assert data["rationale"] == "fake agent: a better argument" and data["status"] == "proposed"


def test_a_planner_may_judge_a_hypothesis_and_queue_it(tmp_path):
    lab, paths = main_lab(tmp_path, "good", "planner")
    outcome = run_agent(lab, "planner")
    assert outcome.refused == [] and paths["hyp"] in outcome.accepted_paths
    [queued] = [p for p in outcome.accepted_paths if p.startswith("queue/")]
    assert yaml.safe_load((lab.root / queued).read_text())["status"] == "queued"


@pytest.mark.parametrize("role, path", [("researcher", "hypotheses/h-x.yaml"), ("planner", "queue/e-x.yaml"),
                                        ("planner", "hypotheses/h-x.yaml"), ("reporter", "reports/a/b.md"),
                                        ("worker", "queue/e-mine.yaml")])
def test_the_rights_table_names_each_roles_files(role, path):
    assert machine.rule_for(role, path, "e-mine")
    others = {"researcher": "reports/r.md", "planner": "reports/r.md", "reporter": "hypotheses/h-x.yaml",
              "worker": "queue/e-x.yaml"}
    for path in (others[role], "train.py", "experiments/events/20261130T075000Z-0a1b2c3d.parquet",
                 "experiments/scores/e-x.parquet", "experiments/scores.parquet", "experiments/LEADERBOARD.md",
                 "hypotheses/sub/h-x.yaml"):
        assert machine.rule_for(role, path, "e-mine") is None, path


# -- the gates, as the planner and the researcher meet them -------------------------------------------
def test_planner_queueing_two_changes_at_once_is_refused_by_single_change(tmp_path):
    lab, _ = main_lab(tmp_path, "good", "planner")
    gitops.run_git(lab.root, "rm", "-q", "-r", "--", "hypotheses")
    hyp = hypothesis(lab, {"params": {"LEARNING_RATE": 0.01, "BATCH_SIZE": 64}})
    commit_all(lab)
    outcome = run_agent(lab, "planner")
    [(path, rule)] = outcome.refused
    assert path.startswith("queue/") and rule == "single-change"
    assert outcome.accepted_paths == [f"hypotheses/{hyp}.yaml"]              # the review itself is fine


def test_planner_queueing_a_rejected_change_is_refused_by_do_not_repeat(tmp_path):
    lab, _ = main_lab(tmp_path, "good", "planner")
    gitops.run_git(lab.root, "rm", "-q", "-r", "--", "hypotheses", "queue")
    lab.queue.mkdir()
    rejected = hypothesis(lab, {"params": {"BATCH_SIZE": 8}}, status="rejected")
    hypothesis(lab, {"params": {"BATCH_SIZE": 8}})
    commit_all(lab)
    outcome = run_agent(lab, "planner")
    [(path, rule)] = outcome.refused
    assert path.startswith("queue/") and rule == "do-not-repeat"
    [gate] = events(lab, "gate")
    assert rejected in gate["message"]


def test_planner_queueing_a_near_copy_on_the_same_base_is_refused_by_near_duplicate(tmp_path):
    lab, _ = main_lab(tmp_path, "good", "planner")
    gitops.run_git(lab.root, "rm", "-q", "-r", "--", "hypotheses", "queue")
    hypothesis(lab, {"params": {"LEARNING_RATE": 0.00201}})
    commit_all(lab)
    tried = hypothesis(lab, {"params": {"LEARNING_RATE": 0.002}}, status="accepted")
    near, _ = state.new_experiment(lab, tried, {"params": {"LEARNING_RATE": 0.002}}, gitops.head(lab.root))
    outcome = run_agent(lab, "planner")          # the planner's base is HEAD too: the same base
    [(path, rule)] = outcome.refused
    assert path.startswith("queue/") and rule == "near-duplicate"
    assert near in events(lab, "gate")[0]["message"]


@pytest.mark.parametrize("forced, status, rule", [("LEARNING_RATE=0.004", "rejected", "do-not-repeat"),
                                                  ("NOT_A_PARAM=1", "rejected", "single-change"),
                                                  ("BATCH_SIZE=32", "duplicate", "duplicate")])
def test_a_researchers_hypothesis_failing_a_gate_is_kept_but_marked(tmp_path, forced, status, rule):
    lab, paths = main_lab(tmp_path, "good", "researcher", FAKE_AGENT_PARAM=forced)
    data = yaml.safe_load((lab.root / paths["hyp"]).read_text())
    data.update(status="rejected", review={"by": "planner", "at": data["created"], "reason": "no"})
    (lab.root / paths["hyp"]).write_text(yaml.safe_dump(data, sort_keys=False))
    commit_all(lab)
    outcome = run_agent(lab, "researcher")
    [path] = outcome.accepted_paths
    assert outcome.refused == [] and path != paths["hyp"]
    marked = yaml.safe_load((lab.root / path).read_text())
    review = marked["review"]
    assert marked["status"] == status and review["rule"] == rule and review["by"] == "gate" and review["at"]
    [gate] = events(lab, "gate")
    assert (gate["hypothesis"], gate["path"]) == (marked["id"], path) and review["reason"] in gate["message"]
    if rule != "single-change":                        # what it repeats is named
        assert review["collides_with"] in (Path(paths["hyp"]).stem, Path(paths["exp"]).stem)
    assert validate(lab.root).ok


def test_a_worker_may_set_its_own_entry_ready(tmp_path):
    lab, _ = main_lab(tmp_path, "good", "worker")
    exp_id, entry, worktree, _ = assigned_entry(lab, {"params": {"LEARNING_RATE": 0.003}})
    outcome = run_agent(lab, "worker", exp_id, worktree, entry)
    assert outcome.accepted_paths == [f"queue/{exp_id}.yaml"] and outcome.refused == []
    data = yaml.safe_load(entry.read_text())
    assert data["status"] == "ready" and data["history"][-1]["by"] == "worker"


# -- through the runner's loop --------------------------------------------------------------------------
def test_the_loop_runs_a_planner_agent_and_undoes_its_rewrite_of_a_hypothesis(tmp_path):
    lab, paths = main_lab(tmp_path, "edit-title", "planner")
    gitops.run_git(lab.root, "rm", "-q", "-r", "--", "queue")
    config = yaml.safe_load(lab.config_path.read_text())
    for role in ("researcher", "worker", "reporter"):
        config["roles"][role] = {"kind": "off"}
    config["roles"]["planner"]["every_s"] = 0.1
    config["target"]["command"] = ["python", "train.py"]
    config["objective"].update(metric="val_loss", direction="minimize")
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    state.new_experiment(lab, None, {}, gitops.head(lab.root), kind="baseline", priority=100)
    commit_all(lab, "only the planner is an agent; a baseline queued")
    before = (lab.root / paths["hyp"]).read_bytes()
    runner = Runner(type(lab)(lab.root))
    deadline = time.monotonic() + 60
    while not (events(lab, "refused") and runner.agents.idle()) and time.monotonic() < deadline:
        if not runner.reconcile():
            time.sleep(0.05)
    [event] = events(lab, "refused")
    assert event["path"] == paths["hyp"] and "planner agent" in event["message"] and "rule fields" in event["message"]
    assert (lab.root / paths["hyp"]).read_bytes() == before
    runner.reconcile()
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", "queue", "hypotheses") == ""
