"""Where experiments ran: backend, slot, job id or URL, flavor, and queue wait vs run time,
for the live entries and the latest records (`lab status`, the report's Jobs table).

Queue wait is from the job's submission (`job.started`) to when it began running
(`job.run_started`; while it runs, the `run_started` its backend noted in the job dir);
run time from then to its end (or now)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape

from ..files.yamlio import load_yaml
from ..lab import Lab
from ..state import machine
from ..state.timeutil import parse_iso
from .anomalies import job_dir, live_entries


def rows(lab: Lab, recent: list[str], now: datetime | None = None) -> list[dict]:
    """One row per live job, then one per recorded experiment in `recent` (ids, newest first)."""
    now = now or datetime.now(timezone.utc)
    found = [_row(e, _live_run_start(lab, e), now) for e in live_entries(lab)
             if e.get("status") == machine.RUNNING and e.get("job")]
    for exp_id in recent:
        try:
            data = load_yaml(lab.experiments / exp_id / "experiment.yaml")[0]
        except Exception:  # noqa: BLE001 - a record `lab validate` would report; skip it here
            continue
        if isinstance(data, dict) and data.get("job"):
            found.append(_row(data, None, now))
    return found


def _live_run_start(lab: Lab, entry: dict) -> datetime | None:
    try:
        rec = json.loads((job_dir(lab, entry) / "remote.json").read_text())
    except (OSError, ValueError):
        return None
    at = rec.get("run_started")
    return datetime.fromtimestamp(at, timezone.utc) if isinstance(at, (int, float)) else None


def _row(data: dict, run_start: datetime | None, now: datetime) -> dict:
    job = data["job"]
    started = _at(job.get("started"))
    running = _at(job.get("run_started")) or run_start
    if running is None and job.get("backend", "local") == "local":
        running = started
    ended = _at(job.get("finished")) if data.get("status") != machine.RUNNING else None
    return {"id": data["id"], "status": data.get("status"), "backend": job.get("backend", "local"),
            "slot": job.get("slot"), "job": job.get("url") or job.get("id"), "flavor": job.get("flavor"),
            "wait_s": _seconds(started, running or (None if ended else now)),
            "run_s": _seconds(running, ended or now) if running else None}


def _at(text) -> datetime | None:
    try:
        return parse_iso(text) if text else None
    except ValueError:
        return None


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    return max(0.0, (b - a).total_seconds()) if a and b else None


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def lines(found: list[dict]) -> list[str]:
    """`lab status`: one line per job."""
    return [f"  {r['id']:<28} {r['status']:<9} {r['backend']:<7} {str(r['slot'] or '-'):<8} "
            f"waited {_span(r['wait_s'])}, ran {_span(r['run_s'])}  {r['job'] or ''}" for r in found]


def html(found: list[dict]) -> str:
    """The report's Jobs table."""
    def cell(r: dict) -> str:
        job = r["job"] or ""
        link = f'<a href="{escape(job)}">{escape(job)}</a>' if job.startswith(("http://", "https://")) else escape(job)
        return (f'<tr><td>{escape(r["id"])}</td><td>{escape(str(r["status"]))}</td><td>{escape(r["backend"])}</td>'
                f'<td>{escape(str(r["slot"] or ""))}</td><td>{escape(str(r["flavor"] or ""))}</td><td>{link}</td>'
                f'<td class="num">{_span(r["wait_s"])}</td><td class="num">{_span(r["run_s"])}</td></tr>')
    return (f'<table id="jobs" data-rows="{len(found)}"><thead><tr><th>experiment</th><th>status</th>'
            '<th>backend</th><th>slot</th><th>flavor</th><th>job</th><th>queue wait</th><th>run time</th></tr>'
            f'</thead><tbody>{"".join(cell(r) for r in found)}</tbody></table>')
