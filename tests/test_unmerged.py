"""An unmerged tree is refused by `lab validate`: real merges stopped by git, through the real CLI."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import _env, _git, _run_lab
from test_loop import toy_lab

from runner.files.tables import SCORES
from runner.lab import Lab


def clone(source: Path, target: Path) -> Lab:
    _git(target.parent, "clone", "-q", str(source), target.name)
    return Lab(target)


def lab_cli(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    return _run_lab(*args, cwd=lab.root)


def conflicting_clones(tmp_path: Path, path: str, ours: bytes, theirs: bytes) -> Lab:
    """Two clones that wrote `path` differently; the first has merged the second (stopped on it)."""
    origin = toy_lab(tmp_path / "origin")
    a, b = clone(origin.root, tmp_path / "a"), clone(origin.root, tmp_path / "b")
    for lab, data in ((a, ours), (b, theirs)):
        (lab.root / path).parent.mkdir(parents=True, exist_ok=True)
        (lab.root / path).write_bytes(data)
        _git(lab.root, "add", "-f", path)
        _git(lab.root, "commit", "-q", "--no-verify", "-m", f"write {path}")
    _git(a.root, "fetch", "-q", str(b.root), "main")
    stopped = subprocess.run(["git", "merge", "--no-edit", "FETCH_HEAD"], cwd=a.root, env=_env(),
                             capture_output=True, text=True)
    assert stopped.returncode != 0 and "CONFLICT" in stopped.stdout
    return a


def hypothesis_text(title: str) -> bytes:
    return (f"id: h-1\ntitle: {title}\nstatus: proposed\nauthor: human\ncreated: '2026-11-21T08:30:00Z'\n"
            "change:\n  params:\n    X: 2.0\n").encode()


def test_a_conflicted_yaml_file_fails_validation_unmerged_and_then_by_its_markers(tmp_path):
    lab = conflicting_clones(tmp_path, "hypotheses/h-1.yaml", hypothesis_text("ours"), hypothesis_text("theirs"))
    result = lab_cli(lab, "validate")
    assert result.returncode == 1
    assert "hypotheses/h-1.yaml: -: unresolved merge conflict (git holds it unmerged" in result.stdout
    assert "hypotheses/h-1.yaml:2: -: unresolved merge conflict (conflict markers from line 2)" in result.stdout
    _git(lab.root, "add", "hypotheses/h-1.yaml")            # marked resolved, markers still in it
    result = lab_cli(lab, "validate")
    assert result.returncode == 1 and "unmerged" not in result.stdout
    assert "hypotheses/h-1.yaml:2: -: unresolved merge conflict (conflict markers from line 2)" in result.stdout


def test_a_conflicted_markdown_file_fails_validation(tmp_path):
    lab = conflicting_clones(tmp_path, "reports/REPORT.md", b"# Report\n\nours\n", b"# Report\n\ntheirs\n")
    _git(lab.root, "add", "reports/REPORT.md")
    result = lab_cli(lab, "validate")
    assert result.returncode == 1
    assert "reports/REPORT.md:3: -: unresolved merge conflict (conflict markers from line 3)" in result.stdout
    assert lab_cli(lab, "validate", "hypotheses").returncode == 0          # PATHS limit the check


def test_a_conflicted_table_file_fails_validation(tmp_path):
    rows = [{"id": "e-1", "kind": "experiment", "status": "finished", "promoted": False, "value": v}
            for v in (1.0, 2.0)]
    ours, theirs = (pa.BufferOutputStream(), pa.BufferOutputStream())
    for sink, row in ((ours, rows[0]), (theirs, rows[1])):
        pq.write_table(pa.Table.from_pylist([row], schema=SCORES), sink)
    lab = conflicting_clones(tmp_path, "experiments/scores/e-1.parquet", ours.getvalue().to_pybytes(),
                             theirs.getvalue().to_pybytes())
    result = lab_cli(lab, "validate")
    assert result.returncode == 1
    assert "experiments/scores/e-1.parquet: -: unresolved merge conflict (git holds it unmerged" in result.stdout
    (lab.root / "experiments/scores/e-1.parquet").write_bytes(   # both sides as text, as a text merge leaves it
        b"<<<<<<< HEAD\nPAR1...\n=======\nPAR1...\n>>>>>>> theirs\n")
    _git(lab.root, "add", "experiments/scores/e-1.parquet")
    result = lab_cli(lab, "validate")
    assert "experiments/scores/e-1.parquet:1: -: unresolved merge conflict (conflict markers from line 1)" \
        in result.stdout and result.returncode == 1


def test_a_clean_lab_with_a_setext_heading_is_not_a_conflict(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    (lab.root / "NOTES.md").write_text("Title\n=======\n\ntext\n")
    _git(lab.root, "add", "NOTES.md")
    assert lab_cli(lab, "validate").returncode == 0
