"""`lab status --watch`: a compact live view of running jobs, queue, best score and events.

    render(lab, now=None, width=100) -> str     one frame (pure: reads files, prints nothing)
    watch(lab, interval=2.0, frames=None)       redraws until Ctrl-C (or `frames` frames)
"""
from __future__ import annotations

import sys
import time
from datetime import datetime

from ..backends import slot_count
from ..lab import Lab
from ..state import machine
from ..state.events import read_events
from ..state.scores import best_row, scores
from ..state.timeutil import now as utc_now
from ..state.timeutil import parse_iso_or_none
from .anomalies import job_dir, live_entries, read_jsonl

BAR = 12
RECENT_EVENTS = 6


def _bar(fraction: float) -> str:
    filled = max(0, min(BAR, int(round(fraction * BAR))))
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def _age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _progress(lab: Lab, entry: dict) -> str:
    """Last logged step and loss of a live job, from its metrics.jsonl (tail only)."""
    rows = read_jsonl(job_dir(lab, entry) / "metrics.jsonl")
    if not rows:
        return "no metrics yet"
    last = rows[-1]
    loss = next((k for k in ("train_loss", "loss") if isinstance(last.get(k), (int, float))), None)
    text = f"step {last.get('step', '?')}"
    return text + (f"  {loss} {last[loss]:.4g}" if loss else "")


def _running_lines(lab: Lab, entries: list[dict], now: datetime, width: int) -> list[str]:
    limit = float(lab.config["target"]["time_limit_s"])
    lines = []
    for entry in entries:
        job = entry.get("job") or {}
        started = parse_iso_or_none(job.get("started"))
        if entry.get("status") != "running" or started is None:
            lines.append(f"  {entry['id']:<32} {entry.get('status', '?'):<9}")
            continue
        elapsed = (now - started).total_seconds()
        line = (f"  {entry['id']:<32} {str(job.get('slot', '-')):<7} {_bar(elapsed / limit)} "
                f"{_age(elapsed):>6}/{_age(limit)}  {_progress(lab, entry)}")
        lines.append(line[:width])
    return lines or ["  (none)"]


def render(lab: Lab, now: datetime | None = None, width: int = 100) -> str:
    now = now or utc_now()
    entries = live_entries(lab)
    live = [e for e in entries if e.get("status") in machine.ACTIVE]
    queued = sum(1 for e in entries if e.get("status") == "queued")
    slots = slot_count(lab.config)
    table = scores(lab)
    best = best_row(lab, table)
    direction = lab.config["objective"]["direction"]
    head = f"{lab.config['lab']}  {direction} {lab.metric}  {now:%H:%M:%S} UTC"
    best_text = (f"best on main {best['value']:.6g} ({best['id']})" if best else "best on main: none yet")
    lines = [head, f"{best_text}  ·  {table.num_rows} recorded",
             f"slots {len(live)}/{slots} busy  ·  queue {queued} queued", "running:"]
    lines += _running_lines(lab, live, now, width)
    events = read_events(lab)
    lines.append("recent events:")
    tail = events.slice(max(0, events.num_rows - RECENT_EVENTS)).to_pylist() if events.num_rows else []
    for event in reversed(tail):
        subject = event.get("experiment") or event.get("hypothesis") or ""
        lines.append(f"  {event['at']:%H:%M:%S} {event['level']:<5} {event['kind']:<12} {subject} "
                     f"{event['message']}"[:width])
    if not tail:
        lines.append("  (none)")
    return "\n".join(line[:width] for line in lines)


def watch(lab: Lab, interval: float = 2.0, frames: int | None = None, stream=None) -> int:
    """Redraw the view every `interval` seconds; returns the number of frames drawn."""
    stream = stream or sys.stdout
    clear = "\x1b[H\x1b[2J" if getattr(stream, "isatty", lambda: False)() else ""
    drawn = 0
    try:
        while frames is None or drawn < frames:
            if drawn:
                time.sleep(interval)
            frame = render(lab)
            stream.write(clear + frame + ("\n" if clear else "\n---\n"))
            stream.flush()
            drawn += 1
    except KeyboardInterrupt:
        pass
    return drawn
