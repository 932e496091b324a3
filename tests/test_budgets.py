"""Accounting, budgets and stopping rules on real labs: agent runs accounted from what a scripted agent
prints in each CLI's JSON style, an HF Jobs lab (the stand-in) stopped by its dollar budget and resumed by
raising it, a lab stopped when no experiment beats main, and one stopped when main reaches its target."""
from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest
import yaml
from fake_agent import USAGE
from hf_jobs_standin import hf_jobs, keep_client_on_loopback  # noqa: F401 (fixtures)
from test_agents import make_lab as agents_lab
from test_agents import only, run_to_end
from test_backend_hf_jobs import events, lab_run, remote_lab
from test_loop import finished, queue, toy_lab

from runner.lab import Lab
from runner.loop.passlog import Committer, PassLog
from runner.loop.reconcile import Runner
from runner.loop.run import run
from runner.repo import gitops
from runner.roles.agents import AgentRunner
from runner.state import create
from runner.state.accounting import record_agent_run, spend
from runner.validation.validate import validate


def set_config(lab: Lab, **sections) -> Lab:
    """Merge sections into lab.yaml (one level deep) and commit it; a fresh Lab reads it."""
    config = yaml.safe_load(lab.config_path.read_text())
    for name, value in sections.items():
        config[name] = {**(config.get(name) or {}), **value} if isinstance(value, dict) else value
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.commit_paths(lab.root, ["lab.yaml"], "lab.yaml: limits")
    return Lab(lab.root)


def rows(path) -> list[dict]:
    return pq.read_table(path).to_pylist() if path.exists() else []


def kinds(lab: Lab, kind: str) -> list[str]:
    return [e["message"] for e in events(lab) if e["kind"] == kind]


def status_lines(run_lab, lab: Lab) -> list[str]:
    out = run_lab("-C", lab.root, "status", cwd=lab.root)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


# -- agent runs ----------------------------------------------------------------------------------
CLAUDE_IN = USAGE["input"] + USAGE["cache_write"] + USAGE["cache_read"]


def test_an_agent_runs_file_rides_along_with_the_runners_next_commit_once(tmp_path):
    """Each agent run is a file of its own (it merges as a file); the runner's next commit takes it."""
    lab = agents_lab(tmp_path)
    path = record_agent_run(lab, {"role": "planner", "task": "p1", "state": "finished",
                                  "started": datetime.now(timezone.utc)})
    assert path.parent == lab.experiments / "agent_runs"
    assert Committer(lab).commit(PassLog()) is not None
    assert gitops.run_git(lab.root, "ls-tree", "-r", "--name-only", "HEAD", "--", "experiments/agent_runs") \
        == lab.rel(path)
    assert Committer(lab).commit(PassLog()) is None                  # taken once: nothing left to commit
    [row] = pq.read_table(lab.experiments / "agent_runs").to_pylist()
    assert (row["role"], row["task"]) == ("planner", "p1")


@pytest.mark.parametrize("style,tokens_in,tokens_out,cost", [
    ("claude", CLAUDE_IN, USAGE["output"], USAGE["cost"]),
    ("codex", USAGE["input"] + USAGE["cache_read"], 849, None),      # Codex reports no cost
    ("opencode", CLAUDE_IN, 849, USAGE["cost"]),
    (None, None, None, None),                                        # a CLI that prints no usage
])
def test_an_agent_run_is_accounted_with_the_tokens_and_cost_its_cli_printed(tmp_path, style, tokens_in, tokens_out,
                                                                              cost):
    lab = agents_lab(tmp_path, **({"FAKE_AGENT_USAGE": style} if style else {}))
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    assert only(run_to_end(runner)).state == "finished"
    (row,) = rows(lab.experiments / "agent_runs")
    assert (row["role"], row["task"], row["state"], row["exit_code"]) == ("researcher", "r1", "finished", 0)
    assert row["agent"] == "python" + sys.executable.rsplit("python", 1)[1] and row["duration_s"] > 0
    assert (row["tokens_in"], row["tokens_out"]) == (tokens_in, tokens_out)
    assert row["tokens_cached"] == (USAGE["cache_read"] if style else None)
    assert row["cost_usd"] == (pytest.approx(cost) if cost is not None else None)
    assert spend(lab).agent_tokens == (tokens_in or 0) + (tokens_out or 0)
    assert validate(lab.root).ok


def test_an_agent_token_budget_stops_agents_and_dispatch_until_it_is_raised(tmp_path, run_lab):
    lab = agents_lab(tmp_path, FAKE_AGENT_USAGE="claude")
    runner = AgentRunner(lab)
    runner.start("researcher", "r1", lab.root, None)
    run_to_end(runner)
    hyp, _ = create.new_hypothesis(lab, "LR up", {"params": {"LEARNING_RATE": 0.002}}, status="accepted")
    exp_id, entry = create.new_experiment(lab, hyp, {"params": {"LEARNING_RATE": 0.002}}, gitops.head(lab.root))
    gitops.commit_paths(lab.root, ["hypotheses", "queue", "experiments"], "queue one")
    lab = set_config(lab, limits={"budget": {"agent_tokens": 5000}})
    runner = Runner(lab)
    try:
        runner.reconcile()
        assert not runner.agents.tasks                                   # no agent started
        assert [p.name for p in lab.queue.glob("*.yaml")] == [entry.name]  # nothing dispatched, no baseline queued
        assert yaml.safe_load(entry.read_text())["status"] == "queued"
        (message,) = kinds(lab, "budget")
        assert message.startswith(f"budget agent_tokens 5000 reached: spent {CLAUDE_IN + USAGE['output']:.4g} agent")
        assert f"stopped: {message}" in status_lines(run_lab, lab)
        runner.reconcile()
        assert len(kinds(lab, "budget")) == 1                            # once, not every pass
        set_config(lab, limits={"budget": {"agent_tokens": 100000}})
        runner.reconcile()
        assert kinds(lab, "resumed")
        assert len(list(lab.queue.glob("*.yaml"))) > 1 or runner.agents.tasks  # a baseline queued or an agent started
        assert not any(line.startswith("stopped:") for line in status_lines(run_lab, lab))
    finally:
        runner.agents.stop_all()


# -- a dollar budget on HF Jobs ---------------------------------------------------------------------
class Hook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_dollar_budget_stops_an_hf_jobs_lab_after_its_first_job(tmp_path, hf_jobs, run_lab, hook):
    lab = remote_lab(tmp_path, hf_jobs, slots=1, sleep=1.0)
    lab = set_config(lab, limits={"budget": {"usd": 0.01}},
                     backends={"hf_jobs": {**lab.config["backends"]["hf_jobs"], "prices": {"cpu-basic": 60.0}}},
                     reporting={"webhook": {"url": f"http://127.0.0.1:{hook.server_port}/hook", "min_level": "warn"}})
    base = queue(lab, None, baseline=True)
    waiting = [queue(lab, {"X": 2.5}, "X to 2.5"), queue(lab, {"X": 2.8}, "X to 2.8")]
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    lab_run(run_lab, lab, hf_jobs)

    assert finished(lab, base)["status"] == "finished" and len(hf_jobs.jobs) == 1     # one job, then stopped
    assert all(yaml.safe_load((lab.queue / f"{e}.yaml").read_text())["status"] == "queued" for e in waiting)
    (job,) = rows(lab.experiments / "jobs")
    assert (job["experiment"], job["backend"], job["flavor"], job["gpus"]) == (base, "hf_jobs", "cpu-basic", 0)
    assert job["seconds"] >= 1.0 and job["usd"] == pytest.approx(job["seconds"] * 60.0 / 3600) and job["usd"] > 0.01
    (message,) = kinds(lab, "budget")
    assert message.startswith(f"budget usd 0.01 reached: spent {job['usd']:.4g} USD")
    assert [b["kind"] for b in hook.bodies] == ["budget"] and hook.bodies[0]["message"] == message
    lines = status_lines(run_lab, lab)
    assert f"stopped: {message}" in lines
    assert any(line.startswith(f"spend: ${job['usd']:.4g} of 0.01") for line in lines)
    assert any(line.strip().startswith("backend hf_jobs: 1 jobs") for line in lines)
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", "experiments") == ""   # tables committed

    set_config(lab, limits={"budget": {"usd": 10.0}})                  # raising it resumes
    lab_run(run_lab, Lab(lab.root), hf_jobs)
    assert [finished(lab, e)["status"] for e in waiting] == ["finished", "finished"]
    assert len(hf_jobs.jobs) == 3 and len(rows(lab.experiments / "jobs")) == 3
    assert not any(line.startswith("stopped:") for line in status_lines(run_lab, lab))


# -- no gain, target -----------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["stop", "alert"])
def test_stop_after_no_gain_stops_a_lab_whose_target_never_improves(tmp_path, run_lab, action):
    rule = 3 if action == "stop" else {"experiments": 3, "action": "alert"}
    lab = toy_lab(tmp_path / "lab", slots=1, stop_after_no_gain=rule)
    queue(lab, None, baseline=True)
    worse = [queue(lab, {"X": -float(i)}, f"X to -{i}") for i in range(1, 6)]
    run(lab, until_idle=True, plan=False, tick=0.1)

    done = [e for e in worse if (lab.experiments / e / "experiment.yaml").exists()]
    assert all(not finished(lab, e)["result"]["promoted"] for e in done)
    assert done == (worse[:3] if action == "stop" else worse)
    (message,) = kinds(lab, "no-gain")
    assert message.startswith("no promotion in 3 finished experiments since the start: 3 finished")
    assert f"{'stopped' if action == 'stop' else 'alert'}: {message.split(':')[0]}" in "\n".join(status_lines(run_lab, lab))


def test_the_lab_stops_when_main_reaches_its_target(tmp_path, run_lab):
    lab = toy_lab(tmp_path / "lab", slots=1)
    lab = set_config(lab, objective={"target": 2.0})
    queue(lab, None, baseline=True)
    reaches = queue(lab, {"X": 2.5}, "X to 2.5")       # 1.25: promoted, and below the target
    later = queue(lab, {"X": 2.9}, "X to 2.9")
    run(lab, until_idle=True, plan=False, tick=0.1)
    assert finished(lab, reaches)["result"]["promoted"]
    assert not (lab.experiments / later).exists() and (lab.queue / f"{later}.yaml").exists()
    (message,) = kinds(lab, "target-reached")
    assert message.startswith("main reached the target val_bpb 2: val_bpb 1.25")
    assert f"stopped: {message}" in status_lines(run_lab, lab)
