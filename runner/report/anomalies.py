"""Anomaly rules of the reporter: pure functions from metrics or lab state to event dicts.

Each returns events `{level, kind, message, experiment, hypothesis[, path]}`:

    stream_anomalies(exp_id, rows, window)  nan (NaN/inf in any metric), divergence (loss rising
                                            for `window` consecutive logged steps)
    lab_anomalies(lab, now)                 stall, timeout, repeated_failures, duplicate_running,
                                            slot_idle, plus stream_anomalies of every live job
    record_anomalies(lab, events)           keep the new ones, record them as events,
                                            hand them to the webhook; returns what it recorded

An event is new unless the events table already holds one with the same (kind, experiment,
hypothesis), so calling these every pass never re-emits the same anomaly.
"""
from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..backends import slot_count
from ..files.metrics import loss_name, read_stream
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..state import machine
from ..state.entries import quick_status
from ..state.events import read_events, record_event
from ..state.scores import scores
from ..state.timeutil import now as utc_now
from ..state.timeutil import parse_iso_or_none

FAILED = ("failed", "timed_out")
ALIASES = {"timed_out": "timeout"}     # the runner's own `timed_out` event counts as a timeout event
MIN_RISE = 0.10                        # divergence: the smoothed loss rises by >10% over the window
STALL_FRACTION = 0.5                   # warn after half of target.stall_timeout_s without progress
IDLE_GRACE_S = 30.0                    # a queued entry may wait this long for a free slot
RECENT_S = 24 * 3600.0                 # timeouts older than this are history, not news


def _event(level: str, kind: str, message: str, experiment: str | None = None,
           hypothesis: str | None = None, path: str | None = None) -> dict:
    return {"level": level, "kind": kind, "message": message, "experiment": experiment,
            "hypothesis": hypothesis, "path": path}


# -- metric streams --------------------------------------------------------------------------

def _series(rows: list[dict]) -> dict[str, list[tuple]]:
    """{name: [(step, value)]} from wide rows ({step, train_loss, ...}) or long rows ({step, name, value})."""
    series: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        step = row.get("step")
        if "name" in row and "value" in row:
            items = [(row["name"], row["value"])]
        else:
            items = [(k, v) for k, v in row.items() if k not in ("step", "time_s")]
        for name, value in items:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series[name].append((step, float(value)))
    return series


def _smoothed(points: list[tuple], window: int) -> list[tuple]:
    """(step, mean of the last `window` values): per-step loss noise would fake short rises."""
    out, total = [], 0.0
    for i, (step, value) in enumerate(points):
        total += value - (points[i - window][1] if i >= window else 0.0)
        if i >= window - 1:
            out.append((step, total / window))
    return out


def _first_rising_run(points: list[tuple], window: int, min_rise: float) -> tuple | None:
    """(start, end) of the first `window` consecutive rises adding up to more than min_rise (relative)."""
    run = 0
    for i in range(1, len(points)):
        run = run + 1 if points[i][1] > points[i - 1][1] else 0
        if run >= window:
            start, end = points[i - window], points[i]
            if end[1] - start[1] > min_rise * abs(start[1]):
                return start, end
    return None


def stream_anomalies(exp_id: str, rows: list[dict], window: int, hypothesis: str | None = None,
                     min_rise: float = MIN_RISE) -> list[dict]:
    """NaN/inf in any metric (one event per experiment), and divergence (one per experiment): the
    loss, averaged over the last `window` logged steps, rising at `window` consecutive logged
    steps by more than `min_rise` (relative) in all, or climbing above its first logged value by
    more than `min_rise` (a blow-up). A noisy but healthy loss triggers neither."""
    series = _series(rows)
    events = []
    for name, points in series.items():
        bad = next(((s, v) for s, v in points if not math.isfinite(v)), None)
        if bad:
            events.append(_event("error", "nan", f"{name} is {bad[1]} at step {bad[0]}", exp_id, hypothesis))
            break
    loss = loss_name(series)
    if loss:
        finite = [(s, v) for s, v in series[loss] if math.isfinite(v)]
        message = _divergence(loss, finite, window, min_rise)
        if message:
            events.append(_event("warn", "divergence", message, exp_id, hypothesis))
    return events


def _divergence(loss: str, points: list[tuple], window: int, min_rise: float) -> str | None:
    """Why the loss diverges, or None: a sustained rise, or a blow-up above its starting value."""
    # Per-step losses of small batches are noisy: smooth over 2% of the run (at least `window`
    # points), or a long run logged every step shows "rises" that are only noise.
    span = max(window, len(points) // 50)
    smoothed = _smoothed(points, span)
    found = _first_rising_run(smoothed, window, min_rise)
    if found:
        (s0, v0), (s1, v1) = found
        return (f"{loss} (mean of {span}) rose at {window} consecutive logged steps: "
                f"{v0:.4g} at step {s0} -> {v1:.4g} at step {s1}")
    start = points[0][1] if points else None
    above = next(((s, v) for s, v in smoothed if start is not None and v > start + min_rise * abs(start)), None)
    if above:
        return (f"{loss} (mean of {span}) is {above[1]:.4g} at step {above[0]}, above its starting "
                f"value {start:.4g}: the run blew up")
    return None


def read_jsonl(path: Path) -> list[dict]:
    """Complete JSON lines of a live metrics file (a half-written last line is skipped)."""
    return read_stream(path)


# -- lab state -------------------------------------------------------------------------------

def live_entries(lab: Lab) -> list[dict]:
    """Queue entries that are queued or live (assigned/ready/running), parsed."""
    entries = []
    for path in sorted(lab.queue.glob("*.yaml")) if lab.queue.is_dir() else []:
        try:
            if quick_status(path) not in machine.LIVE:
                continue
            data = load_yaml(path)[0]
        except Exception:  # a broken entry is `lab validate`'s business, not the reporter's
            continue
        if isinstance(data, dict) and data.get("id"):
            entries.append(data)
    return entries


def job_dir(lab: Lab, entry: dict) -> Path:
    """Where a live job writes metrics.jsonl and its log (the attempt the entry records)."""
    return lab.job_dir(entry["id"], int((entry.get("job") or {}).get("attempts", 1)))


def _last_progress(lab: Lab, entry: dict) -> datetime | None:
    """The latest of: job start, last write to the job's metrics.jsonl or its log."""
    job = entry.get("job") or {}
    started = parse_iso_or_none(job.get("started"))
    if started is None:
        return None
    paths = [job_dir(lab, entry) / "metrics.jsonl"]
    if job.get("log"):
        paths.append(lab.root / job["log"])
    moments = [started]
    for path in paths:
        try:
            moments.append(datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc))
        except OSError:
            continue
    return max(moments)


def stalls(lab: Lab, entries: list[dict], now: datetime) -> list[dict]:
    limit = float(lab.config["target"]["stall_timeout_s"]) * STALL_FRACTION
    events = []
    for entry in entries:
        if entry.get("status") != "running":
            continue
        last = _last_progress(lab, entry)
        if last is not None and (now - last).total_seconds() > limit:
            idle = (now - last).total_seconds()
            events.append(_event("warn", "stall", f"no metric or log output for {idle:.0f}s "
                                 f"(stall limit {lab.config['target']['stall_timeout_s']:g}s)",
                                 entry["id"], entry.get("hypothesis")))
    return events


def duplicates(entries: list[dict]) -> list[dict]:
    by_print = defaultdict(list)
    for entry in entries:
        if entry.get("status") in machine.ACTIVE and entry.get("fingerprint"):
            by_print[entry["fingerprint"]].append(entry)
    events = []
    for group in by_print.values():
        group.sort(key=lambda e: (str(e.get("created")), e["id"]))
        for later in group[1:]:
            events.append(_event("warn", "duplicate_running",
                                 f"same change as {group[0]['id']}, which is also {group[0]['status']}",
                                 later["id"], later.get("hypothesis")))
    return events


def idle_slots(lab: Lab, entries: list[dict], now: datetime, grace_s: float = IDLE_GRACE_S) -> list[dict]:
    slots = slot_count(lab.config)
    busy = sum(1 for e in entries if e.get("status") in machine.ACTIVE)
    queued = sorted((e for e in entries if e.get("status") == "queued"),
                    key=lambda e: (str(e.get("created")), e["id"]))
    if busy >= slots or not queued:
        return []
    oldest = queued[0]
    created = parse_iso_or_none(oldest.get("created"))
    if created is None or (now - created).total_seconds() <= grace_s:
        return []
    waited = (now - created).total_seconds()
    return [_event("warn", "slot_idle", f"{slots - busy} of {slots} slots idle while {len(queued)} "
                   f"queued; {oldest['id']} has waited {waited:.0f}s", oldest["id"], oldest.get("hypothesis"))]


def score_anomalies(lab: Lab, now: datetime, recent_s: float = RECENT_S) -> list[dict]:
    """Timeouts finished recently; hypotheses that failed at least twice."""
    table = scores(lab)
    if table.num_rows == 0:
        return []
    failed = table.filter(pc.is_in(table["status"], value_set=pa.array(FAILED)))
    events = []
    since = now - timedelta(seconds=recent_s)
    per_hypothesis = defaultdict(list)
    for row in failed.select(["id", "hypothesis", "status", "finished", "reason"]).to_pylist():
        if row["status"] == "timed_out" and row["finished"] and row["finished"] >= since:
            events.append(_event("warn", "timeout", f"timed out: {row['reason'] or 'time limit'}",
                                 row["id"], row["hypothesis"], f"experiments/{row['id']}/experiment.yaml"))
        if row["hypothesis"]:
            per_hypothesis[row["hypothesis"]].append(row["id"])
    for hyp, ids in per_hypothesis.items():
        if len(ids) >= 2:
            events.append(_event("error", "repeated_failures",
                                 f"hypothesis failed {len(ids)} times: {', '.join(ids[-5:])}",
                                 None, hyp, f"hypotheses/{hyp}.yaml"))
    return events


def live_streams(lab: Lab, entries: list[dict]) -> list[dict]:
    window = int(lab.config["reporting"]["divergence_window"])
    events = []
    for entry in entries:
        if entry.get("status") == "running":
            rows = read_jsonl(job_dir(lab, entry) / "metrics.jsonl")
            events += stream_anomalies(entry["id"], rows, window, entry.get("hypothesis"))
    return events


def lab_anomalies(lab: Lab, now: datetime | None = None) -> list[dict]:
    """All lab-level rules; returns only events not already recorded."""
    now = now or utc_now()
    entries = live_entries(lab)
    found = (stalls(lab, entries, now) + score_anomalies(lab, now) + duplicates(entries)
             + idle_slots(lab, entries, now) + live_streams(lab, entries))
    return fresh(lab, found)


# -- recording -------------------------------------------------------------------------------

def _key(kind: str, experiment, hypothesis) -> tuple:
    return ALIASES.get(kind, kind), experiment or None, None if experiment else (hypothesis or None)


def fresh(lab: Lab, events: list[dict]) -> list[dict]:
    """Drop events whose (kind, experiment, hypothesis) is already recorded or repeated in `events`."""
    table = read_events(lab)
    seen = set()
    if table.num_rows:
        seen = {_key(k, e, h) for k, e, h in zip(table["kind"].to_pylist(), table["experiment"].to_pylist(),
                                                  table["hypothesis"].to_pylist())}
    out = []
    for event in events:
        key = _key(event["kind"], event.get("experiment"), event.get("hypothesis"))
        if key not in seen:
            seen.add(key)
            out.append(event)
    return out


def record_anomalies(lab: Lab, events: list[dict], deliver: bool = True) -> list[dict]:
    """Record the new events (and hand them to the webhook, if configured); return them."""
    recorded = []
    for event in fresh(lab, events):
        recorded.append(record_event(lab, event["level"], event["kind"], event["message"],
                                     experiment=event.get("experiment"), hypothesis=event.get("hypothesis"),
                                     path=event.get("path")))
    if deliver and recorded:
        from .webhook import deliver as send
        send(lab, recorded)
    return recorded
