"""The real pre-commit: a lab made by `lab init` rejects a commit with a bad hypothesis.

Also checks this repo's hook manifest, and (slow) runs the `.pre-commit-hooks.yaml`
hook the way another repo would, in pre-commit's own isolated environment.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GIT_IDENTITY  # noqa: E402

from runner.assets import asset_path

REPO = asset_path("schemas").parent


def pre_commit() -> list[str]:
    beside = Path(sys.executable).parent / "pre-commit"
    found = str(beside) if beside.exists() else shutil.which("pre-commit")
    if not found:
        pytest.fail("pre-commit is not installed (pip install -e '.[dev]')")
    return [found]


@pytest.fixture
def hooked_lab(tmp_path, run_lab, git, monkeypatch):
    monkeypatch.setenv("PRE_COMMIT_HOME", str(tmp_path / "pre-commit-home"))
    result = run_lab("init", "lab", "--template", "blank", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "lab"
    installed = subprocess.run([*pre_commit(), "install"], cwd=root, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    assert (root / ".git" / "hooks" / "pre-commit").exists()
    return root


def commit(root: Path, message: str) -> subprocess.CompletedProcess:
    """`git commit`, which runs the installed pre-commit hook; never raises on failure."""
    return subprocess.run(["git", "commit", "-m", message], cwd=root, capture_output=True, text=True,
                          env={**os.environ, **GIT_IDENTITY}, timeout=120)


def test_commit_with_a_bad_hypothesis_is_rejected_and_a_good_one_passes(hooked_lab, git, write_doc,
                                                                        hypothesis_doc):
    root = hooked_lab
    head = git(root, "rev-parse", "HEAD")
    write_doc(root / "hypotheses" / "h-bad.yaml", {**hypothesis_doc("h-bad"), "titel": "typo"})
    git(root, "add", "hypotheses/h-bad.yaml")
    rejected = commit(root, "a bad idea")
    output = rejected.stdout + rejected.stderr
    assert rejected.returncode != 0, output
    assert "lab validate" in output and "Failed" in output
    assert "hypotheses/h-bad.yaml:" in output and ": titel: unknown field (did you mean 'title'?" in output
    assert git(root, "rev-parse", "HEAD") == head, "the bad commit landed"

    write_doc(root / "hypotheses" / "h-bad.yaml", hypothesis_doc("h-bad"))
    git(root, "add", "hypotheses/h-bad.yaml")
    accepted = commit(root, "a good idea")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "lab validate" in accepted.stderr + accepted.stdout and "Passed" in accepted.stderr + accepted.stdout
    assert git(root, "rev-parse", "HEAD") != head
    assert git(root, "show", "--name-only", "--format=", "HEAD").split() == ["hypotheses/h-bad.yaml"]


def test_unrelated_files_skip_the_hook(hooked_lab, git):
    (hooked_lab / "README.md").write_text("# my lab\n")
    git(hooked_lab, "add", "README.md")
    result = commit(hooked_lab, "docs")
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "lab validate" in output and "Skipped" in output


def test_this_repos_hook_manifest_and_config_are_valid():
    for args in (["validate-manifest", ".pre-commit-hooks.yaml"], ["validate-config", ".pre-commit-config.yaml"]):
        result = subprocess.run([*pre_commit(), *args], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_hook_from_this_repo_in_an_isolated_env(hooked_lab, git, write_doc, hypothesis_doc):
    """`pre-commit try-repo`: pre-commit pip-installs benchlab (not editable) into its own venv,
    exactly as a repo using `- repo: <benchlab> hooks: [{id: lab-validate}]` would get it."""
    root = hooked_lab
    write_doc(root / "hypotheses" / "h-good.yaml", hypothesis_doc("h-good"))
    write_doc(root / "hypotheses" / "h-bad.yaml", {**hypothesis_doc("h-bad"), "status": "maybe"})
    git(root, "add", "hypotheses")
    env = {k: v for k, v in os.environ.items() if k != "PIP_NO_INDEX"}  # pip may reach PyPI for deps
    result = subprocess.run([*pre_commit(), "try-repo", str(REPO), "lab-validate"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=540)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "hypotheses/h-bad.yaml:" in output and ": status: 'maybe' is not one of" in output
    assert "h-good" not in output
