"""Accounting: experiments/jobs/ (every job attempt that ran: backend, flavor, GPUs, run
seconds, dollars from the flavor's price) and experiments/agent_runs/ (every agent run:
tokens and cost as its CLI reported them), and the spend they add up to.

Each row is a file of its own, written once by the runner that saw it end (so two labs' or two
runners' accounting merges as files): a job attempt's file is named by (experiment, attempt),
so the same attempt finished again after a kill -9 is not counted twice.
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..backends import envclass, flavors
from ..files.tabledir import read_many
from ..files.tables import AGENT_RUNS, JOBS, TABLES, rows_table, write_table
from ..lab import Lab
from .entries import Entry
from .timeutil import iso, now, parse_iso


_LOCK = threading.Lock()
_UNCOMMITTED: dict[str, set[Path]] = {}   # lab root -> agent-run files written, not committed yet


def job_file(lab: Lab, exp_id: str, attempt: int) -> Path:
    return lab.root / TABLES["jobs"].directory / f"{exp_id}-{attempt}.parquet"


def record_job(lab: Lab, entry: Entry, status: str) -> Path | None:
    """The file of the entry's current attempt (a job that started), written unless it is there
    already; None if the entry has no such attempt."""
    job = entry.job
    started = _at(job.get("run_started")) or _at(job.get("started"))
    if not job.get("backend") or started is None:
        return None
    finished = _at(job.get("finished")) or now()
    env = entry.data.get("environment") or envclass.describe(lab.config, job["backend"], job.get("flavor", ""))
    seconds = max(0.0, (finished - started).total_seconds())
    row = {"experiment": entry.id, "attempt": max(1, entry.attempts), "kind": entry.kind, "status": status,
           "backend": job["backend"], "slot": job.get("slot"), "flavor": job.get("flavor") or env.get("flavor"),
           "gpus": env.get("gpus"), "gpu_model": env.get("gpu_model"), "env_class": env.get("class"),
           "started": started, "finished": finished, "seconds": seconds,
           "usd": _usd(lab, job["backend"], job.get("flavor") or env.get("flavor"), seconds)}
    path = job_file(lab, entry.id, row["attempt"])
    if not path.exists():
        write_table(path, rows_table([row], JOBS))
    return path


def job_timing(status) -> dict:
    """When a job began running and ended (a backend's JobStatus), for its entry's `job`: the queue
    wait is not billed."""
    stamp = lambda t: iso(datetime.fromtimestamp(t, timezone.utc))  # noqa: E731
    timing = {"run_started": stamp(status.started)} if status.started else {}
    if status.finished:
        timing["finished"] = stamp(status.finished)
    return timing


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


def record_agent_run(lab: Lab, row: dict) -> Path:
    """The run's own file; the runner's next commit takes it (`uncommitted_agent_runs`)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = lab.root / TABLES["agent_runs"].directory / f"{stamp}-{row['role']}-{secrets.token_hex(4)}.parquet"
    write_table(path, rows_table([row], AGENT_RUNS))
    with _LOCK:
        _UNCOMMITTED.setdefault(str(lab.root), set()).add(path)
    return path


def uncommitted_agent_runs(lab: Lab) -> list[Path]:
    """The agent-run files this process wrote since the last call: the caller commits them."""
    with _LOCK:
        return sorted(_UNCOMMITTED.pop(str(lab.root), set()))


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
    jobs = read_many(lab.root, TABLES["jobs"]).to_pylist()
    agents = read_many(lab.root, TABLES["agent_runs"]).to_pylist()
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
