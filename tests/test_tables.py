"""Parquet tables written by runner.files.tables, read back by pyarrow and DuckDB; docs cannot drift."""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.assets import asset_path
from runner.files import tables
from runner.files.tabledir import UnreadableTable
from runner.state.events import pending, read_events, record_event, seal
from runner.state.scores import scores, write_score, write_scores

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)


def score_rows() -> list[dict]:
    return [
        {"id": "e-base", "hypothesis": None, "kind": "baseline", "status": "finished", "metric": "val_bpb",
         "value": 1.25, "promoted": False, "wave": 0, "started": T0, "finished": T0 + timedelta(seconds=300),
         "duration_s": 300.0, "change": "{}", "base": "a" * 40},
        {"id": "e-1", "hypothesis": "h-1", "kind": "experiment", "status": "finished", "metric": "val_bpb",
         "value": 1.2, "base_value": 1.25, "delta": -0.05, "promoted": True, "wave": 1, "started": T0,
         "finished": T0 + timedelta(seconds=290), "duration_s": 290.5, "change": '{"params": {"LR": 0.002}}',
         "worker": "w0", "slot": "cpu0"},
        {"id": "e-2", "hypothesis": "h-2", "kind": "experiment", "status": "failed", "metric": "val_bpb",
         "value": None, "promoted": False, "wave": 1, "reason": "NaN loss"},
    ]


def test_scores_round_trip_through_pyarrow_and_duckdb(tmp_path):
    path = tmp_path / "experiments" / "scores.parquet"
    tables.write_table(path, pa.Table.from_pylist(score_rows(), schema=tables.SCORES))
    assert [p.name for p in path.parent.iterdir()] == ["scores.parquet"]  # no temp file left
    assert pq.read_schema(path).equals(tables.SCORES)
    back = pq.read_table(path).to_pylist()
    assert [r["id"] for r in back] == ["e-base", "e-1", "e-2"]
    assert back[1]["value"] == 1.2 and back[1]["delta"] == -0.05 and back[1]["promoted"] is True
    assert back[1]["finished"] == T0 + timedelta(seconds=290) and back[1]["finished"].tzinfo is not None
    assert back[2]["value"] is None and back[2]["reason"] == "NaN loss"
    assert tables.check_parquet(path, tables.SCORES, "experiments/scores.parquet") == []

    con = duckdb.connect()
    rows = con.execute(f"SELECT id, value, promoted, duration_s FROM '{path}' WHERE value IS NOT NULL "
                       "ORDER BY value").fetchall()
    assert rows == [("e-1", 1.2, True, 290.5), ("e-base", 1.25, False, 300.0)]
    best = con.execute(f"SELECT min(value) FROM '{path}' WHERE promoted OR kind = 'baseline'").fetchone()[0]
    assert best == 1.2
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{path}')").fetchall())
    assert types["value"] == "DOUBLE" and types["promoted"] == "BOOLEAN" and types["wave"] == "BIGINT"
    assert types["started"] == "TIMESTAMP WITH TIME ZONE"


def test_metrics_round_trip_and_summary_rows(tmp_path):
    path = tmp_path / "experiments" / "e-1" / "metrics.parquet"
    rows = [{"step": s, "time_s": s * 0.25, "name": "train_loss", "value": 3.0 / (s + 1), "summary": False}
            for s in range(50)]
    rows += [{"step": None, "time_s": 12.5, "name": "val_bpb", "value": 1.2, "summary": True},
             {"step": 49, "time_s": 12.4, "name": "grad_norm", "value": float("nan"), "summary": False}]
    tables.write_table(path, pa.Table.from_pylist(rows, schema=tables.METRICS))
    back = pq.read_table(path)
    assert back.num_rows == 52 and back.schema.equals(tables.METRICS)
    assert back.column("value").to_pylist()[:3] == [3.0, 1.5, 1.0]
    assert math.isnan(back.column("value")[51].as_py())
    con = duckdb.connect()
    assert con.execute(f"SELECT name, value FROM '{path}' WHERE summary").fetchall() == [("val_bpb", 1.2)]
    assert con.execute(f"SELECT count(*), max(step) FROM '{path}' WHERE name = 'train_loss'").fetchone() == (50, 49)


def test_a_table_of_many_files_reads_as_one_table_each_row_once(lab):
    rows = score_rows()
    for i, row in enumerate(rows):
        row["finished"] = T0 + timedelta(seconds=10 * (3 - i))          # finished in reverse id order
    tables.write_table(lab.root / "experiments" / "scores.parquet",    # an earlier version's single file
                       pa.Table.from_pylist(rows[:1], schema=tables.SCORES))
    write_score(lab, rows[1])
    write_scores(lab, rows[1:])                                         # a part repeating e-1's row
    write_scores(lab, rows[2:])                                         # another lab's part, the same e-2
    table = scores(lab)
    assert table["id"].to_pylist() == ["e-2", "e-1", "e-base"]          # each once, by finish time
    assert table.schema.equals(tables.SCORES)
    con = duckdb.connect()                                              # what the skills' SQL reads
    glob = f"{lab.root}/experiments/scores/*.parquet"
    assert con.execute(f"SELECT count(*), count(DISTINCT id) FROM read_parquet('{glob}')").fetchone() == (4, 2)


def test_a_file_written_again_is_read_again(lab):
    write_score(lab, score_rows()[1])
    assert scores(lab)["value"].to_pylist() == [1.2]
    tables.write_table(lab.root / "experiments" / "scores" / "e-1.parquet",
                       pa.Table.from_pylist([{**score_rows()[1], "value": 0.5}], schema=tables.SCORES))
    assert scores(lab)["value"].to_pylist() == [0.5]
    (lab.root / "experiments" / "scores" / "e-1.parquet").unlink()
    assert scores(lab).num_rows == 0


def test_an_unreadable_file_is_named_or_skipped(lab):
    write_score(lab, score_rows()[0])
    bad = lab.root / "experiments" / "scores" / "e-bad.parquet"
    bad.write_bytes(b"PAR1 not parquet")
    with pytest.raises(UnreadableTable) as caught:
        scores(lab)
    assert caught.value.path == bad
    skipped = []
    assert scores(lab, skipped)["id"].to_pylist() == ["e-base"]
    assert skipped and skipped[0].startswith("experiments/scores/e-bad.parquet: ")


def test_a_part_is_named_by_its_content(tmp_path):
    table = pa.Table.from_pylist(score_rows(), schema=tables.SCORES)
    first = tables.write_part(tmp_path / "a", table)
    second = tables.write_part(tmp_path / "b", table)
    assert first.name == second.name and first.name.startswith("part-")
    assert first.read_bytes() == second.read_bytes()
    other = tables.write_part(tmp_path / "a", table.slice(1))
    assert other.name != first.name and len(list((tmp_path / "a").iterdir())) == 2


def test_read_table_of_a_missing_file_is_empty_with_the_schema(tmp_path):
    table = tables.read_table(tmp_path / "nope.parquet", tables.EVENTS)
    assert table.num_rows == 0 and table.schema.equals(tables.EVENTS)


def test_events_go_to_one_file_per_writer_until_it_is_committed(lab):
    record_event(lab, "warn", "nan", "loss became NaN", experiment="e-1", hypothesis="h-1")
    record_event(lab, "error", "timeout", "killed after 300 s", experiment="e-2", path="queue/e-2.yaml")
    with pytest.raises(ValueError):
        record_event(lab, "loud", "x", "y")
    [first] = list((lab.root / "experiments" / "events").iterdir())
    assert pending(lab) == first and re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}\.parquet", first.name)
    seal(lab, first)                                                    # committed: the next event starts a file
    assert pending(lab) is None
    record_event(lab, "info", "promoted", "e-3 promoted", experiment="e-3")
    assert len(list((lab.root / "experiments" / "events").iterdir())) == 2
    assert pq.read_table(first).num_rows == 2                           # the sealed file is never written again
    events = read_events(lab).to_pylist()
    assert [(e["level"], e["kind"], e["experiment"]) for e in events] == [
        ("warn", "nan", "e-1"), ("error", "timeout", "e-2"), ("info", "promoted", "e-3")]
    assert events[0]["at"].tzinfo is not None and events[0]["at"] <= events[1]["at"]
    assert pq.read_schema(first).equals(tables.EVENTS)
    glob = f"{lab.root}/experiments/events/*.parquet"
    errors = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{glob}') WHERE level = 'error'")
    assert errors.fetchone() == (1,)


def test_schema_for_paths():
    assert tables.schema_for("experiments/scores/e-1.parquet") is tables.SCORES
    assert tables.schema_for("experiments/scores/part-0a1b.parquet") is tables.SCORES
    assert tables.schema_for("experiments/events/20261121T080000Z-0a1b2c3d.parquet") is tables.EVENTS
    assert tables.schema_for("experiments/scores.parquet") is tables.SCORES       # an earlier version's
    assert tables.schema_for("experiments/events.parquet") is tables.EVENTS
    assert tables.schema_for("experiments/e-1/metrics.parquet") is tables.METRICS
    assert tables.schema_for("experiments/e-1/other.parquet") is None
    assert tables.schema_for("experiments/scores/sub/e-1.parquet") is None
    assert tables.schema_for("scores.parquet") is None


def test_tables_md_matches_the_code(run_lab, tmp_path):
    documented = (asset_path("schemas") / "tables.md").read_text()
    assert documented == tables.tables_markdown(), "schemas/tables.md drifted: run `lab schema tables > " \
                                                   "schemas/tables.md`"
    result = run_lab("schema", "tables", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == documented
    for name in tables.SCORES.names + tables.METRICS.names + tables.EVENTS.names:
        assert f"| {name} |" in documented


def test_views_keep_a_snapshot_the_runner_never_reads(lab, run_lab):
    rows = score_rows()
    for row in rows[:2]:
        write_score(lab, row)
    query = ["query", "SELECT id, value FROM scores ORDER BY id", "--json"]
    assert [r["id"] for r in json.loads(run_lab(*query, cwd=lab.root).stdout)] == ["e-1", "e-base"]
    snapshot = lab.runtime / "cache" / "tables" / "scores.parquet"
    covered = json.loads(pq.read_schema(snapshot).metadata[b"benchlab.files"])
    assert sorted(key[0] for key in covered) == ["experiments/scores/e-1.parquet", "experiments/scores/e-base.parquet"]
    write_score(lab, rows[2])                                           # a new file: read, snapshot extended
    assert [r["id"] for r in json.loads(run_lab(*query, cwd=lab.root).stdout)] == ["e-1", "e-2", "e-base"]
    assert len(json.loads(pq.read_schema(snapshot).metadata[b"benchlab.files"])) == 3
    forged = pq.read_table(snapshot)                                    # the snapshot is what a view reads...
    values = pa.array([0.0001] * forged.num_rows)
    pq.write_table(forged.set_column(forged.schema.get_field_index("value"), "value", values), snapshot)
    assert {r["value"] for r in json.loads(run_lab(*query, cwd=lab.root).stdout)} == {0.0001}
    assert 0.0001 not in scores(lab)["value"].to_pylist()               # ...never what the runner decides on
    (lab.root / "experiments" / "scores" / "e-2.parquet").unlink()      # a file it covers is gone: read afresh
    assert [r["value"] for r in json.loads(run_lab(*query, cwd=lab.root).stdout)] == [1.2, 1.25]
