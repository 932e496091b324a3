"""The hf_jobs backend: each experiment as a Hugging Face Job, through huggingface_hub's Jobs API.

start: push the worktree's commit to `exp/<id>` of the configured git remote, then `run_job`
with a command that clones exactly that commit and runs the target under the relay
(relay.py) in the image; labels benchlab, lab, experiment, hypothesis, base and the
attempt's token. Idempotent per attempt: a job recorded in the job dir, or found by
`list_jobs` with the token's label (a runner killed between submit and record), is adopted,
never submitted again; run_job itself is never retried blindly.
poll: the live jobs' stages come from one `list_jobs` per POLL_S, a job missing from it
from `inspect_job`; a follower thread (hf_logs.py) keeps `log`/`metrics.jsonl` current; once
the job has ended, the whole log is read again. Stages: SCHEDULING/RUNNING -> running,
COMPLETED -> exited 0, ERROR -> exited with the job's exit code (or timed_out for the Hub's
own timeout), CANCELED/DELETED -> the runner's stop reason, else lost; an unknown id -> lost.
The time limit counts from the job's start (queue wait excluded); breaches cancel_job.
Tokens: the Hub token comes from the environment or huggingface_hub's token store; secrets
go to the job by name (`secrets:`), their values never into a file of the lab.
"""
from __future__ import annotations

import os
import time

from .. import secrets as lab_secrets
from . import hf_logs, remote
from .base import JobSpec, JobStartError, JobStatus, Unreachable
from .remote import Backoff, OutputFiles, RemoteBackend, retrying, status

LIVE = ("SCHEDULING", "RUNNING")
ENDED = ("COMPLETED", "ERROR", "CANCELED", "DELETED")
POLL_S = 2.0                 # one list_jobs per this long serves every live job's poll
DEFAULT_IMAGE = "pytorch/pytorch:latest"


class HfJobsBackend(RemoteBackend):
    name = "hf_jobs"

    def __init__(self, config: dict):
        super().__init__()
        conf = config.get("backends", {}).get("hf_jobs") or {}
        self.lab_name = str(config.get("lab", "lab"))
        self.conf = conf
        self.slots = [f"hf{i}" for i in range(int(conf.get("slots", 1)))]
        self.flavor = conf.get("flavor", "cpu-basic")
        self.command = list(config.get("target", {}).get("command") or [])
        self.secret_names = tuple(dict.fromkeys([*(conf.get("secrets") or ()),
                                                 *(config.get("target", {}).get("secrets") or ())]))
        self._api = None
        self._namespace = conf.get("namespace")
        self._listing: tuple[float, dict] = (0.0, {})
        self._followers: dict[str, hf_logs.Follower] = {}
        self.backoff = Backoff()

    # -- the client ------------------------------------------------------------------------
    @property
    def api(self):
        if self._api is None:
            hf_logs.configure_client()
            from huggingface_hub import HfApi
            self._api = HfApi()
        return self._api

    @property
    def namespace(self) -> str:
        if not self._namespace:
            who = retrying(lambda: self.api.whoami(), "hf_jobs: whoami", hf_logs.transient)
            self._namespace = who["name"]
        return self._namespace

    def _call(self, what: str, fn, **kwargs):
        # list_jobs retries 408/429/5xx itself (honouring Retry-After): no second layer for it
        waits = () if what == "list_jobs" else remote.RETRY_WAITS
        return retrying(lambda: fn(namespace=self.namespace, **kwargs), f"hf_jobs: {what}", hf_logs.transient,
                        waits)

    def _list(self, **kwargs) -> list:
        return self._call("list_jobs", lambda **kw: list(self.api.list_jobs(**kw)), **kwargs)

    def _labels(self, spec: JobSpec) -> dict[str, str]:
        labels = {k: remote.label_value(v) for k, v in spec.labels.items()}
        labels.update(benchlab="1", lab=remote.label_value(self.lab_name), token=spec.token)
        return labels

    # -- start -------------------------------------------------------------------------------
    def _adopt(self, spec: JobSpec) -> dict | None:
        """This attempt's job, submitted by a runner killed before it recorded it."""
        found = self._list(labels={"lab": remote.label_value(self.lab_name), "token": spec.token})
        if not found:
            return None
        return remote.write_record(spec.job_dir.resolve(), self._rec_of(spec, found[0], time.time()))

    def _submit(self, spec: JobSpec) -> dict:
        if not self.command:
            raise JobStartError(f"{spec.exp_id}: lab.yaml has no target.command to run")
        branch = f"exp/{spec.exp_id}"
        url, commit = remote.push_commit(spec.cwd, self.conf.get("remote", "origin"), branch)
        env = {**spec.env, "LAB_EXPERIMENT": spec.exp_id, "LAB_SLOT": spec.slot, "PYTHONUNBUFFERED": "1",
               "LAB_RELAY": remote.relay_source()}
        given = self._secret_values()
        if given:
            env["LAB_MASKED_ENV"] = ",".join(given)
        submitted = time.time()
        try:
            info = self.api.run_job(
                image=self.conf.get("image", DEFAULT_IMAGE), command=["bash", "-c", remote.clone_script(
                    url, branch, commit), "benchlab-job", *self.command], env=env, secrets=given or None,
                flavor=spec.flavor or self.flavor, timeout=self._timeout(spec), labels=self._labels(spec),
                namespace=self.namespace)
        except Exception as exc:  # noqa: BLE001 - the job may exist: the next pass adopts it by its token
            if hf_logs.transient(exc):
                raise Unreachable(f"hf_jobs: run_job: {remote.describe(exc)} (the next pass looks the job up by "
                                  "its token before submitting again)") from None
            raise JobStartError(f"{spec.exp_id}: the Hub refused the job: {remote.describe(exc)}") from None
        return remote.write_record(spec.job_dir.resolve(), self._rec_of(spec, info, submitted))

    def _secret_values(self) -> dict[str, str]:
        """The named secrets' values: the environment, and the Hub's token store for HF_TOKEN."""
        values = {name: os.environ[name] for name in self.secret_names if os.environ.get(name)}
        if "HF_TOKEN" in self.secret_names and "HF_TOKEN" not in values:
            from huggingface_hub import get_token
            token = get_token()
            if token:
                values["HF_TOKEN"] = token
        return values

    def _timeout(self, spec: JobSpec):
        """The Hub's own limit: lab.yaml's `timeout`, else the time limit plus ten minutes (a backstop
        for a runner that is down; the runner enforces the time limit itself)."""
        if self.conf.get("timeout"):
            return self.conf["timeout"]
        return int(spec.time_limit_s + 600) if spec.time_limit_s and spec.time_limit_s > 0 else None

    def _rec_of(self, spec: JobSpec, info, submitted: float) -> dict:
        return {"id": info.id, "token": spec.token, "url": info.url, "flavor": info.flavor or spec.flavor or
                self.flavor, "namespace": self.namespace, "submitted": submitted}

    # -- poll --------------------------------------------------------------------------------
    def poll(self, spec: JobSpec) -> JobStatus:
        job_dir, now = spec.job_dir.resolve(), time.time()
        rec = remote.record_for(spec)
        if rec is None:
            return status(spec, "lost", None, "lost: no Hugging Face job was recorded for this attempt", now, now)
        job_id = rec["id"]
        self.backoff.check(job_id)
        try:
            info = self._info(job_id)
        except Unreachable as exc:
            self.backoff.failed(job_id, str(exc))
            raise
        if info is None:
            self._unfollow(job_id)
            return status(spec, "lost", None, f"lost: job {job_id} is unknown to the Hub (deleted or vanished)",
                          rec["submitted"], now)
        self.backoff.ok(job_id)
        stage = str(getattr(info.status.stage, "value", info.status.stage))
        if stage in ENDED:     # also a job that never started (cancelled while scheduling, failed to start)
            started = info.started_at.timestamp() if info.started_at else rec["submitted"]
            return self._ended(spec, rec, info, stage, started)
        if stage == "SCHEDULING" or info.started_at is None:
            return status(spec, "running", None, f"scheduling (waiting {now - rec['submitted']:.0f}s)",
                          rec["submitted"], None)
        started = info.started_at.timestamp()
        remote.mark_running(job_dir, rec, started)
        if stage in LIVE:
            self._follow(spec, rec)
            return self._running(spec, rec, started, now)
        return status(spec, "running", None, f"stage {stage}", started, None)

    def _info(self, job_id: str):
        """The job's JobInfo (None if the Hub does not know it): from the shared listing of live jobs,
        else inspect_job."""
        from huggingface_hub.errors import JobNotFoundError
        listed_at, listing = self._listing
        if time.monotonic() - listed_at > POLL_S:
            jobs = self._list(status=list(LIVE), labels={"benchlab": "1", "lab": remote.label_value(self.lab_name)})
            listing = {job.id: job for job in jobs}
            self._listing = (time.monotonic(), listing)
        if job_id in listing:
            return listing[job_id]
        try:
            return self._call("inspect_job", self.api.inspect_job, job_id=job_id)
        except JobNotFoundError:
            return None

    def _ended(self, spec: JobSpec, rec: dict, info, stage: str, started: float) -> JobStatus:
        self._unfollow(rec["id"])
        files = OutputFiles(spec.job_dir.resolve(), self._masker())
        lines = self._call("fetch_job_logs", lambda **kw: list(self.api.fetch_job_logs(**kw)), job_id=rec["id"])
        message = info.status.message or ""
        code = _exit_code(message) if stage == "ERROR" else (0 if stage == "COMPLETED" else None)
        if stage == "ERROR" and code is None and message:
            lines.append(f"benchlab: the job ended in ERROR: {message}")
        files.replace(lines)
        finished = info.finished_at.timestamp() if info.finished_at else time.time()
        if stage in ("CANCELED", "DELETED"):
            return remote.ended_by_runner(spec, None, started, finished, f"the job was {stage.lower()}")
        if stage == "ERROR" and message.startswith("timed out"):
            return status(spec, "timed_out", code, f"the Hub's timeout: {message}", started, finished)
        reason = "exit code 0" if code == 0 else (message or "ERROR")
        return status(spec, "exited", code if code is not None else 1, reason, started, finished)

    def _masker(self):
        values = lab_secrets.values()
        return lambda text: lab_secrets.mask(text, values)

    # -- logs ---------------------------------------------------------------------------------
    def _follow(self, spec: JobSpec, rec: dict) -> None:
        follower = self._followers.get(rec["id"])
        if follower is None or not follower.is_alive():
            follower = hf_logs.Follower(self.api, self.namespace, rec["id"],
                                        OutputFiles(spec.job_dir.resolve(), self._masker()))
            self._followers[rec["id"]] = follower
            follower.start()

    def _unfollow(self, job_id: str) -> None:
        follower = self._followers.pop(job_id, None)
        if follower is not None:
            follower.stop()
            follower.join(timeout=2.0)

    # -- stopping ------------------------------------------------------------------------------
    def _stop_job(self, job_id: str) -> None:
        self._call("cancel_job", self.api.cancel_job, job_id=job_id)

    def reattach(self, live: set[str], jobs_root) -> list[str]:
        """Cancel this lab's live jobs on the Hub whose experiment is not live; return their ids."""
        jobs = self._list(status=list(LIVE), labels={"benchlab": "1", "lab": remote.label_value(self.lab_name)})
        keep = {remote.label_value(exp_id) for exp_id in live}
        orphans = [job.id for job in jobs if (job.labels or {}).get("experiment") not in keep]
        for job_id in orphans:
            self._stop(job_id)
        return orphans


def _exit_code(message: str) -> int | None:
    """N from the Hub's "exit code N" message."""
    words = message.replace(":", " ").split()
    for i, word in enumerate(words[:-1]):
        if word == "code" and words[i - 1].lower() == "exit" and words[i + 1].lstrip("-").isdigit():
            return int(words[i + 1])
    return None
