"""One test per anomaly rule, on crafted metric streams and crafted lab state."""
from __future__ import annotations

import json
import math
import os
import random
from datetime import timedelta

import pytest
from fixtures.make_lab import START, make_lab, write_config

from runner.lab import Lab
from runner.report.anomalies import (
    lab_anomalies,
    read_jsonl,
    record_anomalies,
    stream_anomalies,
)
from runner.state.create import write_checked
from runner.state.events import read_events
from runner.state.scores import scores, write_scores
from runner.state.timeutil import iso


def rows_of(losses, name="train_loss"):
    return [{"step": i + 1, "time_s": 0.1 * i, name: v, "lr": 0.001} for i, v in enumerate(losses)]


def kinds(events):
    return sorted(e["kind"] for e in events)


# -- streams ----------------------------------------------------------------------------------

def test_nan_in_any_metric_is_an_error_once_per_experiment():
    rows = rows_of([3.0, 2.9, 2.8])
    rows[1]["lr"] = float("nan")
    rows[2]["train_loss"] = float("inf")
    events = stream_anomalies("e-1", rows, window=5, hypothesis="h-1")
    assert [(e["kind"], e["level"], e["experiment"], e["hypothesis"]) for e in events] == [
        ("nan", "error", "e-1", "h-1")]
    assert "step 2" in events[0]["message"] or "step 3" in events[0]["message"]


def test_nan_read_from_a_real_jsonl_stream(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with open(path, "w") as handle:
        for row in rows_of([3.0, float("nan")]):
            handle.write(json.dumps(row) + "\n")
        handle.write('{"step": 3, "train_lo')          # a half-written last line is skipped
    rows = read_jsonl(path)
    assert len(rows) == 2 and math.isnan(rows[1]["train_loss"])
    assert kinds(stream_anomalies("e-2", rows, window=5)) == ["nan"]


def test_divergence_needs_window_consecutive_rises():
    plateau = [5.0, 4.0, 3.0] + [2.0] * 10                                 # falls, then flat
    rising = plateau + [2.0 * 1.1 ** k for k in range(1, 6)]               # 5 rises of +10%
    events = stream_anomalies("e", rows_of(rising), window=5)
    assert kinds(events) == ["divergence"] and "step 18" in events[0]["message"]
    assert stream_anomalies("e", rows_of(rising), window=6) == []          # only 5 rises
    assert stream_anomalies("e", rows_of(rising[:-1]), window=5) == []     # only 4 rises
    interrupted = plateau + [2.2, 2.4, 2.6, 1.0, 2.8, 3.0, 3.2]             # a drop breaks the run
    assert stream_anomalies("e", rows_of(interrupted), window=5) == []


def test_divergence_when_the_loss_blows_up_above_its_start():
    jumpy = [5.5, 3.8, 13.4, 59.8, 46.0, 36.3, 34.2, 41.3, 23.5, 20.6]      # up, then down: no long rise
    events = stream_anomalies("e", rows_of(jumpy), window=5)
    assert kinds(events) == ["divergence"] and "above its starting value 5.5" in events[0]["message"]
    healthy = [5.5, 4.0, 3.5, 3.6, 3.2, 3.3, 3.0, 3.1, 2.9, 3.0]
    assert stream_anomalies("e", rows_of(healthy), window=5) == []


def test_divergence_ignores_small_rises_and_reads_long_rows():
    creeping = [2.0 + 0.001 * i for i in range(30)]                         # rising, but by 1.5%
    assert stream_anomalies("e", rows_of(creeping), window=5) == []
    long_rows = [{"step": i, "name": "loss", "value": 1.0 + 0.3 * i} for i in range(12)]
    events = stream_anomalies("e", long_rows, window=5)
    assert kinds(events) == ["divergence"] and "loss (mean of 5) rose" in events[0]["message"]


def test_no_false_divergence_on_a_noisy_decreasing_loss():
    rng = random.Random(1)
    losses = [2.0 + 3.0 * math.exp(-i / 150) + rng.gauss(0, 0.05) for i in range(2000)]
    assert stream_anomalies("e", rows_of(losses), window=5) == []


# -- lab state --------------------------------------------------------------------------------

@pytest.fixture
def lab(tmp_path):
    write_config(tmp_path)
    return Lab(tmp_path)


def entry(lab, exp_id, status, *, created, fingerprint="sha256:aa", hypothesis="h-1", started=None):
    data = {"id": exp_id, "hypothesis": hypothesis, "kind": "experiment", "status": status,
            "base": "a" * 40, "change": {"params": {"LEARNING_RATE": 0.002}}, "fingerprint": fingerprint,
            "created": iso(created)}
    if started:
        data["job"] = {"backend": "local", "slot": "slot-0", "started": iso(started)}
    write_checked(lab.queue / f"{exp_id}.yaml", "experiment", data, lab)


def test_stall_when_a_running_job_writes_nothing(lab):
    now = START + timedelta(minutes=10)
    entry(lab, "e-stuck", "running", created=START, started=now - timedelta(seconds=60))
    entry(lab, "e-busy", "running", created=START, started=now - timedelta(seconds=60), fingerprint="sha256:bb")
    live = lab.job_dir("e-busy", 1) / "metrics.jsonl"
    live.parent.mkdir(parents=True)
    live.write_text(json.dumps({"step": 1, "train_loss": 3.0}) + "\n")
    os.utime(live, (now.timestamp() - 5, now.timestamp() - 5))
    events = [e for e in lab_anomalies(lab, now) if e["kind"] == "stall"]
    assert [e["experiment"] for e in events] == ["e-stuck"]                 # 60s > 90s x 0.5


def test_recent_timeouts_and_repeated_failures_from_scores(lab):
    now = START + timedelta(hours=1)
    rows = [dict(id=f"e-{i}", hypothesis="h-bad" if i < 2 else "h-ok", kind="experiment", status=status,
                 promoted=False, finished=START + timedelta(minutes=i), reason="time limit 300s")
            for i, status in enumerate(["timed_out", "failed", "failed", "finished"])]
    rows.append(dict(id="e-old", hypothesis="h-old", kind="experiment", status="timed_out", promoted=False,
                     finished=now - timedelta(days=3)))
    write_scores(lab, rows)
    events = lab_anomalies(lab, now)
    assert [(e["kind"], e["experiment"], e["hypothesis"]) for e in events] == [
        ("timeout", "e-0", "h-bad"), ("repeated_failures", None, "h-bad")]
    assert events[1]["level"] == "error" and "2 times" in events[1]["message"]


def test_duplicate_running_work(lab):
    now = START + timedelta(minutes=5)
    entry(lab, "e-a", "running", created=START, started=now)
    entry(lab, "e-b", "assigned", created=START + timedelta(seconds=1))
    entry(lab, "e-c", "running", created=START, started=now, fingerprint="sha256:other")
    events = [e for e in lab_anomalies(lab, now) if e["kind"] == "duplicate_running"]
    assert [e["experiment"] for e in events] == ["e-b"] and "e-a" in events[0]["message"]


def test_slot_idle_while_the_queue_waits(lab):
    now = START + timedelta(minutes=5)
    entry(lab, "e-run", "running", created=START, started=now)
    entry(lab, "e-fresh", "queued", created=now - timedelta(seconds=5), fingerprint="sha256:f")
    assert [e for e in lab_anomalies(lab, now) if e["kind"] == "slot_idle"] == []   # within grace
    entry(lab, "e-old", "queued", created=now - timedelta(seconds=120), fingerprint="sha256:o")
    events = [e for e in lab_anomalies(lab, now) if e["kind"] == "slot_idle"]
    assert [e["experiment"] for e in events] == ["e-old"] and "1 of 2 slots idle" in events[0]["message"]
    entry(lab, "e-run2", "running", created=START, started=now, fingerprint="sha256:r2")
    assert [e for e in lab_anomalies(lab, now) if e["kind"] == "slot_idle"] == []   # both slots busy


def test_divergence_of_a_live_job_and_idempotent_recording(lab):
    now = START + timedelta(minutes=5)
    entry(lab, "e-div", "running", created=START, started=now - timedelta(seconds=2))
    live = lab.runtime / "jobs" / "e-div" / "attempt-1" / "metrics.jsonl"     # the local backend's layout
    live.parent.mkdir(parents=True)
    live.write_text("".join(json.dumps(r) + "\n" for r in rows_of([3, 2.5, 2.5, 2.5, 2.5, 2.5, 2.8, 3.1, 3.5, 4.0, 4.6, 5.3])))
    os.utime(live, (now.timestamp(), now.timestamp()))
    first = record_anomalies(lab, lab_anomalies(lab, now))
    assert kinds(first) == ["divergence"]
    assert lab_anomalies(lab, now) == []                                   # already recorded
    assert record_anomalies(lab, stream_anomalies("e-div", read_jsonl(live), 5)) == []
    assert read_events(lab).num_rows == 1


def test_runner_timed_out_event_counts_as_the_timeout(tmp_path):
    lab = make_lab(tmp_path, 8)                    # the fixture's runner logged `timed_out` events
    events = lab_anomalies(lab, START + timedelta(minutes=30))
    assert "timeout" not in kinds(events)


def test_real_runs_only_the_blown_up_one_diverges(tmp_path):
    """Streams recorded from real train.py runs: LEARNING_RATE=0.5 blew up, the others did not."""
    from fixtures.real_lab import real_lab

    from runner.files.tables import METRICS, read_table
    lab = real_lab(tmp_path / "lab")
    flagged = []
    for row in scores(lab).to_pylist():
        rows = read_table(lab.experiments / row["id"] / "metrics.parquet", METRICS).to_pylist()
        steps = [r for r in rows if not r["summary"]]
        lr = json.loads(row["change"] or "{}").get("params", {}).get("LEARNING_RATE")
        flagged.append((lr, kinds(stream_anomalies(row["id"], steps, window=5))))
    assert len(flagged) == 7 and (0.5, ["divergence"]) in flagged
    assert [found for lr, found in flagged if lr != 0.5] == [[]] * 6


def test_long_noisy_but_healthy_run_is_not_divergence():
    import math
    import random

    rng = random.Random(3)
    rows = [{"step": s, "train_loss": 2.0 + 3.0 * math.exp(-s / 200) + rng.gauss(0, 0.12)} for s in range(1500)]
    assert not [e for e in stream_anomalies("e-x", rows, 5) if e["kind"] == "divergence"]
    rows[800:860] = [{"step": s, "train_loss": 6.0} for s in range(800, 860)]       # a real blow-up
    assert [e for e in stream_anomalies("e-x", rows, 5) if e["kind"] == "divergence"]
