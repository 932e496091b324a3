"""Numbers from a job's output: the summary lines and the step-metric stream.

The objective is always parsed here, from what the job itself wrote; never
taken from an agent's word.

Summary rule
------------
The target prints its results as `name: value` lines (the autoresearch
convention, e.g. ``val_bpb: 0.997900``). A line counts only if it is entirely
``name: number``: optional surrounding blanks, a name matching
``[A-Za-z_][A-Za-z0-9_./-]*``, a colon, and a float (``12``, ``-3.5e-4``,
``nan``, ``inf``, ``-Infinity``). ``loss: 3.1 (ema)`` or ``step 10: 3.1`` do not
count. Lines are split on ``\\n``, ``\\r\\n`` and a lone ``\\r`` (progress bars).

A job may print an early or fake ``val_bpb:`` line before the real one, so the
LAST complete summary block wins:

1. trailing blank lines are ignored;
2. if the output then ends with a summary line, the summary is the final
   contiguous run of summary lines (blank lines inside it do not break it;
   any other line does). Names printed only before that block are NOT part of
   the summary, so a stale or fake value earlier in the log can never stand in
   for a value missing from the final block;
3. if the output ends with anything else (a traceback, a warning printed at
   exit), fall back to the last occurrence of each name anywhere in the output.

Within the chosen lines a repeated name keeps its last value. Rule 3 means a
crashed job can still yield numbers: the caller must require exit code 0
before trusting the objective. A warning line printed *inside* the final block
splits it; the names above the split are then missing (a visible failure,
never a wrong number).

Metric stream
-------------
Step metrics are JSON objects, one per line, appended to ``$LAB_METRICS``,
e.g. ``{"step": 10, "time_s": 1.5, "loss": 3.2, "lr": 0.001}``. ``step``
(integer) and ``time_s`` (seconds since the job started) are optional; every
other key with a numeric value (JSON ``NaN``/``Infinity`` allowed) becomes one
row; nested objects are flattened with ``/`` (``{"train": {"loss": 3}}`` ->
``train/loss``); strings, booleans and lists are ignored.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

_NAME = r"[A-Za-z_][A-Za-z0-9_./-]*"
_NUMBER = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)"
_LINE = re.compile(rf"^[ \t]*({_NAME})[ \t]*:[ \t]*({_NUMBER})[ \t]*$", re.IGNORECASE)
_NEWLINES = re.compile(r"\r\n|\r|\n")

MAX_LOG_BYTES = 32 << 20      # the tail of a log we parse; a summary lives at the end
MAX_STREAM_BYTES = 64 << 20   # the head of a metric stream we read


def summary_line(line: str) -> tuple[str, float] | None:
    """(name, value) if the line is entirely `name: number`, else None."""
    match = _LINE.match(line)
    return (match.group(1), float(match.group(2))) if match else None


def parse_summary(text: str) -> dict[str, float]:
    """The job's summary (see the module docstring for the rule)."""
    lines = _NEWLINES.split(text)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or summary_line(lines[-1]) is None:
        return _last_occurrences(lines)
    block: list[str] = []
    for line in reversed(lines):
        if line.strip() and summary_line(line) is None:
            break
        block.append(line)
    return _last_occurrences(reversed(block))


def _last_occurrences(lines) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in lines:
        pair = summary_line(line)
        if pair:
            found.pop(pair[0], None)   # keep the order of last appearance
            found[pair[0]] = pair[1]
    return found


def read_log(path: Path, max_bytes: int = MAX_LOG_BYTES) -> str:
    """A job's log as text (its last `max_bytes`), undecodable bytes replaced."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return ""
    if size > max_bytes:               # drop the partial first line
        data = data[data.find(b"\n") + 1:]
    return data.decode("utf-8", errors="replace")


def read_stream(path: Path, max_bytes: int = MAX_STREAM_BYTES) -> list[dict]:
    """The JSON objects of a metric stream; skips bad lines and a torn last line."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes)
    except OSError:
        return []
    records = []
    for raw in data.split(b"\n"):
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            continue                   # a torn last line, a stray print, bad UTF-8
        if isinstance(record, dict):
            records.append(record)
    return records


def metrics_rows(stream: list[dict], summary: dict[str, float]) -> list[dict]:
    """Rows for tables.METRICS: one per (record, metric), then one per summary value."""
    rows = []
    for record in stream:
        step, time_s = _step(record.get("step")), _number(record.get("time_s"))
        for name, value in _flatten(record):
            if name not in ("step", "time_s"):
                rows.append({"step": step, "time_s": time_s, "name": name, "value": value,
                             "summary": False})
    rows += [{"step": None, "time_s": None, "name": name, "value": float(value), "summary": True}
             for name, value in summary.items()]
    return rows


def _flatten(record: dict, prefix: str = ""):
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + "/")
        elif (number := _number(value)) is not None:
            yield name, number


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:              # an int too large for a double
        return math.inf if value > 0 else -math.inf


def _step(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 63) else None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2.0 ** 63:
        return int(value)
    return None


def objective(summary: dict[str, float], metric: str) -> float | None:
    """The objective's value, None if it was not printed. NaN and inf are returned
    as floats so the caller can flag them (use `is_finite` before comparing)."""
    value = summary.get(metric)
    return None if value is None else float(value)


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def loss_name(names) -> str | None:
    """The step metric that is the training loss: train_loss, else loss, else the first *loss*."""
    names = set(names)
    for candidate in ("train_loss", "loss"):
        if candidate in names:
            return candidate
    lossy = sorted(n for n in names if "loss" in n)
    return lossy[0] if lossy else None
