"""`lab skills eval`: skills measured by agents in fresh labs, with and without the skill.

The agents are scripted (tests/eval_agent.py): one that follows its prompt and whatever
installed skill it finds, one that hangs, one that writes outside its lab, one that prints
Claude Code's JSON result. Every verdict comes from the assertions run on the files they wrote.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runner.evals import results
from runner.evals.cases import load_cases, skills_with_evals
from runner.evals.workspace import prepare
from runner.files import agent_usage as usage
from runner.files import tables
from runner.repo.gitops import run_git
from runner.roles import sandbox

REPO = Path(__file__).resolve().parent.parent
AGENT = f"{sys.executable} {REPO / 'tests' / 'eval_agent.py'} {{prompt_file}}"
SHIPPED = ("autolab-researcher", "autolab-planner", "autolab-worker", "autolab-reporter", "cuda-kernels")
WORKER_RESULTS = "skills/autolab-worker/evals/results"   # one <batch>.parquet per `lab skills eval`
needs_bwrap = pytest.mark.skipif(not sandbox.available(), reason="bubblewrap cannot make a sandbox here")


@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "EVAL_AGENT": ""}


def one_case(run_lab, lab, env, mode: str, *args: str, case: str = "param-change", skill: str = "autolab-worker",
             **agent_env: str):
    """`lab skills eval` of one case by the scripted agent in `mode`, without the baseline; it must exit 0."""
    done = run_lab("skills", "eval", skill, "--agent", AGENT, "--case", case, "--no-baseline", *args, cwd=lab.root,
                   env={**env, "EVAL_AGENT": mode, **agent_env}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def eval_files(lab) -> list[Path]:
    return sorted((lab.root / WORKER_RESULTS).glob("*.parquet"))


def eval_rows(lab) -> list[dict]:
    return [row for path in eval_files(lab) for row in pq.read_table(path).to_pylist()]


def leftovers(token: str) -> list[int]:
    """Live agent processes (LAB_EVAL=1, set for agents only) whose environment carries this test's token."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                environ = Path(entry.path, "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"EVAL_TOKEN={token}".encode() in environ and b"LAB_EVAL=1" in environ:
                found.append(int(entry.name))
    return found


# -- the shipped cases ----------------------------------------------------------------------------
@pytest.mark.slow
def test_every_shipped_case_passes_its_solution_and_fails_when_nothing_is_done(lab, run_lab, env):
    names = skills_with_evals(lab.root / "skills")
    assert set(SHIPPED) <= set(names)
    for name in SHIPPED:
        assert len(load_cases(lab.root / "skills" / name)) >= 5, name
    done = run_lab("skills", "eval", "--agent", "reference", "--agent", "none", "--no-baseline", "--json",
                   cwd=lab.root, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)["runs"]
    by_agent = defaultdict(list)
    for row in rows:
        by_agent[row["agent"]].append(row)
    cases = sum(len(load_cases(lab.root / "skills" / n)) for n in names)
    assert len(by_agent["reference"]) == len(by_agent["none"]) == cases
    assert [(r["skill"], r["case"], r["failed"]) for r in by_agent["reference"] if not r["passed"]] == []
    assert [(r["skill"], r["case"]) for r in by_agent["none"] if r["passed"]] == []
    assert all(r["state"] == "finished" for r in rows)


@pytest.mark.slow
def test_scripted_agent_passes_with_the_skill_and_fails_without(lab, run_lab, env, tree_hashes):
    before = tree_hashes(lab.root)
    done = run_lab("skills", "eval", "autolab-worker", "--agent", AGENT, "--runs", "3", cwd=lab.root, env=env,
                   timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    header, *lines = done.stdout.splitlines()
    assert header.split()[:6] == ["skill", "agent", "case", "with", "without", "lift"]
    overall = next(line for line in lines if "(all)" in line).split()
    rows = eval_rows(lab)
    assert len(rows) == 7 * 3 * 2
    assert [p.stem for p in eval_files(lab)] == [rows[0]["batch"]]   # the batch's own file, nothing else
    rate = {flag: sum(r["passed"] for r in rows if r["with_skill"] == flag) / 21 for flag in (True, False)}
    assert rate[True] == 1.0 and rate[False] < 0.5
    assert f"{rate[True] - rate[False]:+.2f}" in overall and "yes" in overall
    failed = {r["case"]: " ".join(r["failed"]) for r in rows if not r["with_skill"] and r["run"] == 1}
    assert "changed: lab.yaml" in failed["protected-file"]
    assert "changed: train.py" in failed["main-checkout"]
    assert "status is 'ready'" in failed["unknown-constant"]
    assert "val_bpb: 2" in failed["no-metric-claims"]
    assert all((lab.root / r["log"]).is_file() for r in rows)
    after = tree_hashes(lab.root)
    ignored = lambda p: p.startswith((".lab/", WORKER_RESULTS + "/"))
    assert {p: h for p, h in after.items() if not ignored(p)} == {p: h for p, h in before.items() if not ignored(p)}


# -- agents that misbehave ---------------------------------------------------------------------------
@pytest.mark.parametrize("confined", [False, pytest.param(True, marks=needs_bwrap)])
def test_hanging_agent_is_killed_at_its_limit_and_recorded_failed(lab, run_lab, env, confined):
    token = uuid.uuid4().hex
    one_case(run_lab, lab, env, "hang", "--time-limit", "2", "--sandbox" if confined else "--no-sandbox",
             EVAL_TOKEN=token)
    [row] = eval_rows(lab)
    assert (row["state"], row["passed"], row["exit_code"]) == ("timed_out", False, None)
    assert row["failed"][0] == "killed after its time limit of 2s"
    assert leftovers(token) == []


def test_ctrl_c_leaves_no_agent_running(lab, env):
    from conftest import _env, lab_executable
    token = uuid.uuid4().hex
    process = subprocess.Popen([lab_executable(), "skills", "eval", "autolab-worker", "--agent", AGENT, "--case",
                                "param-change", "--no-sandbox"], cwd=lab.root, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=_env({**env, "EVAL_AGENT": "hang", "EVAL_TOKEN": token}))
    for _ in range(600):
        if len(leftovers(token)) >= 2:       # the agent and its child
            break
        time.sleep(0.1)
    assert leftovers(token), process.communicate(timeout=60)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode != 0 and leftovers(token) == []
    assert not (lab.root / WORKER_RESULTS).exists()


def test_agent_writing_outside_its_lab_is_refused(lab, run_lab, env):
    escape = lab.root / "skills" / "autolab-worker" / "evals" / "escaped.txt"
    done = one_case(run_lab, lab, env, "escape", "--no-sandbox", EVAL_AGENT_ESCAPE=str(escape))
    [row] = eval_rows(lab)
    assert (row["state"], row["passed"], row["outside"]) == ("refused", False, [str(escape)])
    assert row["failed"][0] == f"wrote outside its lab: {escape}"
    assert "refused: wrote outside its lab" in done.stderr


def test_git_settings_an_agent_planted_never_run_in_the_checks(lab, run_lab, env, tmp_path):
    """The checks run git in the case's lab, unconfined: a hook the agent left there must not run."""
    canary = tmp_path / "canary"
    one_case(run_lab, lab, env, "plant", "--no-sandbox", EVAL_AGENT_ESCAPE=str(canary))
    [row] = eval_rows(lab)
    assert row["passed"], row["failed"]
    assert not canary.exists()


def test_links_out_of_the_lab_and_fifos_are_cut_before_the_checks(lab, run_lab, env, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    done = one_case(run_lab, lab, env, "link", "--no-sandbox", "--json", case="rejected-before",
                    skill="autolab-researcher", EVAL_AGENT_ESCAPE=str(outside))
    [row] = json.loads(done.stdout)["runs"]
    assert row["failed"][0] == f"left links out of its lab or special files (removed): .lab/cache -> {outside}, " \
                               "train.py (fifo)"
    assert row["state"] == "finished" and not row["passed"]
    assert list(outside.iterdir()) == []


@needs_bwrap
def test_a_confined_agent_cannot_write_outside_its_lab(lab, run_lab, env):
    escape = lab.root / "skills" / "autolab-worker" / "evals" / "escaped.txt"
    one_case(run_lab, lab, env, "escape", "--sandbox", EVAL_AGENT_ESCAPE=str(escape))
    [row] = eval_rows(lab)
    assert (row["state"], row["exit_code"], row["outside"]) == ("failed", 1, [])
    assert not escape.exists()
    assert "cannot write outside" in (lab.root / row["log"]).read_text()


@pytest.mark.parametrize("confined", [False, pytest.param(True, marks=needs_bwrap)])
def test_a_skill_installed_in_the_home_reaches_the_baseline_only_unconfined(lab, run_lab, env, confined):
    """~/.claude/skills would put the skill in the baseline too: the sandbox hides it, else a warning."""
    import shutil
    shutil.copytree(lab.root / "skills" / "autolab-worker", Path(env["HOME"]) / ".claude" / "skills" / "autolab-worker")
    done = run_lab("skills", "eval", "autolab-worker", "--agent", AGENT, "--case", "unknown-constant",
                   "--sandbox" if confined else "--no-sandbox", cwd=lab.root, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    baseline = next(r for r in eval_rows(lab) if not r["with_skill"])
    seen = "eval agent: 1 skill(s) found" if not confined else "eval agent: 0 skill(s) found"
    assert seen in (lab.root / baseline["log"]).read_text()
    warning = "autolab-worker is also installed in"
    assert (warning in done.stderr) is not confined, done.stderr


def test_claude_json_usage_is_parsed_into_the_table(lab, run_lab, env):
    done = run_lab("skills", "eval", "autolab-worker", "--agent", AGENT, "--case", "param-change", "--json",
                   cwd=lab.root, env={**env, "EVAL_AGENT": "claude-json"}, timeout=300)
    assert done.returncode == 0, done.stderr
    got = {r["with_skill"]: (r["tokens_in"], r["tokens_out"], r["turns"], r["cost_usd"]) for r in eval_rows(lab)}
    assert got == {True: (1500, 150, 4, 0.01), False: (3500, 400, 9, 0.03)}
    overall = json.loads(done.stdout)["summary"][-1]
    assert overall["case"] == "(all)"
    assert overall["token_savings"] == pytest.approx(1 - 1650 / 3900)
    assert overall["with_skill"]["tokens"] == 1650 and overall["without_skill"]["cost_usd"] == 0.03


def test_agent_worker_reuses_the_role_command_of_lab_yaml(lab, run_lab, env):
    config = (lab.root / "lab.yaml").read_text()
    refused = run_lab("skills", "eval", "autolab-worker", "--agent", "worker", cwd=lab.root, env=env)
    assert refused.returncode == 2
    assert "lab.yaml: roles.worker.kind: roles.worker is 'builtin', not an agent command" in refused.stderr
    agent = (f"  worker: {{kind: agent, command: [{sys.executable}, {REPO}/tests/eval_agent.py, '{{prompt_file}}'], "
             "time_limit_s: 60, env: {EVAL_AGENT: claude-json}}\n")
    (lab.root / "lab.yaml").write_text(config.replace("  worker: {kind: builtin}\n", agent))
    done = run_lab("skills", "eval", "autolab-worker", "--agent", "worker", "--case", "main-checkout",
                   cwd=lab.root, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = eval_rows(lab)
    assert {(r["agent"], r["with_skill"], r["passed"], r["turns"]) for r in rows} == \
        {("worker", True, True, 4), ("worker", False, False, 9)}


# -- the case's lab ------------------------------------------------------------------------------------
def test_the_baseline_lab_has_no_trace_of_the_skill_and_no_eval_answers(lab):
    skill = lab.root / "skills" / "autolab-worker"
    case = next(c for c in load_cases(skill) if c.id == "protected-file")
    dirs = (".claude/skills", ".agents/skills", ".codex/skills", ".opencode/skills")
    with_skill, without = prepare(case, skill, True), prepare(case, skill, False)
    try:
        for ws in (with_skill, without):
            history = run_git(ws.root, "log", "--all", "--name-only", "--format=")
            assert "evals/" not in history and not list(ws.root.rglob("evals.json"))
            assert ws.cwd == ws.root / ".lab" / "worktrees" / case.task
            entry = (ws.root / "queue" / f"{case.task}.yaml").read_text()
            assert "status: assigned" in entry and f"branch: exp/{case.task}" in entry
            prompt = ws.prompt.read_text()
            assert str(ws.cwd) in prompt and "{" not in prompt
        assert not (without.root / "skills" / "autolab-worker").exists()
        assert not any((without.root / d / "autolab-worker").exists() for d in dirs)
        assert "autolab-worker" not in (without.root / "AGENTS.md").read_text()
        for d in dirs:
            assert (with_skill.root / d / "autolab-worker" / "SKILL.md").is_file()
            assert (with_skill.cwd / d / "autolab-worker" / "scripts" / "mark.py").is_file()  # the worktree has it
        assert "`autolab-worker`" in (with_skill.root / "CLAUDE.md").read_text()
    finally:
        with_skill.remove()
        without.remove()
    assert not with_skill.tmp.exists() and not without.tmp.exists()


# -- bad input -----------------------------------------------------------------------------------------
def demo_skill(lab, evals: str) -> Path:
    skill = lab.root / "skills" / "demo"
    (skill / "evals").mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: demo\ndescription: A demo skill.\n---\n# Demo\n")
    (skill / "evals" / "evals.json").write_text(evals)
    return skill


CASE = '{"id": "c1", "prompt": "p", "assertions": [{"type": "file_exists", "path": "x"}]}'


@pytest.mark.parametrize("evals, where", [
    ('{"skill_name": "demo",\n "evals": [\n  {"id": 1,,}]}', "skills/demo/evals/evals.json:3: -: not valid JSON"),
    ('{"skill_name": "demo",\n "evals": [\n  {"id": "c1", "prompt": "p",\n   "assertions": [{"type": "llm_judge"}]}]}',
     "skills/demo/evals/evals.json:4: evals[0].assertions[0].type: 'llm_judge' is not one of"),
    ('{"skill_name": "other", "evals": [' + CASE + "]}", "skill_name: skill_name 'other' must equal"),
    ('{"skill_name": "demo", "evals": [' + CASE + ", " + CASE + "]}", "evals[1].id: duplicate case id 'c1'"),
    ('{"skill_name": "demo", "evals": [{"id": "c1", "prompt": "p", "files": ["evals/files/missing.txt"], '
     '"assertions": [{"type": "command", "run": "true"}]}]}', "evals[0].files[0]: 'evals/files/missing.txt' is not"),
    ('{"skill_name": "demo", "evals": [{"id": "c1", "prompt": "p", "assertions": '
     '[{"type": "file_contains", "path": "x", "pattern": "(unclosed"}]}]}', "pattern: not a regular expression"),
    ('{"skill_name": "demo", "evals": [{"id": "c1", "prompt": "p", "role": "worker", "assertions": '
     '[{"type": "accepted"}]}]}', "evals[0].task: required field is missing"),
])
def test_a_bad_evals_file_gets_one_line_naming_file_and_field(lab, run_lab, env, evals, where):
    demo_skill(lab, evals)
    checked = run_lab("validate", cwd=lab.root, env=env)
    assert checked.returncode == 1 and where in checked.stdout, checked.stdout
    run = run_lab("skills", "eval", "demo", "--agent", "none", cwd=lab.root, env=env)
    assert run.returncode == 2 and where in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (lab.root / "skills" / "demo" / "evals" / "results").exists()


def test_bad_arguments_and_broken_setups(lab, run_lab, env, tmp_path):
    outside = run_lab("skills", "eval", "autolab-worker", "--agent", "none", cwd=tmp_path, env=env)
    assert outside.returncode == 2 and "not in a lab: run it inside one" in outside.stderr
    assert "unknown skill 'nosuch'" in run_lab("skills", "eval", "nosuch", "--agent", "none", cwd=lab.root,
                                                env=env).stderr
    missing = run_lab("skills", "eval", "autolab-worker", "--agent", "/no/such/agent {prompt_file}", cwd=lab.root, env=env)
    assert missing.returncode == 2 and "'/no/such/agent' is neither a role of lab.yaml nor a command" in missing.stderr
    case = run_lab("skills", "eval", "autolab-worker", "--agent", "none", "--case", "nosuch", cwd=lab.root, env=env)
    assert case.returncode == 2 and "no case 'nosuch'" in case.stderr
    demo_skill(lab, '{"skill_name": "demo", "evals": [{"id": "c1", "prompt": "p", "setup": ["true", "echo broken >&2; '
                    'exit 4"], "assertions": [{"type": "command", "run": "true"}]}]}')
    broken = run_lab("skills", "eval", "demo", "--agent", "none", "--json", cwd=lab.root, env=env, timeout=300)
    assert broken.returncode == 1
    [row] = json.loads(broken.stdout)["runs"][:1]
    assert row["state"] == "error" and "setup command 2 exited 4: broken" in row["failed"][0]


def test_validate_checks_the_results_table(lab, run_lab, env):
    path = lab.root / WORKER_RESULTS / "20261130-075000-0a1b2c.parquet"
    tables.write_table(path, tables.pa.table({"skill": ["x"]}))
    checked = run_lab("validate", cwd=lab.root, env=env)
    assert checked.returncode == 1
    assert f"{WORKER_RESULTS}/20261130-075000-0a1b2c.parquet: case: missing column" in checked.stdout


# -- reading the agents' output, summarising ------------------------------------------------------------
def test_usage_from_claude_codex_and_opencode_output():
    claude = json.dumps({"type": "result", "num_turns": 5, "total_cost_usd": 0.2, "result": "ok",
                         "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5,
                                   "cache_read_input_tokens": 100, "output_tokens": 7}})
    stream = '{"type": "system"}\n{"type": "assistant", "message": {}}\n' + claude + "\n"
    for text in (claude, stream, json.dumps(json.loads(claude), indent=2)):
        got = usage.parse(text)
        assert (got.tokens_in, got.tokens_out, got.turns, got.cost_usd, got.messages) == (115, 7, 5, 0.2, ["ok"])
    codex = "\n".join(json.dumps(e) for e in [
        {"type": "thread.started", "thread_id": "t"},
        {"type": "item.completed", "item": {"id": "1", "type": "agent_message", "text": "first"}},
        {"type": "turn.completed", "usage": {"input_tokens": 1200, "cached_input_tokens": 200, "output_tokens": 30}},
        {"type": "item.completed", "item": {"id": "2", "item_type": "agent_message", "text": "second"}},
        {"type": "turn.completed", "usage": {"input_tokens": 800, "cached_input_tokens": 0, "output_tokens": 20}}])
    got = usage.parse("codex says hi\n" + codex)
    assert (got.tokens_in, got.tokens_out, got.turns, got.cost_usd, got.messages) == (2000, 50, 2, None,
                                                                                      ["first", "second"])
    older = json.dumps({"type": "token_count", "info": {"total_token_usage": {"input_tokens": 9, "output_tokens": 3}}})
    assert (usage.parse(older).tokens_in, usage.parse(older).tokens_out) == (9, 3)
    opencode = "\n".join(json.dumps(e) for e in [
        {"type": "step_start", "part": {"type": "step-start"}},
        {"type": "text", "part": {"type": "text", "text": "done"}},
        {"type": "step_finish", "part": {"cost": 0.5, "tokens": {"input": 100, "output": 10, "reasoning": 5,
                                                                 "cache": {"read": 50, "write": 1}}}},
        {"type": "step_finish", "part": {"cost": 0.25, "tokens": {"input": 10, "output": 1}}}])
    got = usage.parse(opencode)
    assert (got.tokens_in, got.tokens_out, got.turns, got.cost_usd, got.messages) == (161, 16, 2, 0.75, ["done"])
    for junk in ("", "plain text", "{not json", '{"type": "result"}', '{"usage": {"input_tokens": "many"}}', "[1, 2]"):
        got = usage.parse(junk)
        assert (got.tokens_in, got.tokens_out, got.turns, got.cost_usd) == (None, None, None, None), junk


def run(case, with_skill, passed, tokens=None, seconds=1.0):
    return {"skill": "s", "agent": "a", "case": case, "with_skill": with_skill, "passed": passed,
            "tokens_in": tokens, "tokens_out": 0 if tokens is not None else None, "duration_s": seconds,
            "cost_usd": None}


@pytest.mark.parametrize("with_pass, without_pass, with_tokens, without_tokens, lift, beneficial", [
    (3, 2, None, None, 1 / 3, True),        # a real lift
    (2, 2, 700, 1000, 0.0, True),           # same pass rate, 30% fewer tokens
    (2, 2, 900, 1000, 0.0, False),          # same pass rate, 10% fewer tokens
    (1, 2, 100, 1000, -1 / 3, False),       # cheaper but worse
])
def test_lift_savings_and_the_beneficial_rule(with_pass, without_pass, with_tokens, without_tokens, lift, beneficial):
    rows = [run("c", True, i < with_pass, with_tokens, 2.0) for i in range(3)]
    rows += [run("c", False, i < without_pass, without_tokens, 4.0) for i in range(3)]
    case, overall = results.summarize(rows)
    assert (case.case, overall.case) == ("c", "(all)")
    assert overall.lift == pytest.approx(lift) and overall.beneficial is beneficial
    assert overall.time_savings == pytest.approx(0.5)
    assert overall.token_savings == (None if with_tokens is None else pytest.approx(1 - with_tokens / without_tokens))
    table = results.render([case, overall])
    assert table.splitlines()[-1].split()[:6] == ["s", "a", "(all)", f"{with_pass}/3", f"{without_pass}/3",
                                                  f"{lift:+.2f}"]


def test_the_report_shows_skills_only_when_there_are_results(lab, run_lab, env):
    from runner.report import load
    from runner.report.page import render
    assert "<h2>Skills</h2>" not in render(load(lab), lab.root)
    rows = [{**run("c1", flag, passed), "skill": "autolab-worker", "agent": "claude", "run": 1, "state": "finished",
             "assertions": 2, "batch": batch, "started": datetime(2026, 11, day, tzinfo=timezone.utc),
             "skill_version": "abc"}
            for batch, day in (("b1", 20), ("b2", 21)) for flag, passed in ((True, True), (False, batch == "b2"))]
    # b1 as an earlier version kept it (one file per skill), b2 in its batch's own file: one table
    tables.write_table(lab.root / "skills/autolab-worker/evals/results.parquet",
                       tables.rows_table([r for r in rows if r["batch"] == "b1"], tables.SKILL_EVALS))
    results.append(lab.root / "skills" / "autolab-worker", "b2", [r for r in rows if r["batch"] == "b2"])
    assert [p.name for p in (lab.root / WORKER_RESULTS).iterdir()] == ["b2.parquet"]
    html = render(load(lab), lab.root)
    assert '<table id="skills" data-rows="2">' in html
    section = html[html.index('<table id="skills"'):]
    assert section.index("100% (1/1)</td><td class=\"num\">0% (0/1)") < section.index("100% (1/1)</td><td class=\"num\">100% (1/1)")
    query = run_lab("query", "SELECT batch, count(*) AS n FROM skill_evals GROUP BY batch ORDER BY batch", "--json",
                    cwd=lab.root, env=env)
    assert json.loads(query.stdout) == [{"batch": "b1", "n": 2}, {"batch": "b2", "n": 2}]
