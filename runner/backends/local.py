"""The local backend: jobs as process groups on this machine, one per slot.

Every job runs under the wrapper in `jobwrap.py` (see its docstring for the files
in a job directory). All state lives in those files, so `poll`, `kill` and
`orphans` work the same from a fresh `LocalBackend` after a runner restart as
from the instance that started the job. Nothing here blocks for long: `poll`
returns at once; only `kill` and `orphans` wait, at most the kill grace period.

States reported by `poll`:

- ``running``: the wrapper lives (also while a stop is in progress: the reason
  then starts with "stopping"). A slot is free only once the state is terminal.
- ``exited``: the command ended on its own; ``exit_code`` is its status
  (negative: killed by that signal; 127: the command could not be started).
- ``timed_out`` / ``stalled``: the backend stopped it for running past
  ``time_limit_s`` / for writing neither log output nor a metric line for
  ``stall_timeout_s``.
- ``killed``: stopped through `kill` (cancellation) or as an orphan.
- ``lost``: the wrapper vanished without an exit record (reboot, SIGKILL of the
  wrapper), or the job's group was signalled from outside the runner (system
  shutdown, a manual ``kill -TERM -PGID``): an infrastructure failure the caller
  may retry in a new job dir. A job that dies of a signal it did not get from
  outside (the kernel's OOM killer, its own abort) is ``exited`` with a negative
  ``exit_code``: that one is the change's fault.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import LabError
from ..files.locks import FileLock
from ..state.timeutil import iso
from . import jobwrap
from .base import Backend, JobSpec, JobStartError, JobStatus, mtime
from .base import breach as check_breach
from .environment import job_environment
from .jobwrap import (
    EXIT_FILE,
    LOG_FILE,
    METRICS_FILE,
    PID_FILE,
    STOP_FILE,
    is_alive,
    read_json,
)

WRAPPER = Path(jobwrap.__file__).resolve()
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "TORCH_NUM_THREADS")
START_TIMEOUT_S = 15.0    # the wrapper writes its pid file within milliseconds


class LocalBackend(Backend):
    name = "local"

    def __init__(self, config: dict, kill_grace_s: float = 5.0):
        local = config.get("backends", {}).get("local", {})
        max_running = int(config.get("limits", {}).get("max_running", 8))
        self.kind = local.get("kind", "cpu")
        self.threads_per_slot = int(local.get("threads_per_slot", 1))
        self.kill_grace_s = kill_grace_s
        if self.kind == "gpu":
            devices = [str(d) for d in local.get("gpus") or detect_gpus()]
            if not devices:
                raise LabError("kind is gpu but no GPU was found (nvidia-smi -L, CUDA_VISIBLE_DEVICES); "
                               "list them in backends.local.gpus or use kind: cpu", "lab.yaml",
                               field="backends.local.kind")
            names = [f"gpu{d}" if d.isdigit() else f"gpu{i}" for i, d in enumerate(devices)]
            self._devices = dict(list(zip(names, devices))[:max_running])
        else:
            count = min(int(local.get("slots", 1)), max_running)
            self._devices = {f"cpu{i}": None for i in range(count)}
        self.slots: list[str] = list(self._devices)
        self._children: dict[int, subprocess.Popen] = {}

    # -- environment ----------------------------------------------------------
    def slot_env(self, slot: str) -> dict[str, str]:
        """The variables that confine a job to its slot."""
        if slot not in self._devices:
            raise ValueError(f"unknown slot {slot!r}; this backend has {self.slots}")
        if self.kind == "gpu":
            return {"CUDA_VISIBLE_DEVICES": self._devices[slot]}
        threads = str(self.threads_per_slot)
        return {**{name: threads for name in THREAD_VARS}, "CUDA_VISIBLE_DEVICES": ""}

    def job_env(self, spec: JobSpec) -> dict[str, str]:
        """The minimal environment < slot limits < spec.env and secrets < the job protocol variables."""
        env = job_environment(os.environ, self.slot_env(spec.slot), spec.env, secrets=spec.secrets)
        job_dir = spec.job_dir.resolve()
        env.update({"LAB_METRICS": str(job_dir / METRICS_FILE), "LAB_EXPERIMENT": spec.exp_id,
                    "LAB_SLOT": spec.slot, jobwrap.MARKER: str(job_dir), "PYTHONUNBUFFERED": "1"})
        if spec.secrets:
            env[jobwrap.MASKED] = ",".join(spec.secrets)  # the wrapper masks their values in the log
        return env

    # -- start ------------------------------------------------------------------
    def start(self, spec: JobSpec) -> dict:
        """Launch the job; return the record for the queue entry's `job` field.

        Idempotent per job dir: if it already holds a job (say, started by a
        runner that died before recording it), that job's record is returned and
        nothing new is started."""
        env = self.job_env(spec)      # validates the slot first
        job_dir = spec.job_dir.resolve()
        job_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(job_dir / ".start.lock"):
            existing = _pid_record(job_dir)
            if existing is not None and existing.get("token") != spec.token:
                _set_aside(job_dir)  # not this attempt's job (forged or stale): never adopt it
                existing = None
            if existing is None:
                existing = self._launch(spec, job_dir, env)
        return self._record(spec, existing)

    def _launch(self, spec: JobSpec, job_dir: Path, env: dict[str, str]) -> dict:
        # -I -S: the wrapper needs the standard library only; skipping site makes it
        # start in ~30 ms and keeps a worktree's files off its import path
        argv = [sys.executable, "-I", "-S", str(WRAPPER), "--job-dir", str(job_dir), "--token", spec.token, "--",
                *spec.command]
        try:
            with open(job_dir / LOG_FILE, "ab") as log:
                proc = subprocess.Popen(argv, cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise JobStartError(f"{spec.exp_id}: cannot start the job wrapper in {spec.cwd}: "
                                f"{exc.strerror or exc}") from None
        self._children[proc.pid] = proc
        deadline = time.monotonic() + START_TIMEOUT_S
        while (rec := read_json(job_dir / PID_FILE)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                self._kill_group(proc.pid, signal.SIGKILL)
                tail = (job_dir / LOG_FILE).read_bytes()[-500:].decode("utf-8", "replace").strip()
                raise JobStartError(f"{spec.exp_id}: the job wrapper did not start: {tail or 'no output'}")
            time.sleep(0.002)
        return rec

    def _record(self, spec: JobSpec, rec: dict) -> dict:
        job_dir = spec.job_dir.resolve()
        started = datetime.fromtimestamp(rec.get("started", 0.0), timezone.utc)
        return {"backend": self.name, "slot": rec.get("slot") or spec.slot, "id": str(job_dir),
                "pid": rec.get("pid"), "started": iso(started), "log": str(job_dir / LOG_FILE)}

    # -- poll -------------------------------------------------------------------
    def poll(self, spec: JobSpec) -> JobStatus:
        """Where the job stands, from its files and process liveness alone.

        Enforces the time limit and stall timeout: on a breach it signals the
        group (SIGTERM, SIGKILL once the grace period has passed on a later poll)
        and keeps reporting `running` ("stopping: ...") until the group is gone."""
        self._reap()
        job_dir = spec.job_dir.resolve()
        rec = _pid_record(job_dir)
        if rec is None:
            return self._status(spec, "lost", None, f"no valid pid record in {job_dir}: "
                                "the job wrapper never started", mtime(job_dir), mtime(job_dir))
        alive = _leads(rec, job_dir)   # before reading exit.json: a wrapper dead now has written it already
        done, stop = read_json(job_dir / EXIT_FILE), read_json(job_dir / STOP_FILE)
        if done is None and alive:
            return self._running(spec, rec, stop)
        if done is not None and alive:            # the wrapper is between exit.json and exit
            if time.time() - done.get("finished", 0.0) > self.kill_grace_s:
                self._kill_group(rec["pgid"], signal.SIGKILL)
            return self._status(spec, "running", None, "finishing", rec["started"], None, rec)
        if done is None:
            self._sweep(job_dir, signal.SIGKILL)   # leftovers of a wrapper that died hard
        return self._final(spec, rec, done, stop)

    def _running(self, spec: JobSpec, rec: dict, stop: dict | None) -> JobStatus:
        now = time.time()
        if stop is None:
            breach = check_breach(spec, rec["started"], now)
            if breach is None:
                return self._status(spec, "running", None, "running", rec["started"], None, rec)
            stop = self._request_stop(spec, rec, *breach)
        elif now - stop["at"] >= self.kill_grace_s and not stop.get("sigkill_at"):
            self._signal_job(spec.job_dir.resolve(), rec, signal.SIGKILL)
            stop["sigkill_at"] = now
            jobwrap.write_json(spec.job_dir.resolve() / STOP_FILE, stop)
        return self._status(spec, "running", None, f"stopping: {stop['reason']}", rec["started"], None, rec)

    def _final(self, spec: JobSpec, rec: dict, done: dict | None, stop: dict | None) -> JobStatus:
        if done is not None:
            code = done.get("returncode")
            state, reason = ("exited", _describe_exit(code, done.get("error"))) if stop is None \
                else (stop["state"], stop["reason"])
            if stop is None and done.get("signals_received"):
                outside = _signal_name(done["signals_received"][0])
                state = "lost"
                reason = f"lost: stopped from outside the runner by {outside} (shutdown or a manual kill)"
            return self._status(spec, state, code, reason, rec["started"], done.get("finished"), rec)
        if stop is not None:
            return self._status(spec, stop["state"], None, stop["reason"], rec["started"], stop["at"], rec)
        job_dir = spec.job_dir.resolve()
        last = max(rec["started"], mtime(job_dir / LOG_FILE), mtime(job_dir / METRICS_FILE))
        return self._status(spec, "lost", None, f"lost: the job wrapper (pid {rec.get('pid')}) is gone without "
                            "an exit record (machine reboot or SIGKILL of the wrapper)", rec["started"], last, rec)

    def _status(self, spec: JobSpec, state: str, code: int | None, reason: str, started: float,
                finished: float | None, rec: dict | None = None) -> JobStatus:
        job_dir = spec.job_dir.resolve()
        return JobStatus(state, code, reason, job_dir / LOG_FILE, job_dir / METRICS_FILE, started, finished,
                         rec.get("pid") if rec else None)

    # -- stopping ---------------------------------------------------------------
    def cancel(self, spec: JobSpec, reason: str, state: str = "killed") -> None:
        """Stop the job: SIGTERM to its group, SIGKILL after the grace period.

        Idempotent; a no-op on a finished job. The first recorded reason wins
        (a job already timing out stays `timed_out`). Blocks at most the grace
        period plus a moment."""
        self._reap()
        job_dir = spec.job_dir.resolve()
        rec = _pid_record(job_dir)
        if rec is None or read_json(job_dir / EXIT_FILE) is not None or not self._job_alive(job_dir, rec):
            return
        if read_json(job_dir / STOP_FILE) is None:
            self._request_stop(spec, rec, state, reason)
        else:
            self._signal_job(job_dir, rec, signal.SIGTERM)
        self._wait_gone({job_dir: rec}, self.kill_grace_s)

    def _request_stop(self, spec: JobSpec, rec: dict, state: str, reason: str) -> dict:
        """Record why (stop.json, before any signal), then SIGTERM the job."""
        job_dir = spec.job_dir.resolve()
        stop = {"state": state, "reason": reason, "at": time.time()}
        jobwrap.write_json(job_dir / STOP_FILE, stop)
        self._signal_job(job_dir, rec, signal.SIGTERM)
        return stop

    def _wait_gone(self, jobs: dict[Path, dict], grace: float) -> None:
        deadline = time.monotonic() + grace
        while any(self._job_alive(d, r) for d, r in jobs.items()) and time.monotonic() < deadline:
            time.sleep(0.01)
            self._reap()
        for job_dir, rec in jobs.items():
            self._signal_job(job_dir, rec, signal.SIGKILL)
        deadline = time.monotonic() + 2.0         # SIGKILL takes effect within milliseconds
        while any(self._job_alive(d, r) for d, r in jobs.items()) and time.monotonic() < deadline:
            time.sleep(0.01)
            self._reap()

    def _job_alive(self, job_dir: Path, rec: dict) -> bool:
        return _leads(rec, job_dir) or bool(jobwrap.marked_processes(job_dir=str(job_dir)))

    def _signal_job(self, job_dir: Path, rec: dict, sig: int) -> list[int]:
        """Signal the group (only while its leader is verifiably ours) and every
        process carrying the job's marker outside it."""
        hit = []
        leader = _leads(rec, job_dir)
        if leader and self._kill_group(rec["pgid"], sig):
            hit.append(rec["pid"])
        strays = [p["pid"] for p in jobwrap.marked_processes(job_dir=str(job_dir))
                  if not leader or p["pgrp"] != rec["pgid"]]
        return hit + jobwrap.signal_pids(strays, sig)

    def _sweep(self, job_dir: Path, sig: int) -> list[int]:
        return jobwrap.signal_pids([p["pid"] for p in jobwrap.marked_processes(job_dir=str(job_dir))], sig)

    @staticmethod
    def _kill_group(pgid: int, sig: int) -> bool:
        try:
            os.killpg(pgid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def _reap(self) -> None:
        """Collect wrappers this instance started, so none lingers as a zombie."""
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    # -- recovery ---------------------------------------------------------------
    def reattach(self, live: set[str], jobs_root: Path) -> list[int]:
        """Kill every job under `jobs_root` whose experiment is not live; return
        the pids signalled. Finds jobs by their pid records and by the
        environment marker (which also catches processes that left the group)."""
        self._reap()
        root = jobs_root.resolve()
        victims: dict[Path, dict] = {}
        for pid_file in root.rglob(PID_FILE) if root.is_dir() else ():
            job_dir = pid_file.parent
            rec = _pid_record(job_dir)
            if rec and rec.get("experiment") not in live and not (job_dir / EXIT_FILE).exists() \
                    and self._job_alive(job_dir, rec):
                victims[job_dir] = rec
        for proc in jobwrap.marked_processes(under=str(root)):
            if proc["experiment"] not in live:
                job_dir = Path(proc["job_dir"])
                victims.setdefault(job_dir, _pid_record(job_dir) or {"experiment": proc["experiment"]})
        pids: set[int] = set()
        for job_dir, rec in victims.items():
            if read_json(job_dir / STOP_FILE) is None and job_dir.is_dir():
                jobwrap.write_json(job_dir / STOP_FILE, {
                    "state": "killed", "reason": f"orphan: experiment {rec.get('experiment')} is not live",
                    "at": time.time()})
            pids.update(self._signal_job(job_dir, rec, signal.SIGTERM))
            pids.update(p["pid"] for p in jobwrap.marked_processes(job_dir=str(job_dir)))
        if victims:
            self._wait_gone(victims, self.kill_grace_s)
        return sorted(pids)


def detect_gpus() -> list[str]:
    """GPU ids for CUDA_VISIBLE_DEVICES, without importing torch: the runner's own
    CUDA_VISIBLE_DEVICES if set, else the indices `nvidia-smi -L` lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return re.findall(r"^GPU (\d+):", out.stdout, flags=re.MULTILINE)


def _describe_exit(code: int | None, error: str | None) -> str:
    if error:
        return error
    if code is None:
        return "no exit status"
    if code < 0:
        return f"killed by signal {-code} ({_signal_name(-code)})"
    return f"exit code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _leads(rec: dict, job_dir: Path) -> bool:
    """The record's process lives and leads this job: it carries the job's marker, so a
    record naming some other process (forged, or a reused pid) never gets it signalled."""
    return is_alive(rec) and not jobwrap.foreign(rec["pid"], str(job_dir))


def _set_aside(job_dir: Path) -> None:
    """Move a job dir that is not this attempt's out of the way (kept for a post-mortem)."""
    job_dir.rename(job_dir.with_name(f"{job_dir.name}.refused-{time.time_ns()}"))
    job_dir.mkdir()


def _pid_record(job_dir: Path) -> dict | None:
    """The wrapper's pid record, None if absent or not one the wrapper wrote."""
    rec = read_json(job_dir / PID_FILE)
    if rec is None or not all(isinstance(rec.get(k), int) for k in ("pid", "pgid")) \
            or not isinstance(rec.get("started"), (int, float)):
        return None
    return rec


