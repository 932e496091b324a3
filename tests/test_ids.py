"""Ids: safe file names, no central counter, no collision between processes or clones."""
from __future__ import annotations

import multiprocessing
import re

import pytest

from runner.files.yamlio import create_new
from runner.lab import Lab
from runner.state import ids
from runner.state.create import new_experiment, new_hypothesis
from runner.validation.validate import validate

ID = re.compile(r"^(h|e)-\d{8}-\d{6}-[a-z2-7]{8}$")


@pytest.mark.parametrize("value", ["h-1", "e-20261121-083000-abcdefgh", "a_b", "v1.2", "A.b-c_d", "x" * 100])
def test_safe_ids(value):
    assert ids.is_safe_id(value)


@pytest.mark.parametrize("value", ["", "a/b", "../a", "a/../b", "a..b", "a b", " a", ".a", "a.", "-a", "_a",
                                   "a\\b", "a\nb", "é", "x" * 101, None, 5, ["a"]])
def test_unsafe_ids(value):
    assert not ids.is_safe_id(value)


def test_new_id_shape_and_order():
    first = ids.new_id("h")
    assert ID.match(first) and ids.is_safe_id(first)
    assert first[2:17] <= ids.new_id("h")[2:17]  # the UTC stamp sorts by creation time


def test_new_id_skips_taken_candidates():
    seen = []
    assert ids.new_id("e", lambda candidate: seen.append(candidate) or len(seen) < 3) == seen[-1]
    assert len(seen) == 3 and len(set(seen)) == 3


def test_new_file_id_avoids_files_and_directories(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "x").mkdir()
    new = ids.new_file_id("e", tmp_path / "q", tmp_path / "x")
    assert not (tmp_path / "q" / f"{new}.yaml").exists() and not (tmp_path / "x" / new).exists()


def test_create_new_never_overwrites(tmp_path):
    path = tmp_path / "a.yaml"
    assert create_new(path, "one\n")
    assert not create_new(path, "two\n")
    assert path.read_text() == "one\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml"]  # no temp file left behind


def _writer(root: str, count: int, results) -> None:
    lab = Lab(root)
    made = []
    for i in range(count):
        hyp, _ = new_hypothesis(lab, f"idea {i}", {"params": {"A": i}})
        exp, _ = new_experiment(lab, hyp, {"params": {"A": i}}, "0" * 40)
        made += [hyp, exp]
    results.put(made)


def test_eight_processes_create_ids_at_once(make_lab, tmp_path):
    """8 processes x 200 ids (100 hypotheses + 100 queue entries each) in one lab, at the same time."""
    lab = make_lab(tmp_path)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(lab.root), 100, results)) for _ in range(8)]
    for proc in procs:
        proc.start()
    made = [new for _ in procs for new in results.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert len(made) == 1600 and len(set(made)) == 1600
    assert len(list(lab.hypotheses.glob("h-*.yaml"))) == 800
    assert len(list(lab.queue.glob("e-*.yaml"))) == 800
    assert all(ID.match(new) for new in made)
    report = validate(lab.root)
    assert report.ok, report.problems[:3]


def test_two_clones_create_ids_and_merge_without_conflicts(make_lab, tmp_path, git, run_lab):
    """Two machines (clones) create hypotheses and queue entries independently, then merge by PR."""
    origin = make_lab(tmp_path, name="origin").root
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    clones = {}
    for name in ("alice", "bob"):
        git(tmp_path, "clone", "-q", str(bare), name)
        clones[name] = Lab(tmp_path / name)
    created = {}
    for name, lab in clones.items():
        out = [run_lab("hypothesis", "new", "--title", f"{name}'s idea", "--param", "LR=0.002",
                       cwd=lab.root).stdout.split()[0]]
        out.append(run_lab("queue", "add", "--hypothesis", out[0], cwd=lab.root).stdout.split()[0])
        base = git(lab.root, "rev-parse", "HEAD").strip()
        for i in range(40):
            hyp, _ = new_hypothesis(lab, f"{name} {i}", {"params": {"LR": i}})
            exp, _ = new_experiment(lab, hyp, {"params": {"LR": i}}, base)
            out += [hyp, exp]
        created[name] = out
        git(lab.root, "add", "hypotheses", "queue")
        git(lab.root, "commit", "-qm", f"{name}: ideas")
    assert not set(created["alice"]) & set(created["bob"])
    git(clones["alice"].root, "push", "-q", "origin", "main")
    bob = clones["bob"].root
    git(bob, "pull", "-q", "--no-rebase", "--no-edit", "origin", "main")  # the "PR merge"
    assert git(bob, "diff", "--name-only", "--diff-filter=U") == ""
    assert len(list((bob / "hypotheses").glob("h-*.yaml"))) == 82
    assert len(list((bob / "queue").glob("e-*.yaml"))) == 82
    result = run_lab("validate", cwd=bob)
    assert result.returncode == 0, result.stdout
