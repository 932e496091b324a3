"""What the remote backends (hf_jobs, slurm) share: the attempt's record in its job dir,
stop requests, bounded retries, the git hand-off of the experiment's commit, and the
split of a remote job's output into `log` and `metrics.jsonl`.

A job dir of a remote job holds:
- ``remote.json``: written right after the engine accepted the job: its id, the
  attempt's token, url, flavor, when it was submitted, and ``run_started`` once the
  engine said it runs. Only a record carrying the attempt's token is ever adopted.
- ``stop.json``: why the runner stopped it (time limit, stall, cancel), written before
  the engine is asked to stop it, so the reason survives a restart.
- ``log`` and ``metrics.jsonl``: the job's output, kept current by `poll`.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TypeVar

from ..files.locks import FileLock
from ..state.timeutil import iso
from . import relay
from .base import (
    LOG_FILE,
    METRICS_FILE,
    Backend,
    JobSpec,
    JobStartError,
    JobStatus,
    Unreachable,
    breach,
)
from .jobwrap import STOP_FILE, read_json, write_json

RECORD_FILE = "remote.json"
RECANCEL_S = 10.0                 # a stop the engine has not carried out yet is asked again this often
RETRY_WAITS = (0.2, 0.5, 1.0)     # a call is tried 1 + len(RETRY_WAITS) times within one pass
BACKOFF_MAX_S = 60.0              # then the job is left alone for up to this long between passes
LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")
T = TypeVar("T")


class RemoteBackend(Backend):
    """start, the running job's limits and cancel, shared by hf_jobs and slurm; each says how to
    find (`_adopt`), submit (`_submit`) and stop (`_stop_job`) a job of its engine."""

    def __init__(self):
        self._stopped_at: dict[str, float] = {}

    def start(self, spec: JobSpec) -> dict:
        """Adopt this attempt's job (its record, or the engine's listing by token), else submit it."""
        job_dir = spec.job_dir.resolve()
        job_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(job_dir / ".start.lock"):
            rec = read_record(job_dir, spec.token) or self._adopt(spec)
            if rec is None:
                rec = self._submit(spec)
        record = {"backend": self.name, "slot": spec.slot, "id": rec["id"], "flavor": rec["flavor"],
                  "started": iso(datetime.fromtimestamp(rec["submitted"], timezone.utc)),
                  "log": str(job_dir / LOG_FILE)}
        return {**record, "url": rec["url"]} if rec.get("url") else record

    def _running(self, spec: JobSpec, rec: dict, started: float, now: float) -> JobStatus:
        """A running job: stopped (and reported running until the engine ends it) once it breaches
        its time limit or stall timeout, or the runner asked it to stop."""
        job_dir = spec.job_dir.resolve()
        stop = stop_of(job_dir)
        if stop is None:
            found = breach(spec, started, now)
            if found is None:
                return status(spec, "running", None, "running", started, None)
            stop = request_stop(job_dir, *found)
        if now - self._stopped_at.get(rec["id"], 0.0) > RECANCEL_S:
            self._stop(rec["id"])
        return status(spec, "running", None, f"stopping: {stop['reason']}", started, None)

    def _stop(self, job_id: str) -> None:
        self._stopped_at[job_id] = time.time()
        try:
            self._stop_job(job_id)
        except Unreachable:
            pass  # asked again on a later poll; the engine's own time limit is the backstop

    def cancel(self, spec: JobSpec, reason: str, state: str = "killed") -> None:
        """Record why, then ask the engine to stop the job (a no-op on a finished one)."""
        job_dir = spec.job_dir.resolve()
        rec = read_record(job_dir, spec.token)
        if rec is not None:
            request_stop(job_dir, state, reason)
            self._stop(rec["id"])

    def _adopt(self, spec: JobSpec) -> dict | None:
        raise NotImplementedError

    def _submit(self, spec: JobSpec) -> dict:
        raise NotImplementedError

    def _stop_job(self, job_id: str) -> None:
        raise NotImplementedError


# -- the attempt's record ------------------------------------------------------------------
def read_record(job_dir: Path, token: str) -> dict | None:
    """This attempt's record (None if absent or written for another token)."""
    rec = read_json(job_dir / RECORD_FILE)
    return rec if rec and rec.get("id") and rec.get("token") == token else None


def record_for(spec: JobSpec) -> dict | None:
    """This attempt's record; rebuilt from the queue entry's job id when the job dir lost it."""
    job_dir = spec.job_dir.resolve()
    rec = read_record(job_dir, spec.token)
    if rec is None and spec.job_id and spec.token:
        rec = write_record(job_dir, {"id": spec.job_id, "token": spec.token, "url": "", "flavor": spec.flavor,
                                     "submitted": time.time()})
    return rec


def write_record(job_dir: Path, rec: dict) -> dict:
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json(job_dir / RECORD_FILE, rec)
    return rec


def mark_running(job_dir: Path, rec: dict, started: float) -> None:
    """Remember when the engine first said the job runs (queue wait ends there)."""
    if not rec.get("run_started"):
        rec["run_started"] = started
        write_record(job_dir, rec)


def request_stop(job_dir: Path, state: str, reason: str) -> dict:
    """Record why the runner stops the job; the first reason wins."""
    stop = read_json(job_dir / STOP_FILE)
    if stop is None:
        stop = {"state": state, "reason": reason, "at": time.time()}
        write_json(job_dir / STOP_FILE, stop)
    return stop


def stop_of(job_dir: Path) -> dict | None:
    return read_json(job_dir / STOP_FILE)


def status(spec: JobSpec, state: str, code: int | None, reason: str, started: float,
           finished: float | None) -> JobStatus:
    job_dir = spec.job_dir.resolve()
    return JobStatus(state, code, reason, job_dir / LOG_FILE, job_dir / METRICS_FILE, started, finished)


def ended_by_runner(spec: JobSpec, code: int | None, started: float, finished: float | None,
                    engine_reason: str) -> JobStatus:
    """A job the engine reports cancelled: the runner's recorded reason if it stopped it, else lost
    (someone cancelled it from outside: infrastructure, retried)."""
    stop = stop_of(spec.job_dir.resolve())
    if stop:
        return status(spec, stop["state"], code, stop["reason"], started, finished)
    return status(spec, "lost", code, f"lost: {engine_reason} (not by the runner)", started, finished)


# -- bounded retries -------------------------------------------------------------------------
def retrying(call: Callable[[], T], what: str, transient: Callable[[Exception], bool],
             waits: tuple[float, ...] = RETRY_WAITS) -> T:
    """`call()`, retried after each wait while it fails transiently; then Unreachable."""
    for wait in (*waits, None):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - `transient` decides what is retried
            if not transient(exc):
                raise
            if wait is None:
                raise Unreachable(f"{what}: {describe(exc)} (tried {len(waits) + 1} times)") from None
            time.sleep(retry_after(exc, wait))


def retry_after(exc: Exception, default: float) -> float:
    """A 429's Retry-After (capped), else the default wait."""
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(float(value), 10.0) if value is not None else default
    except ValueError:
        return default


def describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class Backoff:
    """Per-job pauses after Unreachable: 1 s, 2 s, 4 s ... up to BACKOFF_MAX_S, reset on success."""

    def __init__(self):
        self._next: dict[str, tuple[float, float, str]] = {}

    def check(self, key: str) -> None:
        wait = self._next.get(key)
        if wait and time.monotonic() < wait[0]:
            raise Unreachable(wait[2])

    def failed(self, key: str, message: str) -> None:
        pause = min(BACKOFF_MAX_S, 2 * self._next.get(key, (0, 0.5, ""))[1])
        self._next[key] = (time.monotonic() + pause, pause, message)

    def ok(self, key: str) -> None:
        self._next.pop(key, None)


# -- the git hand-off ------------------------------------------------------------------------
def push_commit(worktree: Path, remote: str, branch: str) -> tuple[str, str]:
    """Push the worktree's HEAD to `branch` of `remote` (a remote's name or a URL); return the
    URL a job clones from and the commit it must check out."""
    commit = _git(worktree, "rev-parse", "HEAD").strip()
    url = remote if ("://" in remote or remote.startswith("/") or "@" in remote) else \
        _git(worktree, "remote", "get-url", remote).strip()
    _git(worktree, "push", "-q", "--force", remote, f"{commit}:refs/heads/{branch}")
    return url, commit


def _git(cwd: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise Unreachable(f"git {args[0]} timed out after 120 s") from None
    if done.returncode != 0:
        problem = (done.stderr or done.stdout).strip().splitlines()
        raise JobStartError(f"git {' '.join(args[:2])} in {cwd}: {problem[-1] if problem else done.returncode}")
    return done.stdout


def clone_script(url: str, branch: str, commit: str) -> str:
    """Shell that clones exactly `commit` into ./work and runs the relay there with "$@"."""
    q = shlex.quote
    return (f"set -e; git clone -q --depth 1 --branch {q(branch)} {q(url)} work; cd work; "
            f"if [ \"$(git rev-parse HEAD)\" != {q(commit)} ]; then "
            f"echo 'benchlab: {branch} moved away from {commit[:12]}; not running another commit' >&2; exit 97; fi; "
            "exec python3 -u -c \"$LAB_RELAY\" \"$@\"")


def relay_source() -> str:
    return Path(relay.__file__).read_text(encoding="utf-8")


def label_value(value: str) -> str:
    """A Hub label value: at most 100 characters of [A-Za-z0-9._-]."""
    return LABEL_VALUE.sub("-", value)[:100]


# -- a remote job's output -------------------------------------------------------------------
class OutputFiles:
    """Writes a remote job's output lines into the job dir: `@lab-metric` lines to metrics.jsonl,
    the rest to log, secret values masked."""

    def __init__(self, job_dir: Path, mask: Callable[[str], str]):
        self.job_dir, self.mask = job_dir, mask

    def open(self):
        self.log = open(self.job_dir / LOG_FILE, "w", encoding="utf-8")
        self.metrics = open(self.job_dir / METRICS_FILE, "w", encoding="utf-8")
        return self

    def write(self, line: str) -> None:
        line = self.mask(line.rstrip("\n"))
        if line.startswith(relay.METRIC_PREFIX.decode()):
            if (text := _metric_json(line)) is not None:
                self.metrics.write(text + "\n")
                self.metrics.flush()
        else:
            self.log.write(line + "\n")
            self.log.flush()

    def close(self) -> None:
        self.log.close()
        self.metrics.close()

    def replace(self, lines: list[str]) -> None:
        """The whole output at once (atomically per file), once the job has ended."""
        log, metrics = [], []
        prefix = relay.METRIC_PREFIX.decode()
        for line in lines:
            line = self.mask(line.rstrip("\n"))
            if not line.startswith(prefix):
                log.append(line)
            elif (text := _metric_json(line)) is not None:
                metrics.append(text)
        for name, rows in ((LOG_FILE, log), (METRICS_FILE, metrics)):
            tmp = self.job_dir / f".{name}.tmp"
            tmp.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
            tmp.replace(self.job_dir / name)


def _metric_json(line: str) -> str | None:
    """The JSON of a metric line; None for a torn or non-object one (never mistaken for a number)."""
    text = line[len(relay.METRIC_PREFIX):].strip()
    try:
        return text if isinstance(json.loads(text), dict) else None
    except (ValueError, RecursionError):
        return None
