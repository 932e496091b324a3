"""Shared fixtures: real labs in real git repos, the real `lab` CLI, valid documents.

    def test_x(make_lab, tmp_path):
        lab = make_lab(tmp_path)                      # blank template, first commit made
        write_doc(lab.hypotheses / "h-1.yaml", hypothesis_doc("h-1"))
        result = run_lab("validate", cwd=lab.root)    # subprocess; result.returncode/stdout/stderr
        git(lab.root, "add", "-A"); git(lab.root, "commit", "-qm", "x")

Fixtures: make_lab, lab (a blank lab at tmp_path/"lab"), run_lab, git, write_doc,
hypothesis_doc, experiment_doc, tree_hashes; slurm_cluster (session: a private one-node Slurm,
tests/slurm_cluster.py). `lab_env()` puts the real `lab` first on PATH for shipped scripts that
call it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401  (one private Slurm per session, for every module)

from runner.files.yamlio import write_yaml
from runner.lab import Lab
from runner.scaffold import init_lab

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "lab-tests", "GIT_AUTHOR_EMAIL": "tests@benchlab.invalid",
                "GIT_COMMITTER_NAME": "lab-tests", "GIT_COMMITTER_EMAIL": "tests@benchlab.invalid"}
BASE_COMMIT = "0123456789abcdef0123456789abcdef01234567"
CREATED = "2026-11-21T08:30:00Z"


def lab_executable() -> str:
    """The `lab` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "lab"
    found = str(beside) if beside.exists() else shutil.which("lab")
    if not found:
        pytest.fail("the `lab` console script is not installed (pip install -e '.[dev]')")
    return found


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, **GIT_IDENTITY, "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(extra or {})
    return env


def lab_env(extra: dict | None = None) -> dict:
    """The test environment with the real `lab` script first on PATH, for scripts that call `lab`."""
    env = _env(extra)
    env["PATH"] = f"{Path(lab_executable()).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run_lab(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120,
             input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess; never raises on a non-zero exit."""
    return subprocess.run([lab_executable(), *map(str, args)], cwd=cwd, env=_env(env), input=input,
                          capture_output=True, text=True, timeout=timeout)


def _git(root: Path, *args: str, check: bool = True, env: dict | None = None) -> str:
    """Run git in `root` with a test identity; return stdout (raises on failure when check)."""
    result = subprocess.run(["git", *args], cwd=root, env=_env(env), capture_output=True, text=True,
                            timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result.stdout


def _make_lab(directory: Path, template: str = "blank", name: str = "lab", **kwargs) -> Lab:
    """A new lab at directory/name: `lab init` layout in a git repo with its first commit."""
    return Lab(init_lab(Path(directory) / name, template=template, **kwargs))


def _hypothesis_doc(hyp_id: str, **fields) -> dict:
    """A valid hypothesis document; keyword arguments override or add fields."""
    doc = {"id": hyp_id, "title": f"Try idea {hyp_id}", "status": "proposed", "author": "human",
           "created": CREATED, "change": {"params": {"LEARNING_RATE": 0.002}}}
    doc.update(fields)
    return doc


def _experiment_doc(exp_id: str, hypothesis: str, status: str = "queued", **fields) -> dict:
    """A valid queue entry (status queued..running) or finished record (terminal status)."""
    doc = {"id": exp_id, "hypothesis": hypothesis, "kind": "experiment", "status": status,
           "base": BASE_COMMIT, "priority": 0, "wave": 0, "change": {"params": {"LEARNING_RATE": 0.002}},
           "created": CREATED, "history": [{"status": "queued", "at": CREATED, "by": "planner"}]}
    if status != "queued":
        doc["history"].append({"status": status, "at": CREATED, "by": "runner"})
    doc.update(fields)
    return doc


def _write_doc(path: Path, doc: dict) -> Path:
    write_yaml(Path(path), doc)
    return Path(path)


def _tree_hashes(root: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file under root outside .git/."""
    hashes = {}
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".git" or rel.startswith(".git/") or not path.is_file():
            continue
        hashes[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return hashes


@pytest.fixture
def make_lab():
    return _make_lab


@pytest.fixture
def lab(tmp_path) -> Lab:
    return _make_lab(tmp_path)


@pytest.fixture
def run_lab():
    return _run_lab


@pytest.fixture
def git():
    return _git


@pytest.fixture
def write_doc():
    return _write_doc


@pytest.fixture
def hypothesis_doc():
    return _hypothesis_doc


@pytest.fixture
def experiment_doc():
    return _experiment_doc


@pytest.fixture
def tree_hashes():
    return _tree_hashes
