"""The one interface between the loop and wherever an experiment's command runs.

A backend runs a `JobSpec` and reports through: `start` (idempotent per attempt:
a job this attempt already started, say by a runner killed before it recorded the
job, is adopted, never started twice), `poll` (never blocks long; keeps the job
dir's `log` and `metrics.jsonl` current, also for remote jobs, so that metric
parsing, stall detection and the reporter read local files), `logs`, `cancel`,
`reattach` (after a restart: stop jobs whose experiment is no longer live) and
its `slots`. Slot limits are enforced by the loop through `slots`, never by prompt.
A backend that cannot reach its engine (network, controller) raises `Unreachable`
after its own bounded retries: the loop records an event and tries again on a later
pass, while the other slots keep running.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

LOG_FILE = "log"
METRICS_FILE = "metrics.jsonl"
# poll states; every one but `running` ends the job
TERMINAL = ("exited", "timed_out", "stalled", "killed", "lost")


class JobStartError(RuntimeError):
    """The job could not be started (missing cwd, no interpreter, a refused submit): infrastructure."""


class Unreachable(RuntimeError):
    """The backend's engine did not answer (timeouts, 5xx, 429, a dropped stream) after bounded
    retries: nothing is decided; the same call is safe to make again on a later pass."""


@dataclass
class JobSpec:
    exp_id: str
    slot: str
    command: list[str]
    cwd: Path
    env: dict[str, str]
    job_dir: Path          # one fresh directory per attempt (a retry gets a new one)
    time_limit_s: float    # <= 0: no limit
    stall_timeout_s: float  # <= 0: no stall detection
    token: str = ""        # per attempt, written into the queue entry before the start: only a job
    #                        carrying it is this attempt's (a record forged in the job dir is not)
    labels: dict[str, str] = field(default_factory=dict)   # lab, experiment, hypothesis, base
    secrets: tuple[str, ...] = ()   # names of environment variables passed by name, masked in output
    job_id: str = ""       # the engine's id of this attempt's job, once the queue entry records it
    flavor: str = ""       # hardware asked for (a remote backend's default when empty)


@dataclass
class JobStatus:
    state: str             # running | exited | timed_out | stalled | killed | lost
    exit_code: int | None
    reason: str
    log_path: Path
    metrics_path: Path
    started: float         # epoch seconds
    finished: float | None
    pid: int | None = field(default=None)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


def breach(spec: JobSpec, started: float, now: float) -> tuple[str, str] | None:
    """("timed_out" | "stalled", reason) once a running job passes its time limit (counted from
    when it began running) or wrote neither output nor a metric for the stall timeout."""
    elapsed = now - started
    if spec.time_limit_s and spec.time_limit_s > 0 and elapsed > spec.time_limit_s:
        return "timed_out", f"time limit of {spec.time_limit_s:g}s exceeded (ran {elapsed:.1f}s)"
    job_dir = spec.job_dir.resolve()
    last = max(started, mtime(job_dir / LOG_FILE), mtime(job_dir / METRICS_FILE))
    idle = now - last
    if spec.stall_timeout_s and spec.stall_timeout_s > 0 and idle > spec.stall_timeout_s:
        return "stalled", f"stalled: no output and no metric for {idle:.1f}s (limit {spec.stall_timeout_s:g}s)"
    return None


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class Backend(ABC):
    name: str
    slots: list[str]

    @abstractmethod
    def start(self, spec: JobSpec) -> dict:
        """Launch (or adopt this attempt's existing job); return the queue entry's `job` record."""

    @abstractmethod
    def poll(self, spec: JobSpec) -> JobStatus:
        """Where the job stands; enforces the time limit and stall timeout."""

    @abstractmethod
    def cancel(self, spec: JobSpec, reason: str, state: str = "killed") -> None:
        """Stop the job (idempotent; a no-op on a finished one)."""

    @abstractmethod
    def reattach(self, live: set[str], jobs_root: Path) -> None:
        """After a restart: stop every job of this lab (under `jobs_root`, or carrying its labels)
        whose experiment is not in `live`. Live jobs are adopted by `start` and `poll`."""

    def logs(self, spec: JobSpec) -> str:
        """The job's output so far (its job dir's log)."""
        from ..files.metrics import read_log
        return read_log(spec.job_dir / LOG_FILE)
