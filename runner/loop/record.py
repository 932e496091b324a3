"""Recording a terminal experiment: experiments/<id>/, its score file, events.

Ordered for crash safety; every step is idempotent, so a runner killed at any
point finishes the job on restart (see Runner.recover):
  1. experiments/<id>/metrics.parquet, patch.diff, log.txt
  2. experiments/scores/<id>.parquet, then jobs/<id>-<attempt>.parquet (each skipped if there)
  3. experiments/<id>/experiment.yaml (the terminal state; it wins over queue/)
  4. delete queue/<id>.yaml, remove the worktree (the branch stays)
and the caller commits all of it in one commit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..faults import crash_point
from ..files.tables import METRICS, write_table
from ..files.yamlio import atomic_write, write_yaml
from ..lab import Lab
from ..repo import worktrees
from ..secrets import mask
from ..state.accounting import record_job
from ..state.entries import Entry
from ..state.scores import write_score
from ..state.timeutil import iso, now, parse_iso

LOG_TAIL_BYTES = 64 * 1024


@dataclass
class Outcome:
    status: str                      # finished | failed | timed_out | cancelled | stale
    reason: str = ""
    value: float | None = None
    summary: dict = field(default_factory=dict)
    stream: list = field(default_factory=list)
    metric_rows: list = field(default_factory=list)
    base_value: float | None = None
    promoted: bool = False
    commit: str = ""                 # head of exp/<id>
    target: str = ""                 # content key of what was measured
    exit_code: int | None = None
    title: str = ""                  # the hypothesis's title, for the scores table
    job_seconds: float | None = None  # the job process's own run time
    seed: int | None = None          # LAB_SEED of the run
    cost: float | None = None        # the objective.cost metric it printed
    constraint: str | None = None    # the rule it broke (objective.constraints)
    z: float | None = None           # its gain in stdevs of the difference
    margin: float | None = None      # the margin it was judged with
    evidence: str | None = None      # of a promotion: strong, single-run or confirmed
    holdout: float | None = None     # objective.holdout's value (never judged)
    base_holdout: float | None = None


def experiment_dir(lab: Lab, exp_id: str) -> Path:
    return lab.experiments / exp_id


def record(lab: Lab, entry: Entry, outcome: Outcome, log_path: Path | None, patch: str) -> list[str]:
    """Write the terminal record; return the lab-relative paths to commit."""
    out = experiment_dir(lab, entry.id)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "metrics.parquet", _metrics_table(outcome))
    atomic_write(out / "patch.diff", patch)
    if log_path and log_path.exists():
        atomic_write(out / "log.txt", _tail(log_path))
    crash_point("record.after-files")
    score = write_score(lab, _score_row(lab, entry, outcome))
    crash_point("record.after-score")
    job = record_job(lab, entry, outcome.status)
    data = dict(entry.data)
    data["status"] = outcome.status
    data["updated"] = iso()
    data.setdefault("history", []).append({"status": outcome.status, "at": data["updated"], "by": "runner",
                                           **({"note": outcome.reason[:500]} if outcome.reason else {})})
    data["result"] = _result(lab, outcome)
    write_yaml(out / "experiment.yaml", data)
    crash_point("record.after-experiment-yaml")
    entry.path.unlink(missing_ok=True)
    crash_point("record.after-queue-removal")
    worktrees.remove(lab, entry.id)
    files = [out / name for name in ("metrics.parquet", "patch.diff", "log.txt", "experiment.yaml")]
    paths = [score, *([job] if job else [])]
    return [lab.rel(entry.path), *(lab.rel(f) for f in files + paths if f.exists())]


def _result(lab: Lab, o: Outcome) -> dict:
    result = {"metric": lab.metric, "value": _num(o.value),
              "metrics": {k: _num(v) for k, v in o.summary.items()},
              "base_value": _num(o.base_value), "delta": _delta(o), "promoted": o.promoted}
    if o.holdout is not None:
        result.update(holdout=_num(o.holdout), base_holdout=_num(o.base_holdout))
    if o.commit:
        result["commit"] = o.commit
    for name in ("seed", "z", "margin", "evidence", "constraint"):
        value = getattr(o, name)
        if value is not None:
            result[name] = _num(value) if isinstance(value, float) else value
    if o.reason:
        result["reason"] = o.reason
    return result


def _num(value):
    """YAML/JSON-safe number: NaN and inf become None (the reason says why)."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _delta(o: Outcome):
    if _num(o.value) is None or _num(o.base_value) is None:
        return None
    return float(o.value - o.base_value)


def _metrics_table(o: Outcome):
    import pyarrow as pa
    return pa.Table.from_pylist(o.metric_rows, schema=METRICS) if o.metric_rows else METRICS.empty_table()


def _tail(log: Path) -> str:
    size = log.stat().st_size
    with open(log, "rb") as handle:
        if size > LOG_TAIL_BYTES:
            handle.seek(size - LOG_TAIL_BYTES)
        return mask(handle.read().decode("utf-8", "replace"))  # the lab keeps no secret a job printed


def _score_row(lab: Lab, entry: Entry, o: Outcome) -> dict:
    job = entry.data.get("job") or {}
    started = parse_iso(job["started"]) if job.get("started") else None
    finished = now()
    return {
        "id": entry.id, "hypothesis": entry.data.get("hypothesis"),
        "kind": entry.data.get("kind", "experiment"), "status": o.status,
        "title": o.title or None, "change": json.dumps(entry.data.get("change") or {}, sort_keys=True),
        "fingerprint": entry.data.get("fingerprint"), "base": entry.data.get("base"), "commit": o.commit,
        "target": o.target, "metric": lab.metric, "value": _num(o.value), "base_value": _num(o.base_value),
        "delta": _delta(o), "promoted": o.promoted, "slot": job.get("slot"), "worker": entry.data.get("worker"),
        "wave": entry.data.get("wave"), "started": started, "finished": finished,
        "duration_s": (finished - started).total_seconds() if started else None, "reason": o.reason or None,
        "seed": o.seed, "cost": _num(o.cost), "constraint": o.constraint, "z": _num(o.z),
        "margin": _num(o.margin), "evidence": o.evidence, "env_class": entry.env_class,
        "holdout": _num(o.holdout), "base_holdout": _num(o.base_holdout),
    }
