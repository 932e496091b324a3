"""Role skills (content checked against the schemas) and `lab skills list|check|install`."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import lab_env, lab_executable

from runner.files.yamlio import parse_yaml
from runner.lab import Lab
from runner.repo import gitops
from runner.roles.skills import (
    MANIFEST,
    POINTER_END,
    POINTER_START,
    check_skill,
    find_skills,
    references,
)
from runner.scaffold import init_lab
from runner.state import entries
from runner.state.create import new_experiment, new_hypothesis
from runner.state.fingerprint import fingerprint
from runner.validation.validate import validate

REPO = Path(__file__).resolve().parent.parent
ROLE_SKILLS = ("autolab", "autolab-researcher", "autolab-planner", "autolab-worker", "autolab-reporter")


def cli_env(tmp: Path, home: Path | None = None) -> dict:
    """The real `lab` first on PATH (shipped scripts call it); HOME redirected."""
    home = home or tmp / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in lab_env().items() if k not in ("CODEX_HOME", "XDG_CONFIG_HOME", "LAB_ROOT")}
    return {**env, "HOME": str(home)}


def lab_cmd(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The real `lab` console script (the one `pip install` made)."""
    return subprocess.run([lab_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file()}


@pytest.fixture
def lab(tmp_path) -> Lab:
    return Lab(init_lab(tmp_path / "lab"))


# -- the skills themselves -------------------------------------------------------------
def test_role_skills_are_valid_and_short():
    skills = {s.name: s for s in find_skills(REPO / "skills")}
    for name in ROLE_SKILLS:
        assert name in skills, name
        assert check_skill(skills[name].path, f"skills/{name}") == []
        assert skills[name].lines < 300, f"{name}: keep SKILL.md under 300 lines"
        assert len(skills[name].description) <= 1024


def test_skills_in_a_new_lab_pass_lab_validate(lab):
    report = validate(lab.root, [str(lab.root / "skills")])
    assert report.ok, [str(p) for p in report.problems]
    assert report.counts["skill"] >= len(ROLE_SKILLS)


def _examples() -> list[tuple[str, str, dict]]:
    out = []
    for name in ROLE_SKILLS:
        text = (REPO / "skills" / name / "SKILL.md").read_text()
        for rel, body in re.findall(r"^```yaml\n# (\S+\.yaml)\n(.*?)^```", text, re.S | re.M):
            out.append((name, rel, parse_yaml(body, rel)[0]))
    return out


def test_yaml_examples_pass_lab_validate_in_a_real_lab(tmp_path, lab):
    """Every filled example is written where it belongs and checked by `lab validate` (schema and
    cross-references); fingerprints in examples are the real fingerprints of their change."""
    examples = _examples()
    kinds = {rel.split("/")[0] for _, rel, _ in examples}
    assert kinds == {"hypotheses", "queue"}
    assert {name for name, _, _ in examples} >= {"autolab-researcher", "autolab-planner", "autolab-worker"}
    # hypotheses first (queue entries refer to them), each validated on its own
    for name, rel, data in sorted(examples, key=lambda e: e[1].startswith("queue/")):
        path = lab.root / rel
        path.write_text(re.search(r"^```yaml\n# " + re.escape(rel) + r"\n(.*?)^```",
                                  (REPO / "skills" / name / "SKILL.md").read_text(), re.S | re.M).group(1))
        report = validate(lab.root, [str(lab.root / rel)])
        assert report.ok, (name, [str(p) for p in report.problems])
        if "fingerprint" in data:
            assert data["fingerprint"] == fingerprint(data["change"]), (name, rel)
    done = lab_cmd(cli_env(tmp_path), lab.root, "validate")
    assert done.returncode == 0, done.stdout + done.stderr


def test_fields_reference_names_every_schema_field():
    text = (REPO / "skills" / "autolab" / "references" / "fields.md").read_text()
    for kind in ("hypothesis", "experiment"):
        schema = json.loads((REPO / "schemas" / f"{kind}.schema.json").read_text())
        names = set(schema["properties"])
        for sub in ("source", "review", "job", "result", "environment"):
            names |= set(schema["properties"].get(sub, {}).get("properties", {}))
        missing = [n for n in sorted(names) if f"`{n}`" not in text]
        assert not missing, f"{kind} fields missing from fields.md: {missing}"
    lab = json.loads((REPO / "schemas" / "lab.schema.json").read_text())["properties"]
    limits = lab["limits"]["properties"]
    names = [f"objective.{n}" for n in ("target", "holdout")] + ["limits.budget", "limits.stop_after_no_gain",
                                                                 "backends.hf_jobs.prices"]
    names += list(limits["budget"]["properties"]) + list(limits["stop_after_no_gain"]["oneOf"][1]["properties"])
    assert set(lab["objective"]["properties"]) >= {"target", "holdout"}
    missing = [n for n in names if f"`{n}`" not in text and n not in text]
    assert not missing, f"lab.yaml fields missing from fields.md: {missing}"


def test_rule_names_match_the_gates():
    from runner.roles import gates
    text = (REPO / "skills" / "autolab-planner" / "SKILL.md").read_text()
    named = set(re.findall(r"^\| `([a-z-]+)` \|", text, re.M))
    assert named and named <= set(gates.RULES), named - set(gates.RULES)


# -- check ----------------------------------------------------------------------------------
def _bad_skill(root: Path) -> Path:
    skill = root / "broken-skill"
    (skill / "scripts").mkdir(parents=True)
    (skill / "scripts" / "run.sh").write_text("#!/bin/sh\necho hi\n")  # not executable
    body = "\n".join(f"line {i}" for i in range(520))
    (skill / "SKILL.md").write_text(
        "---\nname: other-name\ndescription: " + "x" * 1100 + "\n---\n"
        "See references/missing.md and skills/nowhere/scripts/x.sh.\n"
        "```yaml\n# hypotheses/h-1.yaml\nid: h-2\ntitle: t\nstatus: maybe\ncreated: now\n```\n" + body)
    return skill


def test_check_reports_each_problem(tmp_path):
    problems = check_skill(_bad_skill(tmp_path / "src"), "src/broken-skill")
    text = "\n".join(map(str, problems))
    assert "name: name 'other-name' must equal the directory name 'broken-skill'" in text
    assert "SKILL.md:3: description: 'xxxx" in text  # over 1024 chars (schema maxLength)
    assert "lines; keep SKILL.md under 500 lines" in text
    assert "refers to references/missing.md, which does not exist" in text
    assert "refers to skills/nowhere/scripts/x.sh" in text
    assert "change: example hypotheses/h-1.yaml: required field is missing" in text
    assert "status: example hypotheses/h-1.yaml: 'maybe' is not one of" in text
    assert "id 'h-2' does not match the file name" in text
    assert "src/broken-skill/scripts/run.sh: mode: has a #! line but is not executable" in text
    lines = {p.field: p.line for p in problems}
    assert lines["name"] == 2 and lines["status"] == 10  # lines in SKILL.md, not in the example


def test_references_are_found():
    found = references("run scripts/a.py, read `references/b.md`.\nsee skills/x-y/assets/c.txt and scripts/")
    assert found == [(None, "scripts/a.py", 1), (None, "references/b.md", 1), ("x-y", "assets/c.txt", 2)]


def test_cli_check_exit_codes(tmp_path, lab):
    env = cli_env(tmp_path)
    ok = lab_cmd(env, lab.root, "skills", "check", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert set(json.loads(ok.stdout)["skills"]) >= set(ROLE_SKILLS)
    _bad_skill(tmp_path / "src")
    bad = lab_cmd(env, lab.root, "skills", "check", "--source", str(tmp_path / "src"))
    assert bad.returncode == 1 and "problem(s) in 1 skills" in bad.stderr
    unknown = lab_cmd(env, lab.root, "skills", "check", "no-such-skill")
    assert unknown.returncode == 2 and "unknown skill 'no-such-skill'" in unknown.stderr


# -- install ----------------------------------------------------------------------------------
PROJECT_DIRS = (".claude/skills", ".agents/skills", ".codex/skills", ".opencode/skills")


def test_install_default_all_clients_is_idempotent(tmp_path, lab):
    env = cli_env(tmp_path)
    (lab.root / "CLAUDE.md").write_text("# My notes\n\nkeep me\n")
    first = lab_cmd(env, lab.root, "skills", "install")
    assert first.returncode == 0, first.stderr
    # evals/ (the cases and their results) stays with the skill's author: agents never get it
    source = {s.name: {rel: data for rel, data in tree(s.path).items() if not rel.startswith("evals/")}
              for s in find_skills(lab.root / "skills")}
    assert (lab.root / "skills" / "autolab-worker" / "evals" / "evals.json").is_file()
    for d in PROJECT_DIRS:
        for name, files in source.items():
            installed = tree(lab.root / d / name)
            assert not (lab.root / d / name / "evals").exists(), (d, name)
            manifest = json.loads(installed.pop(MANIFEST))
            assert installed == files, (d, name)
            assert set(manifest["files"]) == set(files)
        assert os.access(lab.root / d / "autolab-worker" / "scripts" / "mark.py", os.X_OK)
    agents_md = (lab.root / "AGENTS.md").read_text()
    claude_md = (lab.root / "CLAUDE.md").read_text()
    assert agents_md.startswith("# Agents: read this first")  # the scaffold's text is kept
    assert claude_md.startswith("# My notes\n\nkeep me\n")
    for text in (agents_md, claude_md):
        assert text.count(POINTER_START) == 1 and text.count(POINTER_END) == 1
        assert "`autolab-worker`" in text and "`.claude/skills/`" in text
    snapshot = {d: tree(lab.root / d) for d in PROJECT_DIRS}
    second = lab_cmd(env, lab.root, "skills", "install")
    assert second.returncode == 0
    assert "0 written" in second.stderr
    assert {d: tree(lab.root / d) for d in PROJECT_DIRS} == snapshot
    assert (lab.root / "AGENTS.md").read_text() == agents_md
    assert (lab.root / "CLAUDE.md").read_text() == claude_md
    # installed copies are valid skills for the clients (names, references between siblings)
    for d in PROJECT_DIRS:
        check = lab_cmd(env, lab.root, "skills", "check", "--source", str(lab.root / d))
        assert check.returncode == 0, check.stdout


def test_pointer_block_replaced_not_duplicated(tmp_path, lab):
    env = cli_env(tmp_path)
    assert lab_cmd(env, lab.root, "skills", "install", "--agents").returncode == 0
    text = (lab.root / "AGENTS.md").read_text()
    start, end = text.index(POINTER_START), text.index(POINTER_END) + len(POINTER_END)
    edited = "intro\n" + text[start:end].replace("Commands for agents", "OLD STUFF") + "\n\nafter the block\n"
    (lab.root / "AGENTS.md").write_text(edited)
    assert lab_cmd(env, lab.root, "skills", "install", "--agents").returncode == 0
    new = (lab.root / "AGENTS.md").read_text()
    assert new.startswith("intro\n" + POINTER_START) and new.endswith("\n\nafter the block\n")
    assert "OLD STUFF" not in new and new.count(POINTER_START) == 1
    (lab.root / "AGENTS.md").write_text(f"{POINTER_START}\nno end marker\n")
    broken = lab_cmd(env, lab.root, "skills", "install", "--agents")
    assert broken.returncode == 2 and "broken benchlab block" in broken.stderr


def test_flags_choose_clients(tmp_path, lab):
    env = cli_env(tmp_path)
    before = (lab.root / "AGENTS.md").read_text()
    done = lab_cmd(env, lab.root, "skills", "install", "--claude")
    assert done.returncode == 0
    assert (lab.root / ".claude/skills/autolab/SKILL.md").is_file()
    assert not any((lab.root / d).exists() for d in (".agents", ".codex", ".opencode"))
    assert POINTER_START in (lab.root / "CLAUDE.md").read_text()
    assert (lab.root / "AGENTS.md").read_text() == before
    done = lab_cmd(env, lab.root, "skills", "install", "--codex", "autolab", "autolab-worker")
    assert done.returncode == 0
    assert sorted(p.name for p in (lab.root / ".agents/skills").iterdir()) == ["autolab", "autolab-worker"]
    assert (lab.root / ".codex/skills/autolab-worker/SKILL.md").is_file()
    assert not (lab.root / ".opencode").exists()


def test_changed_copy_is_refused_without_force(tmp_path, lab):
    env = cli_env(tmp_path)
    assert lab_cmd(env, lab.root, "skills", "install").returncode == 0
    mine = lab.root / ".claude/skills/autolab/SKILL.md"
    mine.write_text(mine.read_text() + "\nmy local tweak\n")
    # the source changes too: an untouched copy elsewhere would be updated, but the refusal is all-or-nothing
    src = lab.root / "skills/autolab-planner/SKILL.md"
    src.write_text(src.read_text() + "\nnew upstream line\n")
    refused = lab_cmd(env, lab.root, "skills", "install")
    assert refused.returncode == 2
    assert ".claude/skills/autolab was changed since it was installed" in refused.stderr
    assert "--force" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert "my local tweak" in mine.read_text()
    assert "new upstream line" not in (lab.root / ".agents/skills/autolab-planner/SKILL.md").read_text()
    listing = json.loads(lab_cmd(env, lab.root, "skills", "list", "--json").stdout)
    states = {r["name"]: r["installed"] for r in listing}
    assert states["autolab"][".claude/skills"] == "modified"
    assert states["autolab-planner"][".agents/skills"] == "outdated"
    assert states["autolab-worker"][".opencode/skills"] == "current"
    forced = lab_cmd(env, lab.root, "skills", "install", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "my local tweak" not in mine.read_text()
    assert "new upstream line" in (lab.root / ".agents/skills/autolab-planner/SKILL.md").read_text()


def test_foreign_directory_is_refused(tmp_path, lab):
    env = cli_env(tmp_path)
    theirs = lab.root / ".agents/skills/autolab"
    theirs.mkdir(parents=True)
    (theirs / "SKILL.md").write_text("someone else's skill\n")
    refused = lab_cmd(env, lab.root, "skills", "install", "--agents")
    assert refused.returncode == 2 and "was not installed by benchlab" in refused.stderr
    assert (theirs / "SKILL.md").read_text() == "someone else's skill\n"
    assert not (lab.root / ".agents/skills/autolab-worker").exists()  # nothing was installed


def test_link_mode(tmp_path, lab):
    env = cli_env(tmp_path)
    assert lab_cmd(env, lab.root, "skills", "install", "--opencode").returncode == 0  # copies first
    linked = lab_cmd(env, lab.root, "skills", "install", "--opencode", "--link")
    assert linked.returncode == 0, linked.stderr
    dest = lab.root / ".opencode/skills/autolab"
    assert dest.is_symlink() and not os.path.isabs(os.readlink(dest))
    assert dest.resolve() == (lab.root / "skills/autolab").resolve()
    again = lab_cmd(env, lab.root, "skills", "install", "--opencode", "--link")
    assert "0 written" in again.stderr
    back = lab_cmd(env, lab.root, "skills", "install", "--opencode")  # a link we made may become a copy
    assert back.returncode == 0 and not dest.is_symlink() and (dest / MANIFEST).is_file()


def test_global_install_respects_home(tmp_path, lab):
    home = tmp_path / "home"
    env = cli_env(tmp_path, home)
    done = lab_cmd(env, lab.root, "skills", "install", "--global")
    assert done.returncode == 0, done.stderr
    for d in (".claude/skills", ".agents/skills", ".codex/skills", ".config/opencode/skills"):
        assert (home / d / "autolab" / "SKILL.md").is_file(), d
    assert POINTER_START not in (lab.root / "AGENTS.md").read_text()
    assert not (lab.root / "CLAUDE.md").exists() and not (lab.root / ".claude").exists()
    env2 = {**env, "CODEX_HOME": str(tmp_path / "codexhome"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert lab_cmd(env2, tmp_path, "skills", "install", "--global", "--codex", "--opencode").returncode == 0
    assert (tmp_path / "codexhome/skills/autolab-planner/SKILL.md").is_file()
    assert (tmp_path / "xdg/opencode/skills/autolab-planner/SKILL.md").is_file()
    outside = lab_cmd(env, tmp_path, "skills", "install")
    assert outside.returncode == 2 and "not in a lab" in outside.stderr


# -- scripts shipped with the skills ---------------------------------------------------------
def _assigned_experiment(lab: Lab) -> tuple[str, Path]:
    hyp, _ = new_hypothesis(lab, "warmup 30", {"params": {"WARMUP_STEPS": 30}})
    exp, path = new_experiment(lab, hyp, {"params": {"WARMUP_STEPS": 30}}, gitops.head(lab.root))
    entries.transition(entries.load(lab, path), "assigned", "runner")  # what the runner does
    worktree = lab.worktrees / exp
    gitops.run_git(lab.root, "worktree", "add", "-q", "-b", f"exp/{exp}", str(worktree), "HEAD")
    return exp, worktree


def _mark(lab: Lab, worktree: Path, *args: str) -> subprocess.CompletedProcess:
    script = lab.root / "skills" / "autolab-worker" / "scripts" / "mark.py"
    env = {k: v for k, v in os.environ.items() if k != "LAB_ROOT"}
    return subprocess.run([sys.executable, str(script), *args], cwd=worktree, env=env, capture_output=True,
                          text=True, timeout=60)


def test_worker_mark_script(lab):
    """mark.py (kept for scripts that call it by path) hands in through `lab work`."""
    exp, worktree = _assigned_experiment(lab)
    entry = lab.queue / f"{exp}.yaml"
    empty = _mark(lab, worktree, "ready", exp)
    assert empty.returncode == 3 and "changes nothing" in empty.stderr
    (worktree / "lab.yaml").write_text((worktree / "lab.yaml").read_text() + "# sneaky\n")
    protected = _mark(lab, worktree, "ready", exp)
    assert protected.returncode == 3 and "lab.yaml is protected" in protected.stderr
    gitops.run_git(worktree, "checkout", "--", "lab.yaml")
    train = worktree / "train.py"
    train.write_text(re.sub(r"(?m)^WARMUP_STEPS = \d+", "WARMUP_STEPS = 30", train.read_text()))
    done = _mark(lab, worktree, "ready", exp)
    assert done.returncode == 0, done.stdout + done.stderr
    data = yaml.safe_load(entry.read_text())
    assert data["status"] == "ready" and data["history"][-1]["by"] == "worker"
    assert validate(lab.root, [str(entry)]).ok
    again = _mark(lab, worktree, "cancelled", exp, "--reason", "x")
    assert again.returncode == 3 and "is ready, not assigned" in again.stderr
    assert _mark(lab, worktree, "ready", "../etc").returncode == 2


def test_reporter_snapshot_script(tmp_path, lab):
    env = cli_env(tmp_path)
    script = lab.root / "skills" / "autolab-reporter" / "scripts" / "snapshot.sh"
    done = subprocess.run([str(script)], cwd=lab.root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for section in ("## status", "## leaderboard", "## warnings and errors", "## queue"):
        assert section in done.stdout
