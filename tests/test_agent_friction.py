"""Where a coding agent that ran a lab from the skills alone had to guess or work around:
each point as a test through the real CLI, the shipped skills and a scripted outside agent."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import _run_lab, lab_executable
from test_loop import toy_lab

from runner.files.yamlio import write_yaml
from runner.lab import Lab
from runner.loop.run import run
from runner.repo import gitops
from runner.scaffold import init_lab
from runner.validation.schema import load as load_schema

REPO = Path(__file__).resolve().parents[1]
SKILLS = REPO / "skills"


def cli(lab: Lab, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _run_lab(*args, cwd=lab.root, env=env)


def first_word(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()[0]


# 1. protected files: what lab.yaml says, and the template's list is the skill's example -------------
@pytest.mark.parametrize("template", ["blank", "tiny-gpt"])
def test_templates_protect_the_skills_and_the_skill_says_so(tmp_path, template):
    lab = Lab(init_lab(tmp_path / "lab", template=template))
    protected = lab.config["target"]["protected"]
    assert {"skills/", "lab.yaml", "schemas/", "AGENTS.md"} <= set(protected)
    rule = (SKILLS / "autolab" / "SKILL.md").read_text()
    assert "what `lab.yaml` lists under `target.protected`" in rule
    assert all(name.rstrip("/") in rule for name in protected)


# 2. --source: one list, from the schema --------------------------------------------------------------
def test_source_choices_come_from_the_schema_and_the_skills_list_the_same(lab):
    kinds = load_schema("hypothesis")["properties"]["source"]["properties"]["kind"]["enum"]
    helped = cli(lab, "hypothesis", "new", "--help").stdout
    assert f"[{'|'.join(kinds)}]" in helped
    for doc in (SKILLS / "autolab-researcher" / "SKILL.md", SKILLS / "autolab" / "references" / "fields.md"):
        text = doc.read_text()
        assert all(f"`{kind}`" in text for kind in kinds), doc


# 3. the help says what the base defaults to ------------------------------------------------------------
def test_queue_add_help_names_the_base_the_runner_uses(lab):
    helped = re.sub(r"\s+", " ", cli(lab, "queue", "add", "--help").stdout)
    assert "main's HEAD" not in helped and "last changed the target" in helped


# 4. attribution: history says who acted ------------------------------------------------------------------
def test_the_role_and_agent_in_the_environment_are_recorded(lab):
    env = {"LAB_ROLE": "researcher", "LAB_AGENT_ID": "agent-7"}
    hyp = first_word(cli(lab, "hypothesis", "new", "--title", "t", "--param", "LEARNING_RATE=0.002", env=env))
    data = yaml.safe_load((lab.hypotheses / f"{hyp}.yaml").read_text())
    assert (data["author"], data["agent"]) == ("researcher", "agent-7")
    exp = first_word(cli(lab, "queue", "add", "--hypothesis", hyp, env={"LAB_ROLE": "planner"}))
    entry = yaml.safe_load((lab.queue / f"{exp}.yaml").read_text())
    assert entry["history"][0]["by"] == "planner"
    plain = first_word(cli(lab, "queue", "add", "--hypothesis", hyp))
    assert yaml.safe_load((lab.queue / f"{plain}.yaml").read_text())["history"][0]["by"] == "human"


# 5. a command to review a hypothesis ---------------------------------------------------------------------
def test_hypothesis_review_applies_the_gates_and_writes_the_review(lab):
    env = {"LAB_ROLE": "planner", "LAB_AGENT_ID": "planner-1"}
    ok = first_word(cli(lab, "hypothesis", "new", "--title", "a", "--param", "LEARNING_RATE=0.002"))
    same = first_word(cli(lab, "hypothesis", "new", "--title", "b", "--param", "LEARNING_RATE=0.002"))
    two = first_word(cli(lab, "hypothesis", "new", "--title", "c", "--param", "LEARNING_RATE=0.002",
                         "--param", "BATCH_SIZE=16"))
    accepted = cli(lab, "hypothesis", "review", ok, "--accept", "--note", "first of its kind", env=env)
    assert accepted.returncode == 0 and accepted.stdout.strip() == f"{ok}: accepted"
    review = yaml.safe_load((lab.hypotheses / f"{ok}.yaml").read_text())["review"]
    assert (review["by"], review["agent"], review["reason"]) == ("planner", "planner-1", "first of its kind")
    refused = cli(lab, "hypothesis", "review", same, "--accept", env=env)
    assert refused.returncode == 2 and "the gates refuse it: duplicate" in refused.stderr
    assert yaml.safe_load((lab.hypotheses / f"{same}.yaml").read_text())["status"] == "proposed"
    marked = cli(lab, "hypothesis", "review", same, "--duplicate-of", ok, env=env)
    data = yaml.safe_load((lab.hypotheses / f"{same}.yaml").read_text())
    assert marked.returncode == 0 and data["status"] == "duplicate" and data["review"]["collides_with"] == ok
    assert cli(lab, "hypothesis", "review", two, "--reject", env=env).returncode == 2   # a rejection names a rule
    rejected = cli(lab, "hypothesis", "review", two, "--reject", "--rule", "single-change", env=env)
    assert rejected.returncode == 0
    assert yaml.safe_load((lab.hypotheses / f"{two}.yaml").read_text())["review"]["rule"] == "single-change"
    again = cli(lab, "hypothesis", "review", ok, "--reject", "--rule", "stale", env=env)
    assert again.returncode == 2 and "accepted -> rejected" in again.stderr   # only proposed ones are judged
    assert cli(lab, "validate").returncode == 0


# 6. an outside worker's way in: lab work next / done / give-up, while `lab run` runs ----------------------
OUTSIDE_WORKER = textwrap.dedent('''\
    import json, os, subprocess, sys, time
    lab = sys.argv[1]
    deadline = time.time() + 60
    while time.time() < deadline:
        got = subprocess.run(["lab", "-C", lab, "work", "next", "--json"], capture_output=True, text=True)
        if got.returncode == 0:
            break
        time.sleep(0.2)
    else:
        sys.exit("no work came")
    work = json.loads(got.stdout)
    os.environ.update(work["env"])
    score = os.path.join(work["worktree"], "score.py")
    name, value = next(iter(work["change"]["params"].items()))
    text = open(score).read().replace("X = 1.0", f"{name} = {value}")
    open(score, "w").write(text)
    done = subprocess.run(["lab", "-C", lab, "work", "done", work["id"]], capture_output=True, text=True)
    print(done.stdout, done.stderr, flush=True)
    sys.exit(done.returncode)
''')


def test_an_outside_worker_takes_and_hands_back_work_while_the_runner_runs(tmp_path):
    lab = toy_lab(tmp_path / "lab", worker="off")
    agent = tmp_path / "outside_worker.py"
    agent.write_text(OUTSIDE_WORKER)
    hyp = first_word(cli(lab, "hypothesis", "new", "--title", "X to 2.5", "--param", "X=2.5"))
    exp = first_word(cli(lab, "queue", "add", "--hypothesis", hyp))
    env = {**os.environ, "PATH": f"{Path(lab_executable()).parent}:{os.environ['PATH']}", "LAB_AGENT_ID": "outsider"}
    worker = subprocess.Popen([sys.executable, str(agent), str(lab.root)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    run(lab, until_idle=True, plan=False, tick=0.1, deadline=time.monotonic() + 120)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    record = yaml.safe_load((lab.experiments / exp / "experiment.yaml").read_text())
    assert record["status"] == "finished" and record["result"]["promoted"] is True
    assert [h["by"] for h in record["history"]][:3] == ["human", "runner", "worker"]
    assert "X = 2.5" in (lab.root / "score.py").read_text()


def test_work_next_prints_the_environment_and_give_up_hands_the_entry_back(tmp_path):
    lab = toy_lab(tmp_path / "lab", worker="off")
    hyp = first_word(cli(lab, "hypothesis", "new", "--title", "X", "--param", "X=2.0"))
    exp = first_word(cli(lab, "queue", "add", "--hypothesis", hyp))
    assert cli(lab, "work", "next").returncode == 1                       # nothing assigned yet
    run(lab, once=True, plan=False)
    got = cli(lab, "work", "next", env={"LAB_AGENT_ID": "w1"})
    assert got.returncode == 0 and got.stdout.startswith(exp)
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", got.stdout, re.M))
    assert exports["LAB_TASK"] == exp and exports["LAB_CACHE"] == str(lab.runtime / "cache")
    assert cli(lab, "work", "next", "--json", env={"LAB_AGENT_ID": "w2"}).returncode == 1   # claimed by w1
    quit_ = cli(lab, "work", "give-up", exp, "--reason", "the constant does not exist")
    assert quit_.returncode == 0
    entry = yaml.safe_load((lab.queue / f"{exp}.yaml").read_text())
    assert entry["status"] == "cancelled" and "does not exist" in entry["history"][-1]["note"]
    assert cli(lab, "work", "done", exp).returncode == 2                  # no longer assigned: leave it


# 7. a smoke run's cache stays in the lab ---------------------------------------------------------------
def test_jobs_get_a_cache_inside_the_lab(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    (lab.root / "score.py").write_text('import os\nprint("cache", os.environ["LAB_CACHE"])\nprint("val_bpb: 1.0")\n')
    gitops.commit_paths(lab.root, ["score.py"], "print the cache")
    assert cli(lab, "baseline", "--repeats", "1").returncode == 0
    [log] = list(lab.experiments.glob("*/log.txt"))
    assert f"cache {lab.runtime / 'cache'}" in log.read_text()


# 8. an assigned entry whose base moved never runs --------------------------------------------------------
def test_an_assigned_entry_whose_base_moved_is_made_stale_before_it_runs(tmp_path):
    lab = toy_lab(tmp_path / "lab", worker="off")
    hyp = first_word(cli(lab, "hypothesis", "new", "--title", "X", "--param", "X=2.0"))
    exp = first_word(cli(lab, "queue", "add", "--hypothesis", hyp))
    run(lab, once=True, plan=False)
    assert yaml.safe_load((lab.queue / f"{exp}.yaml").read_text())["status"] == "assigned"
    (lab.root / "score.py").write_text((lab.root / "score.py").read_text().replace("X = 1.0", "X = 2.9"))
    gitops.commit_paths(lab.root, ["score.py"], "main moves (a promotion elsewhere)")
    run(lab, once=True, plan=False)
    record = yaml.safe_load((lab.experiments / exp / "experiment.yaml").read_text())
    assert record["status"] == "stale" and "main moved before it ran" in record["result"]["reason"]
    [again] = [yaml.safe_load(p.read_text()) for p in lab.queue.glob("*.yaml")
               if yaml.safe_load(p.read_text()).get("requeued_from") == exp]
    moved = gitops.run_git(lab.root, "log", "-1", "--format=%H", "--", "score.py")   # main's new target
    assert again["change"] == {"params": {"X": 2.0}} and again["base"] == moved


# 10. what an outside reporter writes is committed ------------------------------------------------------
def test_an_outside_reporters_files_are_committed(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    (lab.root / "reports").mkdir()
    (lab.root / "reports" / "REPORT.md").write_text("# what happened\n")
    run(lab, once=True, plan=False)
    assert gitops.run_git(lab.root, "show", "HEAD:reports/REPORT.md") == "# what happened"


# 11. the reporter's snapshot: only finished results are "valid", nothing cut silently -------------------
def test_snapshot_lists_only_finished_results_and_keeps_reasons_whole(tmp_path):
    from runner.state.scores import write_scores
    lab = toy_lab(tmp_path / "lab")
    long_reason = "beat its base by more than 0.01 but main moved: re-queued on main as e-20261130-000000-abcdefgh"
    rows = [dict(id="e-fin", kind="experiment", status="finished", value=2.0, promoted=False),
            dict(id="e-stale", kind="experiment", status="stale", value=1.0, promoted=False, reason=long_reason)]
    write_scores(lab, rows)
    script = lab.root / "skills" / "autolab-reporter" / "scripts" / "snapshot.sh"
    env = {**os.environ, "PATH": f"{Path(lab_executable()).parent}:{os.environ['PATH']}", "LAB_ROOT": str(lab.root)}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    best = out.stdout.split("## leaderboard")[1].split("##")[0]
    assert "e-fin" in best and "e-stale" not in best
    assert long_reason in out.stdout


# 12. one list of commands ----------------------------------------------------------------------------
def test_every_lab_command_the_skills_use_is_in_the_one_list_and_exists(lab):
    rule = (SKILLS / "autolab" / "SKILL.md").read_text()
    table = rule.split("## Commands you may run", 1)[1]
    listed = set(re.findall(r"`lab ([a-z-]+)", table))
    used = set()
    for doc in SKILLS.glob("autolab*/**/*.md"):
        used |= set(re.findall(r"`lab (?:-C \S+ )?([a-z-]+)", doc.read_text()))
    assert used <= listed | {"run", "baseline", "demo", "init"}, used - listed
    helped = cli(lab, "--help").stdout
    assert all(re.search(rf"^  {verb}\b", helped, re.M) for verb in listed), listed
    agents_md = (lab.root / "AGENTS.md").read_text()
    assert "Commands you may run" in agents_md and "lab query" not in agents_md   # points at the one list


# 13. every constant of the target is declared --------------------------------------------------------
def test_validate_warns_about_an_undeclared_constant_and_still_passes(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    (lab.root / "score.py").write_text((lab.root / "score.py").read_text().replace("SLEEP = 0.0", "SLEEP = 0.0\nWIDTH = 64"))
    result = cli(lab, "validate")
    assert result.returncode == 0
    assert re.search(r"^warning: score.py:\d+: WIDTH: a top-level constant neither tuned", result.stdout, re.M)
    assert "SLEEP:" in result.stdout and "X:" not in result.stdout        # X is a declared param
    config = yaml.safe_load(lab.config_path.read_text())
    config["target"]["free"] = ["WIDTH", "SLEEP"]
    write_yaml(lab.config_path, config)
    assert "warning" not in cli(lab, "validate").stdout


# 14. a hypothesis accepted by the agent that wrote it is named ------------------------------------------
def test_self_review_is_reported_in_status(lab):
    own = {"LAB_AGENT_ID": "same-agent"}
    hyp = first_word(cli(lab, "hypothesis", "new", "--title", "t", "--param", "LEARNING_RATE=0.002", env=own))
    other = first_word(cli(lab, "hypothesis", "new", "--title", "u", "--param", "LEARNING_RATE=0.004", env=own))
    assert cli(lab, "hypothesis", "review", hyp, "--accept", env=own).returncode == 0
    assert cli(lab, "hypothesis", "review", other, "--accept", env={"LAB_AGENT_ID": "second-look"}).returncode == 0
    info = json.loads(cli(lab, "status", "--json").stdout)
    assert info["self_reviewed"] == [hyp]
    assert f"accepted by the agent that wrote them (no second look): 1 ({hyp})" in cli(lab, "status").stdout
