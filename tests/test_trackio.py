"""Trackio mirror: runs, streamed steps, summaries, alerts and counters, read back from Trackio.

Each mirror pass runs in a subprocess (Trackio reads TRACKIO_DIR when first imported) with
every socket connection refused, so the test also proves that nothing contacts the network.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.make_lab import START, make_lab

from runner.report.trackio_mirror import installed
from runner.state.create import write_checked
from runner.state.events import read_events, record_event
from runner.state.timeutil import iso

pytestmark = pytest.mark.skipif(not installed(), reason="trackio is not installed (pip install benchlab[trackio])")

NO_NETWORK = """
import socket
def _refuse(self, address, *a, **k):
    if self.family != socket.AF_UNIX:
        raise OSError(f"network access attempted: {address}")
    return _connect(self, address, *a, **k)
_connect = socket.socket.connect
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
"""


def run_py(code: str, store: Path) -> str:
    env = {**os.environ, "TRACKIO_DIR": str(store)}
    done = subprocess.run([sys.executable, "-c", NO_NETWORK + code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]          # the last line is the answer


def sync(lab_root: Path, store: Path) -> dict:
    out = run_py(f"from runner.lab import Lab\nfrom runner.report.trackio_mirror import sync\nimport json\n"
                 f"print(json.dumps(sync(Lab.find({str(lab_root)!r}))))", store)
    return json.loads(out)


@pytest.fixture
def mirrored(tmp_path):
    lab = make_lab(tmp_path / "lab", 6, steps=20)
    with open(lab.config_path, "a") as handle:
        handle.write("reporting:\n  trackio: {project: fixture-mirror}\n")
    return lab, tmp_path / "store"


def live_job(lab, exp_id: str, rows: list[dict]) -> Path:
    data = {"id": exp_id, "hypothesis": "h-live", "kind": "experiment", "status": "running", "base": "a" * 40,
            "change": {"params": {"LEARNING_RATE": 0.003}}, "fingerprint": "sha256:live",
            "created": iso(START), "job": {"backend": "local", "slot": "slot-0", "started": iso(START)}}
    write_checked(lab.queue / f"{exp_id}.yaml", "experiment", data, lab)
    path = lab.job_dir(exp_id, 1) / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def query(store: Path, sql: str, *args):
    with sqlite3.connect(store / "fixture-mirror.db") as db:
        return db.execute(sql, args).fetchall()


def test_experiments_become_runs_with_config_steps_summary_and_alerts(mirrored):
    lab, store = mirrored
    warnings = [e for e in read_events(lab).to_pylist() if e["level"] != "info"]
    assert len(warnings) >= 2                                        # stale, timed_out (and failures)
    counts = sync(lab.root, store)
    assert counts["finished"] == 6 and counts["alerts"] == len(warnings)
    runs = json.loads(run_py("import trackio, json\nruns = trackio.Api().runs('fixture-mirror')\n"
                             "print(json.dumps({r.name: [r.config, r.alerts()] for r in runs}))", store))
    ids = sorted(p.parent.name for p in lab.experiments.glob("*/experiment.yaml"))
    assert sorted(runs) == sorted(ids + ["reporter"])
    promoted = next(r for r in ids if (lab.experiments / r / "experiment.yaml").read_text().count("promoted: true"))
    config = runs[promoted][0]
    assert config["change"]["params"] and config["base"] == "a" * 40 and config["_Group"].startswith("h-")
    steps = query(store, "select count(*), max(step) from metrics where run_name = ?", promoted)[0]
    assert steps == (21, 21)                                          # 20 logged steps + the summary
    summary = json.loads(query(store, "select metrics from metrics where run_name = ? and step = 21", promoted)[0][0])
    assert summary["summary/promoted"] is True and summary["summary/val_bpb"] > 2
    alerts = [a for r in runs.values() for a in r[1]]
    assert sorted(a["level"] for a in alerts) == sorted(e["level"] for e in warnings)

    again = sync(lab.root, store)                                    # idempotent: nothing new to log
    assert again == {"steps": 0, "finished": 0, "alerts": 0}
    assert query(store, "select count(*) from metrics where run_name = ?", promoted)[0][0] == 21
    assert query(store, "select count(*) from metrics where run_name = 'reporter'")[0][0] == 2


def test_live_steps_stream_once_and_anomalies_become_alerts(mirrored):
    lab, store = mirrored
    sync(lab.root, store)                                            # the recorded experiments first
    path = live_job(lab, "e-live", [{"step": s, "time_s": s * 0.1, "train_loss": 5.0 - 0.1 * s} for s in (1, 2, 3)])
    assert sync(lab.root, store)["steps"] == 3
    with open(path, "a") as handle:
        handle.writelines(json.dumps({"step": s, "train_loss": 4.0}) + "\n" for s in (4, 5))
    record_event(lab, "error", "nan", "train_loss is nan at step 6", experiment="e-live", hypothesis="h-live")
    counts = sync(lab.root, store)
    assert counts["steps"] == 2 and counts["alerts"] == 1
    assert query(store, "select step from metrics where run_name = 'e-live' order by step") == [
        (1,), (2,), (3,), (4,), (5,)]
    assert query(store, "select title, level from alerts where run_name = 'e-live'") == [("nan: e-live", "error")]
    reporter = json.loads(query(store, "select metrics from metrics where run_name = 'reporter' order by step desc")[0][0])
    assert reporter["running"] == 1 and reporter["experiments"] == 6 and reporter["promoted"] >= 1


def test_mirror_off_without_config(tmp_path):
    lab = make_lab(tmp_path / "lab", 3, steps=5)
    assert sync(lab.root, tmp_path / "store") is None
    assert not (tmp_path / "store").exists()
