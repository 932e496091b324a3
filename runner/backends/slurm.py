"""The slurm backend: each experiment as a batch job, through sbatch, squeue, sacct, scontrol, scancel.

`workdir: shared` (the common cluster setup): the job runs in the experiment's worktree over
the shared filesystem (`--chdir`), writes its output straight into the job dir (`--output`)
and its metric stream into the job dir's metrics.jsonl (`$LAB_METRICS`), so poll has nothing
to copy. Each job carries `--job-name=benchlab-<id>` and `--comment=benchlab:<lab>:<id>:<token>`:
a runner killed between sbatch and recording the id finds the attempt's job by its comment
and adopts it instead of submitting it again. GPUs and CPU threads are Slurm's to hand out
(`--gres`, `--cpus-per-task` in `sbatch:`); the job sees CUDA_VISIBLE_DEVICES as Slurm sets it.

State: squeue while the job is in the queue (one listing per POLL_S serves every poll), then
sacct (with slurmdbd), `sacct -c` (jobcomp/filetxt) or `scontrol show job`, whichever knows
it. COMPLETED -> exited 0, FAILED/OUT_OF_MEMORY -> exited with the code, TIMEOUT -> timed_out,
CANCELLED -> the runner's stop reason (else lost), NODE_FAIL/BOOT_FAIL/PREEMPTED -> lost, and a
job none of them knows any more -> lost. The runner's time limit counts from the job's start.
"""
from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import time

from . import remote
from .base import METRICS_FILE, JobSpec, JobStartError, JobStatus, Unreachable
from .environment import job_environment
from .local import THREAD_VARS
from .remote import Backoff, RemoteBackend, retrying, status

POLL_S = 1.0                  # one squeue listing per this long serves every poll
CALL_TIMEOUT_S = 30.0
FINAL_GRACE_S = 60.0          # a job gone from squeue whose end no tool reports yet: lost after this
QUEUED = ("PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED")
LOST = ("NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "DEADLINE", "REVOKED")
TRANSIENT = re.compile(r"timed out|Unable to contact|Connection refused|temporarily unavailable|"
                       r"Transport endpoint|Zero Bytes were transmitted", re.IGNORECASE)


class SlurmError(RuntimeError):
    """A Slurm client answered with an error that is not a passing one."""


class SlurmBackend(RemoteBackend):
    name = "slurm"

    def __init__(self, config: dict):
        super().__init__()
        conf = config.get("backends", {}).get("slurm") or {}
        self.conf = conf
        self.lab_name = remote.label_value(str(config.get("lab", "lab")))
        self.slots = [f"slurm{i}" for i in range(int(conf.get("slots", 1)))]
        self._queue: tuple[float, dict[str, dict]] = (0.0, {})
        self._missing_since: dict[str, float] = {}
        self.backoff = Backoff()

    # -- the clients ---------------------------------------------------------------------------
    def _run(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """One client call, retried while the controller does not answer; then Unreachable."""
        def call():
            try:
                done = subprocess.run(list(args), capture_output=True, text=True, timeout=CALL_TIMEOUT_S,
                                      env=env if env is not None else os.environ)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"{args[0]} did not answer in {CALL_TIMEOUT_S:g} s") from None
            except FileNotFoundError:
                raise SlurmError(f"{args[0]} is not installed or not on PATH") from None
            if done.returncode != 0 and TRANSIENT.search(done.stderr or ""):
                raise TimeoutError(f"{args[0]}: {done.stderr.strip().splitlines()[-1]}")
            return done
        return retrying(call, f"slurm: {args[0]}", lambda exc: isinstance(exc, TimeoutError))

    def _comment(self, spec: JobSpec) -> str:
        return f"benchlab:{self.lab_name}:{spec.exp_id}:{spec.token}"

    def _listing(self, fresh: bool = False) -> dict[str, dict]:
        """Every job of this lab in the queue: {id: {state, start, exp, token}}."""
        at, jobs = self._queue
        if fresh or time.monotonic() - at > POLL_S:
            done = self._run("squeue", "-h", "-o", "%i|%T|%S|%k")
            if done.returncode != 0:
                raise Unreachable(f"slurm: squeue: {done.stderr.strip() or done.returncode}")
            jobs = {}
            for line in done.stdout.splitlines():
                job_id, state, start, comment = (line.split("|", 3) + ["", "", ""])[:4]
                parts = comment.split(":")
                if len(parts) == 4 and parts[:2] == ["benchlab", self.lab_name]:
                    jobs[job_id.strip()] = {"state": state, "start": start, "exp": parts[2], "token": parts[3]}
            self._queue = (time.monotonic(), jobs)
        return jobs

    # -- start ---------------------------------------------------------------------------------
    def _adopt(self, spec: JobSpec) -> dict | None:
        for job_id, job in self._listing(fresh=True).items():
            if job["token"] == spec.token:
                return remote.write_record(spec.job_dir.resolve(), self._rec(spec, job_id, time.time()))
        return None

    def _submit(self, spec: JobSpec) -> dict:
        if self.conf.get("workdir", "shared") != "shared":
            raise JobStartError("backends.slurm.workdir: only `shared` is supported")
        job_dir = spec.job_dir.resolve()
        argv = ["sbatch", "--parsable", f"--chdir={spec.cwd.resolve()}", f"--output={job_dir / 'log'}",
                f"--job-name=benchlab-{spec.exp_id}", f"--comment={self._comment(spec)}"]
        if self.conf.get("partition"):
            argv.append(f"--partition={self.conf['partition']}")
        extra = [str(arg) for arg in self.conf.get("sbatch") or ()]
        if spec.time_limit_s > 0 and not any(a.startswith(("--time", "-t")) for a in extra):
            argv.append(f"--time={math.ceil((spec.time_limit_s + 600) / 60)}")  # a backstop only
        threads = " ".join(f'{var}="${{SLURM_CPUS_PER_TASK:-1}}"' for var in THREAD_VARS)
        submitted = time.time()
        done = self._run(*argv, *extra, "--wrap", f"export {threads}; exec {shlex.join(spec.command)}",
                         env=self._env(spec))
        job_id = done.stdout.strip().split(";")[0]
        if done.returncode != 0 or not job_id.isdigit():
            raise JobStartError(f"{spec.exp_id}: sbatch refused the job: "
                                f"{(done.stderr or done.stdout).strip() or done.returncode}")
        self._queue = (0.0, {})
        return remote.write_record(job_dir, self._rec(spec, job_id, submitted))

    def _env(self, spec: JobSpec) -> dict[str, str]:
        """What sbatch exports to the job: the minimal environment, without the runner's device and
        thread settings (Slurm's to give), plus the Slurm client's own configuration."""
        env = job_environment(os.environ, spec.env, secrets=spec.secrets)
        for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", *THREAD_VARS):
            env.pop(name, None)
        env.update({k: v for k, v in os.environ.items() if k.startswith("SLURM_CONF")})
        env.update({"LAB_METRICS": str(spec.job_dir.resolve() / METRICS_FILE), "LAB_EXPERIMENT": spec.exp_id,
                    "LAB_SLOT": spec.slot, "PYTHONUNBUFFERED": "1"})
        return env

    def _rec(self, spec: JobSpec, job_id: str, submitted: float) -> dict:
        return {"id": job_id, "token": spec.token, "flavor": self.conf.get("partition") or "default",
                "submitted": submitted}

    # -- poll ----------------------------------------------------------------------------------
    def poll(self, spec: JobSpec) -> JobStatus:
        now = time.time()
        rec = remote.record_for(spec)
        if rec is None:
            return status(spec, "lost", None, "lost: no Slurm job was recorded for this attempt", now, now)
        job_id = rec["id"]
        self.backoff.check(job_id)
        try:
            queued = self._listing().get(job_id)
            result = self._state(spec, rec, queued, now)
        except Unreachable as exc:
            self.backoff.failed(job_id, str(exc))
            raise
        self.backoff.ok(job_id)
        return result

    def _state(self, spec: JobSpec, rec: dict, queued: dict | None, now: float) -> JobStatus:
        if queued is not None:
            self._missing_since.pop(rec["id"], None)
            if queued["state"] in QUEUED:
                return status(spec, "running", None, f"{queued['state'].lower()} (waiting "
                              f"{now - rec['submitted']:.0f}s)", rec["submitted"], None)
            started = rec.get("run_started") or _slurm_time(queued["start"]) or now
            remote.mark_running(spec.job_dir.resolve(), rec, started)
            if queued["state"] == "COMPLETING":
                return status(spec, "running", None, "completing", started, None)
            return self._running(spec, rec, started, now)
        final = self._final(rec["id"])
        started = rec.get("run_started") or rec["submitted"]
        if final is None:
            first = self._missing_since.setdefault(rec["id"], now)
            if now - first < FINAL_GRACE_S:
                return status(spec, "running", None, "left the queue; waiting for its end record", started, None)
            return status(spec, "lost", None, f"lost: Slurm no longer knows job {rec['id']}", started, now)
        state, code = final
        if state == "COMPLETED":
            return status(spec, "exited", 0, "exit code 0", started, now)
        if state in ("FAILED", "OUT_OF_MEMORY"):
            return status(spec, "exited", code if code else 1, f"{state.lower()}: exit code {code}", started, now)
        if state == "TIMEOUT":
            return status(spec, "timed_out", code, "Slurm's time limit (sbatch --time) was reached", started, now)
        if state == "CANCELLED":
            return remote.ended_by_runner(spec, code, started, now, "the job was cancelled")
        return status(spec, "lost", code, f"lost: Slurm says {state}", started, now)

    def _final(self, job_id: str) -> tuple[str, int | None] | None:
        """(state, exit code) of a job that left the queue, from whichever tool still knows it."""
        fields = ["-j", job_id, "-P", "-n", "-X", "-o", "JobID,State,ExitCode"]
        for argv in (["sacct", *fields], ["sacct", "-c", *fields]):
            done = self._run(*argv)
            for line in done.stdout.splitlines() if done.returncode == 0 else ():
                parts = line.split("|")
                if len(parts) == 3 and parts[0].strip() == job_id:
                    return parts[1].split()[0], _exit_code(parts[2])
        done = self._run("scontrol", "show", "job", job_id, "-o")
        found = dict(re.findall(r"(\w+)=(\S+)", done.stdout)) if done.returncode == 0 else {}
        state = found.get("JobState")
        if state and state not in QUEUED + ("RUNNING", "COMPLETING"):
            return state, _exit_code(found.get("ExitCode", ""))
        return None

    # -- stopping ------------------------------------------------------------------------------
    def _stop_job(self, job_id: str) -> None:
        self._run("scancel", job_id)

    def reattach(self, live: set[str], jobs_root) -> list[str]:
        """scancel this lab's queued or running jobs whose experiment is not live; return their ids."""
        orphans = [job_id for job_id, job in self._listing(fresh=True).items() if job["exp"] not in live]
        if orphans:
            self._run("scancel", *orphans)
        return orphans


def _exit_code(text: str) -> int | None:
    """Slurm's "code:signal" -> the code, or -signal when a signal ended it."""
    code, _, sig = text.strip().partition(":")
    if not code.isdigit():
        return None
    return -int(sig) if sig.isdigit() and int(sig) and not int(code) else int(code)


def _slurm_time(text: str) -> float | None:
    """Slurm's local-time stamp (2026-11-30T06:01:02) as epoch seconds."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
