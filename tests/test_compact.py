"""Compaction of the many-file tables and the move of an earlier version's single-file tables:
real git repositories, the real CLI, Parquet read back."""
from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
from conftest import _env, _git, _run_lab
from test_loop import toy_lab

from runner.files.tables import EVENTS, SCORES, write_table
from runner.lab import Lab
from runner.loop.run import run
from runner.repo import gitops
from runner.state.compact import SMALL_FILES
from runner.state.events import read_events
from runner.state.scores import scores, write_score

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)


def row(i: int) -> dict:
    return {"id": f"e-{i:03d}", "kind": "experiment", "status": "finished", "value": 2.0 - i / 100,
            "promoted": False, "finished": T0 + timedelta(minutes=i)}


def recorded(lab: Lab, ids, message: str = "record") -> None:
    for i in ids:
        write_score(lab, row(i))
    gitops.commit_paths(lab.root, ["experiments/scores"], message)


def files(lab: Lab, table: str = "scores") -> list[str]:
    return sorted(p.name for p in (lab.experiments / table).glob("*.parquet"))


def clone(source: Path, target: Path) -> Lab:
    _git(target.parent, "clone", "-q", str(source), target.name)
    return Lab(target)


def test_compactions_are_deterministic_and_two_labs_compactions_still_merge(tmp_path):
    origin = toy_lab(tmp_path / "origin")
    recorded(origin, range(10))
    a, b, c = (clone(origin.root, tmp_path / name) for name in "abc")
    recorded(a, (10, 11))
    recorded(b, (12,))
    for lab in (a, b, c, origin):
        result = _run_lab("compact", cwd=lab.root)
        assert result.returncode == 0 and "file(s) changed" in result.stdout, result.stderr
        assert len(files(lab)) == 1 and files(lab)[0].startswith("part-")
        assert not gitops.dirty(lab.root, "experiments")                      # committed
    assert files(c) == files(origin)                                           # the same rows, the same file
    assert (c.experiments / "scores" / files(c)[0]).read_bytes() == \
        (origin.experiments / "scores" / files(origin)[0]).read_bytes()
    assert _run_lab("compact", cwd=c.root).stdout.strip() == "lab compact: nothing to compact"
    _git(a.root, "fetch", "-q", str(b.root), "main")
    merged = subprocess.run(["git", "merge", "--no-edit", "FETCH_HEAD"], cwd=a.root, env=_env(),
                            capture_output=True, text=True)
    assert merged.returncode == 0 and "CONFLICT" not in merged.stdout, merged.stdout
    assert len(files(a)) == 2                                                  # both parts: e-000..009 twice
    assert scores(a)["id"].to_pylist() == [f"e-{i:03d}" for i in range(13)]   # each row once
    assert _run_lab("validate", cwd=a.root).returncode == 0
    assert _run_lab("compact", cwd=a.root).returncode == 0 and len(files(a)) == 1
    assert scores(a).num_rows == 13


def test_the_runner_compacts_once_a_table_holds_enough_small_files(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    recorded(lab, range(SMALL_FILES - 1))
    run(lab, once=True, plan=False)
    assert len(files(lab)) == SMALL_FILES - 1                                 # not yet
    recorded(lab, [SMALL_FILES])
    run(lab, once=True, plan=False, compact=False)                            # not this runner's job
    assert len(files(lab)) == SMALL_FILES
    run(lab, once=True, plan=False)
    assert files(lab) == [files(lab)[0]] and files(lab)[0].startswith("part-")
    assert scores(lab).num_rows == SMALL_FILES and not gitops.dirty(lab.root, "experiments")
    assert "compact the tables' small files" in _git(lab.root, "log", "-1", "--format=%s")


def test_an_earlier_versions_single_file_tables_are_read_then_moved(tmp_path):
    lab = toy_lab(tmp_path / "lab")
    write_table(lab.experiments / "scores.parquet", pa.Table.from_pylist([row(i) for i in range(3)], schema=SCORES))
    write_table(lab.experiments / "events.parquet", pa.Table.from_pylist(
        [{"at": T0, "level": "info", "kind": "promoted", "message": "e-001 promoted", "experiment": "e-001"}],
        schema=EVENTS))
    (lab.experiments / "LEADERBOARD.md").write_text("# Leaderboard\n")          # committed, as it once was
    gitignore = lab.root / ".gitignore"
    gitignore.write_text(gitignore.read_text().replace("experiments/LEADERBOARD.md\n", ""))
    gitops.commit_paths(lab.root, ["experiments", ".gitignore"], "a lab of the earlier version")
    assert _git(lab.root, "ls-files", "experiments/LEADERBOARD.md").strip()
    query = _run_lab("query", "SELECT count(*) AS n FROM scores", "--json", cwd=lab.root)
    assert '"n": 3' in query.stdout                                           # read as it is
    result = _run_lab("run", "--once", "--quiet", cwd=lab.root)
    assert result.returncode == 0, result.stderr
    assert not (lab.experiments / "scores.parquet").exists() and not (lab.experiments / "events.parquet").exists()
    assert files(lab)[0].startswith("part-") and len(files(lab)) == 1
    assert scores(lab)["id"].to_pylist() == ["e-000", "e-001", "e-002"]
    assert read_events(lab)["message"].to_pylist()[0] == "e-001 promoted"
    assert not gitops.dirty(lab.root, "experiments")
    assert "experiments/scores.parquet" not in _git(lab.root, "ls-files", "experiments")
    assert not _git(lab.root, "ls-files", "experiments/LEADERBOARD.md").strip()   # a view: out of git
    assert "experiments/LEADERBOARD.md" in gitignore.read_text() and not gitops.dirty(lab.root, ".gitignore")
    assert _run_lab("validate", cwd=lab.root).returncode == 0


def test_compact_refuses_while_a_runner_holds_the_lab(tmp_path):
    from runner.loop.run import runner_lock
    lab = toy_lab(tmp_path / "lab")
    lock = runner_lock(lab)
    assert lock.acquire(blocking=False)
    try:
        result = _run_lab("compact", cwd=lab.root)
    finally:
        lock.release()
    assert result.returncode == 2 and "a runner holds this lab" in result.stderr
