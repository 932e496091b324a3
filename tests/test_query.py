"""`lab query`: DuckDB views over a real lab's Parquet and YAML state."""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from conftest import lab_env, lab_executable

from runner.files.tables import METRICS, SCORES, write_table
from runner.files.yamlio import write_yaml
from runner.lab import Lab
from runner.repo import gitops
from runner.report.query import EXPERIMENTS, HYPOTHESES, METRICS_VIEW, run_query
from runner.scaffold import init_lab
from runner.state.create import new_experiment, new_hypothesis
from runner.state.events import record_event
from runner.state.scores import write_scores
from runner.state.fingerprint import fingerprint

REPO = Path(__file__).resolve().parent.parent
def lab_cmd(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The real `lab` console script (the one `pip install` made), as a user runs it."""
    return subprocess.run([lab_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


T0 = dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.timezone.utc)


def score_row(exp_id, hyp, change, value, *, kind="experiment", status="finished", promoted=False,
              target="t-main1", base="a" * 40, minutes=0, delta=None):
    return {"id": exp_id, "hypothesis": hyp, "kind": kind, "status": status, "title": exp_id,
            "change": json.dumps(change), "fingerprint": fingerprint(change) if change else "",
            "base": base, "commit": "b" * 40, "target": target, "metric": "val_bpb", "value": value,
            "base_value": 2.0, "delta": delta if delta is not None else (None if value is None else value - 2.0),
            "promoted": promoted, "slot": "cpu0", "worker": "builtin", "wave": 1,
            "started": T0 + dt.timedelta(minutes=minutes), "finished": T0 + dt.timedelta(minutes=minutes + 1),
            "duration_s": 60.0, "reason": None}


def finish(lab: Lab, exp_id: str, hyp: str, change: dict, value: float | None, status: str = "finished") -> None:
    """What the runner leaves for a finished experiment: experiment.yaml and metrics.parquet."""
    d = lab.experiments / exp_id
    d.mkdir(parents=True)
    write_yaml(d / "experiment.yaml", {
        "id": exp_id, "hypothesis": hyp, "kind": "experiment", "status": status, "base": "a" * 40,
        "change": change, "fingerprint": fingerprint(change), "created": "2026-11-21T08:00:00Z",
        "result": {"metric": "val_bpb", "value": value, "base_value": 2.0,
                   "delta": None if value is None else value - 2.0, "promoted": False}})
    rows = [{"step": s, "time_s": s * 0.1, "name": "train_loss", "value": 3.0 - s * 0.1, "summary": False}
            for s in range(1, 4)]
    rows.append({"step": None, "time_s": None, "name": "val_bpb", "value": value, "summary": True})
    write_table(d / "metrics.parquet", pa.Table.from_pylist(rows, schema=METRICS))


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A lab with hypotheses, a queue, finished experiments, scores, metrics, events and one bad file."""
    tmp = tmp_path_factory.mktemp("qlab")
    lab = Lab(init_lab(tmp / "lab"))
    head = gitops.head(lab.root)
    h_lr, _ = new_hypothesis(lab, "lr 6e-4", {"params": {"LEARNING_RATE": 0.0006}}, author="researcher",
                             source={"kind": "paper", "ref": "arXiv:1711.05101"})
    h_lr2, _ = new_hypothesis(lab, "lr 2e-3", {"params": {"LEARNING_RATE": 0.002}})
    h_wu, _ = new_hypothesis(lab, "warmup 30", {"params": {"WARMUP_STEPS": 30}}, status="accepted")
    h_bad, _ = new_hypothesis(lab, "two things", {"params": {"N_LAYER": 6, "N_EMBD": 192}}, status="rejected")
    e_q, _ = new_experiment(lab, h_lr, {"params": {"LEARNING_RATE": 0.0006}}, head, priority=3)
    finish(lab, "e-old-lr", h_lr2, {"params": {"LEARNING_RATE": 0.002}}, 1.95)
    finish(lab, "e-nan", h_lr2, {"params": {"LEARNING_RATE": 0.05}}, None, status="failed")
    scores = [
        score_row("e-base1", None, {}, 2.0, kind="baseline", target="t-old", minutes=0),
        score_row("e-lr-old-target", h_lr2, {"params": {"LEARNING_RATE": 0.003}}, 1.99, target="t-old", minutes=1),
        score_row("e-promo", h_wu, {"params": {"WARMUP_STEPS": 30}}, 1.90, promoted=True, target="t-main1",
                  minutes=2),
        score_row("e-old-lr", h_lr2, {"params": {"LEARNING_RATE": 0.002}}, 1.95, target="t-main1", minutes=3),
        score_row("e-nan", h_lr2, {"params": {"LEARNING_RATE": 0.05}}, None, status="failed", target="t-main1",
                  minutes=4),
    ]
    write_scores(lab, scores)
    record_event(lab, "warn", "nan", "val_bpb is nan", experiment="e-nan")
    record_event(lab, "info", "promoted", "e-promo promoted")
    (lab.hypotheses / "h-broken.yaml").write_text("id: h-broken\ntitle: [unclosed\n")
    ids = {"h_lr": h_lr, "h_lr2": h_lr2, "h_wu": h_wu, "h_bad": h_bad, "e_q": e_q}
    return lab, ids, lab_env()


def rows(lab: Lab, sql: str) -> list[dict]:
    return run_query(lab, sql).records()


def test_learning_rates_tried_on_this_base(populated):
    """The skill's example: only rows measured on main's current target, not the older one."""
    lab, _, _ = populated
    sql = _cookbook_block("Which learning rates have been tried on this base?")
    got = rows(lab, sql)
    assert [(r["lr"], r["id"]) for r in got] == [("0.002", "e-old-lr"), ("0.05", "e-nan")]
    assert got[0]["value"] == pytest.approx(1.95)


def test_yaml_views_flatten_fields(populated):
    lab, ids, _ = populated
    hyp = rows(lab, f"SELECT * FROM hypotheses WHERE id = '{ids['h_lr']}'")[0]
    assert hyp["status"] == "proposed" and hyp["source_kind"] == "paper" and hyp["source_ref"] == "arXiv:1711.05101"
    assert json.loads(hyp["params"]) == {"LEARNING_RATE": 0.0006}
    assert hyp["fingerprint"] == fingerprint({"params": {"LEARNING_RATE": 0.0006}})
    assert hyp["path"] == f"hypotheses/{ids['h_lr']}.yaml"
    queue = rows(lab, "SELECT id, hypothesis, status, priority, params->>'LEARNING_RATE' AS lr FROM queue")
    assert queue == [{"id": ids["e_q"], "hypothesis": ids["h_lr"], "status": "queued", "priority": 3,
                      "lr": "0.0006"}]
    done = rows(lab, "SELECT id, status, value FROM experiments ORDER BY id")
    assert done == [{"id": "e-nan", "status": "failed", "value": None},
                    {"id": "e-old-lr", "status": "finished", "value": 1.95}]


def test_duplicate_lookup_by_fingerprint_across_views(populated):
    lab, ids, _ = populated
    fp = fingerprint({"params": {"LEARNING_RATE": 0.0006}})
    got = rows(lab, f"""SELECT 'hypothesis' AS stage, id FROM hypotheses WHERE fingerprint = '{fp}'
                        UNION ALL SELECT 'queue', id FROM queue WHERE fingerprint = '{fp}' ORDER BY stage""")
    assert got == [{"stage": "hypothesis", "id": ids["h_lr"]}, {"stage": "queue", "id": ids["e_q"]}]


def test_metrics_view_has_experiment_column(populated):
    lab, _, _ = populated
    got = rows(lab, "SELECT experiment, count(*) AS n, max(value) FILTER (WHERE summary) AS bpb "
                    "FROM metrics GROUP BY experiment ORDER BY experiment")
    assert got == [{"experiment": "e-nan", "n": 4, "bpb": None}, {"experiment": "e-old-lr", "n": 4, "bpb": 1.95}]


def test_events_and_scores_types(populated):
    lab, _, _ = populated
    got = rows(lab, "SELECT kind, experiment FROM events WHERE level = 'warn'")
    assert got == [{"kind": "nan", "experiment": "e-nan"}]
    started = rows(lab, "SELECT started FROM scores WHERE id = 'e-promo'")[0]["started"]
    assert started.startswith("2026-11-21T08:02:00")


def test_every_cookbook_query_runs(populated):
    """Every ```sql block shipped in the skills is valid SQL against a real lab."""
    lab, _, _ = populated
    blocks = []
    for md in sorted((REPO / "skills").glob("autolab*/**/*.md")):
        blocks += [(md.name, b) for b in re.findall(r"```sql\n(.*?)```", md.read_text(), re.S)]
    assert len(blocks) >= 10
    for name, sql in blocks:
        run_query(lab, sql)  # raises LabError on any SQL error


def test_missing_tables_are_empty_views_with_columns(tmp_path):
    lab = Lab(init_lab(tmp_path / "empty"))
    expected = {"scores": SCORES.names, "metrics": METRICS_VIEW.names, "hypotheses": HYPOTHESES.names,
                "queue": EXPERIMENTS.names, "experiments": EXPERIMENTS.names}
    for view, columns in expected.items():
        result = run_query(lab, f"SELECT * FROM {view}")
        assert result.rows == [] and result.columns == list(columns), view
    assert run_query(lab, "SELECT count(*) FROM events").rows == [(0,)]


def test_cli_json_table_and_skipped_warning(populated):
    lab, ids, env = populated
    done = lab_cmd(env, lab.root, "query", "SELECT id, status FROM hypotheses ORDER BY id", "--json")
    assert done.returncode == 0, done.stderr
    assert {r["id"] for r in json.loads(done.stdout)} == {ids["h_lr"], ids["h_lr2"], ids["h_wu"], ids["h_bad"]}
    assert "warning: skipped hypotheses/h-broken.yaml: malformed YAML" in done.stderr
    table = lab_cmd(env, lab.root, "query", "SELECT id, value FROM scores WHERE promoted")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["id", "value"]
    assert "e-promo" in table.stdout and "(1 row)" in table.stdout


def test_sql_error_is_one_line(populated):
    lab, _, env = populated
    for sql in ("SELEC 1", "SELECT * FROM nowhere"):
        done = lab_cmd(env, lab.root, "query", sql)
        assert done.returncode == 2 and done.stdout == ""
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: query: sql: ") and "Traceback" not in done.stderr, done.stderr


def test_queries_cannot_touch_files(populated, tmp_path):
    lab, _, env = populated
    target = tmp_path / "leak.csv"
    done = lab_cmd(env, lab.root, "query", f"COPY (SELECT 1) TO '{target}'")
    assert done.returncode == 2 and done.stderr.startswith("error: query: sql: ")
    assert not target.exists()
    done = lab_cmd(env, lab.root, "query", "SELECT * FROM read_csv('/etc/hostname')")
    assert done.returncode == 2 and done.stderr.startswith("error: query: sql: ") and done.stdout == ""


def test_tried_script(populated):
    lab, _, env = populated
    script = lab.root / "skills" / "autolab-planner" / "scripts" / "tried.sh"
    done = subprocess.run([str(script), "LEARNING_RATE", "--json"], cwd=lab.root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = {(r["stage"], r["value"]) for r in json.loads(done.stdout)}
    assert got == {("hypothesis", "0.0006"), ("hypothesis", "0.002"), ("queue", "0.0006"),
                   ("experiment", "0.002"), ("experiment", "0.05")}
    bad = subprocess.run([str(script), "x'; DROP"], cwd=lab.root, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def _cookbook_block(heading: str) -> str:
    text = (REPO / "skills" / "autolab" / "references" / "queries.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    return re.search(r"```sql\n(.*?)```", section, re.S).group(1)


def test_yaml_rows_cache_follows_edits(tmp_path):
    """Rows are cached under .lab/cache/query/ by (inode, size, mtime): an edit shows at once."""
    lab = Lab(init_lab(tmp_path / "lab"))
    hyp, path = new_hypothesis(lab, "lr", {"params": {"LEARNING_RATE": 0.001}})
    assert rows(lab, "SELECT status FROM hypotheses") == [{"status": "proposed"}]
    assert (lab.runtime / "cache" / "query" / "hypotheses.json").is_file()
    write_yaml(path, {**yaml.safe_load(path.read_text()), "status": "accepted"})
    assert rows(lab, "SELECT status FROM hypotheses") == [{"status": "accepted"}]
    path.write_text("id: [broken\n")
    first = run_query(lab, "SELECT count(*) FROM hypotheses")
    second = run_query(lab, "SELECT count(*) FROM hypotheses")  # served from the cache, still reported
    assert first.rows == second.rows == [(0,)]
    assert first.skipped == second.skipped and "malformed YAML" in second.skipped[0]
    path.unlink()
    assert run_query(lab, "SELECT count(*) FROM hypotheses").skipped == []


def test_inline_lab_query_commands_in_skills_run(populated):
    """`lab query "SELECT ..."` lines quoted in the skills are valid too."""
    lab, _, _ = populated
    found = []
    for md in sorted((REPO / "skills").glob("autolab*/**/*.md")):
        found += re.findall(r'lab query "((?:SELECT|WITH)[^"]+)"', md.read_text(), re.S)
    assert len(found) >= 5
    for sql in found:
        run_query(lab, sql)
