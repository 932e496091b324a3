"""skills/finetune: a valid skill whose every command block runs, offline, in a real finetune lab."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner.state.params import apply_params, read_params
from runner.roles.skills import check_skill

ROOT = Path(__file__).resolve().parent.parent
SKILL = ROOT / "skills" / "finetune"
SCRIPT = ROOT / "runner" / "templates" / "finetune" / "finetune.py"
SMALL = {"EPOCHS": 0.02, "EVAL_HOLDOUT": 40, "EVAL_SAMPLES": 8, "LOGGING_STEPS": 2}  # the test's budget


def blocks(kind: str) -> list[str]:
    found = []
    for page in [SKILL / "SKILL.md", *sorted((SKILL / "references").glob("*.md"))]:
        found += re.findall(rf"^```{kind}\n(.*?)^```", page.read_text(), re.S | re.M)
    return found


def bash(script: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def env() -> dict:
    """This environment's `lab`, `python` and `hf` first on PATH; offline; one thread; a git identity."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "lab-tests"), ("EMAIL", "tests@benchlab.invalid"))}
    return {**base, **identity, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base['PATH']}",
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_the_skill_is_valid_and_short():
    assert check_skill(SKILL, "skills/finetune") == []
    text = (SKILL / "SKILL.md").read_text()
    assert text.count("\n") < 300
    for ref in ("data-formats", "hardware-and-cost", "lora-vs-full", "common-failures"):
        assert f"references/{ref}.md" in text


def test_the_request_example_names_real_constants_and_passes_the_check(tmp_path, env):
    """The constants a request turns into exist in finetune.py, with the same types, and check accepts them."""
    [example] = blocks("python")
    wanted = read_params(example, "SKILL.md")
    script = tmp_path / "finetune.py"
    script.write_text(apply_params(SCRIPT.read_text(), wanted, "finetune.py"))  # refuses unknown names, bad types
    assert {k: v for k, v in read_params(script.read_text()).items() if k in wanted} == wanted
    done = bash("lab finetune check", tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "596M parameters" in done.stdout and "not checked" in done.stdout


@pytest.mark.slow
def test_every_command_block_runs_offline(tmp_path, env):
    """The skill's commands in order: init, check, smoke run, a lab experiment, HF Jobs dry run, monitoring.
    Between init and the rest the lab's finetune.py gets a tiny budget, committed like any edit."""
    commands = blocks("bash")
    assert commands[0].strip() == "lab init my-finetune --template finetune"
    first = bash(commands[0], tmp_path, env)
    assert first.returncode == 0, first.stderr
    lab = tmp_path / "my-finetune"
    target = lab / "finetune.py"
    target.write_text(apply_params(target.read_text(), SMALL, "finetune.py"))
    bash("git commit -qam 'test: a tiny budget'", lab, env)
    outputs = []
    for command in commands[1:]:
        done = bash(command, lab, env)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout + done.stderr)
    text = "\n".join(outputs)
    assert "ok: the plan can run" in text and "eval_score: " in text and "Job not submitted" in text
    assert (lab / "finetune-output" / "README.md").is_file()
    finished = [p.read_text() for p in (lab / "experiments").glob("e-*/experiment.yaml")]
    assert len(finished) == 2  # the baseline of main, then the LoRA experiment
    assert sum("kind: baseline" in text for text in finished) == 1
    assert sum("METHOD: lora" in text and "status: finished" in text for text in finished) == 1
