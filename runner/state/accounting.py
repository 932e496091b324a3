"""Accounting: experiments/jobs.parquet (every job attempt that ran: backend, flavor, GPUs, run
seconds, dollars from the flavor's price) and experiments/agent_runs.parquet (every agent run:
tokens and cost as its CLI reported them), and the spend they add up to.

Rows are appended under a lock and written atomically; a job's row is keyed by (experiment,
attempt), so the same attempt finished again after a kill -9 is not counted twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow.compute as pc

from ..backends import envclass, flavors
from ..files.locks import FileLock
from ..files.tables import AGENT_RUNS, JOBS, append_rows, read_table
from ..lab import Lab
from .entries import Entry
from .timeutil import now, parse_iso


def record_job(lab: Lab, entry: Entry, status: str) -> bool:
    """Append the row of the entry's current attempt (a job that started); False if it has none
    or it is recorded already."""
    job = entry.job
    started = _at(job.get("run_started")) or _at(job.get("started"))
    if not job.get("backend") or started is None:
        return False
    finished = _at(job.get("finished")) or now()
    env = entry.data.get("environment") or envclass.describe(lab.config, job["backend"], job.get("flavor", ""))
    seconds = max(0.0, (finished - started).total_seconds())
    row = {"experiment": entry.id, "attempt": max(1, entry.attempts), "kind": entry.kind, "status": status,
           "backend": job["backend"], "slot": job.get("slot"), "flavor": job.get("flavor") or env.get("flavor"),
           "gpus": env.get("gpus"), "gpu_model": env.get("gpu_model"), "env_class": env.get("class"),
           "started": started, "finished": finished, "seconds": seconds,
           "usd": _usd(lab, job["backend"], job.get("flavor") or env.get("flavor"), seconds)}
    with FileLock(lab.locks / "jobs-table.lock"):
        table = read_table(lab.jobs_table, JOBS)
        if table.num_rows and pc.any(pc.and_(pc.equal(table["experiment"], entry.id),
                                             pc.equal(table["attempt"], row["attempt"]))).as_py():
            return False
        append_rows(lab.jobs_table, JOBS, [row], existing=table)
    return True


def _usd(lab: Lab, backend: str, flavor: str | None, seconds: float) -> float | None:
    """What HF Jobs bills for `seconds` on `flavor`; None where the lab knows no price."""
    if backend != "hf_jobs" or not flavor:
        return None
    known = flavors.flavor(lab.config, flavor)
    return None if known is None or known.usd_per_hour is None else known.usd_per_hour * seconds / 3600


def _at(text) -> datetime | None:
    try:
        return parse_iso(text) if text else None
    except ValueError:
        return None


def record_agent_run(lab: Lab, row: dict) -> None:
    with FileLock(lab.locks / "agent-runs.lock"):
        append_rows(lab.agent_runs_path, AGENT_RUNS, [row])


@dataclass
class Spend:
    usd: float = 0.0                 # jobs' dollars + agents' reported cost
    gpu_hours: float = 0.0
    agent_tokens: int = 0            # in + out
    wall_hours: float = 0.0          # since the first job or agent run started
    by_role: dict = field(default_factory=dict)      # role: {runs, tokens, usd}
    by_backend: dict = field(default_factory=dict)   # backend: {jobs, seconds, gpu_hours, usd}


def spend(lab: Lab, at: datetime | None = None) -> Spend:
    """What the lab has spent so far, from its two accounting tables."""
    jobs, agents = read_table(lab.jobs_table, JOBS).to_pylist(), read_table(lab.agent_runs_path, AGENT_RUNS).to_pylist()
    out = Spend()
    for row in jobs:
        gpu_hours = (row["gpus"] or 0) * (row["seconds"] or 0.0) / 3600
        mine = out.by_backend.setdefault(row["backend"], {"jobs": 0, "seconds": 0.0, "gpu_hours": 0.0, "usd": 0.0})
        mine["jobs"] += 1
        mine["seconds"] += row["seconds"] or 0.0
        mine["gpu_hours"] += gpu_hours
        mine["usd"] += row["usd"] or 0.0
        out.gpu_hours += gpu_hours
        out.usd += row["usd"] or 0.0
    for row in agents:
        tokens = (row["tokens_in"] or 0) + (row["tokens_out"] or 0)
        mine = out.by_role.setdefault(row["role"], {"runs": 0, "tokens": 0, "usd": 0.0})
        mine["runs"] += 1
        mine["tokens"] += tokens
        mine["usd"] += row["cost_usd"] or 0.0
        out.agent_tokens += tokens
        out.usd += row["cost_usd"] or 0.0
    starts = [row["started"] for row in jobs + agents if row["started"]]
    if starts:
        out.wall_hours = max(0.0, ((at or datetime.now(timezone.utc)) - min(starts)).total_seconds() / 3600)
    return out
