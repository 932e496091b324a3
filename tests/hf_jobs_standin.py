"""A loopback stand-in for the Hugging Face Jobs HTTP API, as huggingface_hub 2.4.0 calls it, for tests:
it answers the Jobs routes on 127.0.0.1 and really runs each job's command as a local subprocess.

    with StandIn() as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_test_token")
        job = api.run_job(image="python:3.12", command=["python", "-c", "print(1)"], namespace=hub.user)

Routes (route names, as used by `hits` and `fail_route`, in brackets); any route but the last is a 401
without a bearer token (any token is accepted):
    GET  /api/whoami-v2                   [whoami]  the user `hub.user`
    POST /api/jobs/{ns}                   [run]     JSON job spec -> the job, stage SCHEDULING
    GET  /api/jobs/{ns}?label=k=v&stage=S [list]    the namespace's jobs; every label and one stage must match
    GET  /api/jobs/{ns}/{id}              [inspect]
    GET  /api/jobs/{ns}/{id}/logs?tail=N  [logs]    server-sent events `data: {"timestamp", "data"}`,
                                                    live while the job runs; they end once the job is over
    POST /api/jobs/{ns}/{id}/cancel       [cancel]
    GET  /api/agent-harnesses             [harnesses] the client's user-agent lookup: an empty registry
A job of another namespace, or a vanished one, is a 404.

Execution: the docker image (or space) is IGNORED: command + arguments run on this machine in a fresh temp
directory (`job.workdir`), in their own process group, with a small base env (PATH with this interpreter's
bin first, HOME, LANG, TMPDIR, USER) plus the job's environment and secrets as sent. stdout and stderr go,
merged and line by line, into the job's log, after a "===== Job started at ... =====" line (the client
hides it). As in a container, Python buffers a pipe: run it with -u or PYTHONUNBUFFERED=1 for lines
to stream live. Stages: SCHEDULING -> RUNNING -> COMPLETED (exit 0), ERROR (message "exit code N", or
"timed out after Ns" once timeoutSeconds pass) or CANCELED (cancel kills the process group).

Faults (kept small on purpose):
    hub.fail_route(route, times=1, status=500, retry_after=None, job_id=None)
        the next `times` requests on `route` (for `job_id` only, if given) answer `status`, with a
        Retry-After header when `retry_after` is given (e.g. status=429, retry_after=0).
    JobFaults(schedule_delay=0, fail_to_start=None, drop_logs_after=None, vanish_after_inspects=None)
        per job: `hub.job_faults` applies to every new job, `hub.queue_job_faults(f1, f2, ...)` to the
        next jobs in order (then `hub.job_faults` again). See JobFaults for each field.
    hub.vanish(job_id): the job answers 404 everywhere from now on (its process is killed).

The `hf_jobs` fixture gives a running stand-in and keeps huggingface_hub on loopback (see
keep_client_on_loopback); import it into a test module to use it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from hashlib import sha1
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest

TERMINAL = ("COMPLETED", "ERROR", "CANCELED", "DELETED")
BANNER = "===== Job started at {} ====="
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL, as a container stop would give
BASE_ENV_KEYS = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME")


def utc_stamp(at: float | None = None) -> str:
    """The Hub's timestamp format: ISO 8601, milliseconds, Z."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class JobFaults:
    """How one job misbehaves.

    schedule_delay: seconds the job stays in SCHEDULING before it runs (a cancel still ends it at once).
    fail_to_start: the job ends in ERROR with this message without ever running.
    drop_logs_after: the job's first log stream is cut after this many output lines (the "Job started"
        line not counted): the connection closes before the end of the chunked body. Later streams
        are whole. If the job ends with fewer lines, the stream ends normally.
    vanish_after_inspects: after this many inspect answers the job vanishes (see StandIn.vanish).
        The client's own status checks inside fetch_job_logs(follow=True) count too.
    """

    schedule_delay: float = 0.0
    fail_to_start: str | None = None
    drop_logs_after: int | None = None
    vanish_after_inspects: int | None = None


@dataclass
class Hit:
    """One request the stand-in received, and the status it answered."""

    route: str
    method: str
    path: str
    query: dict[str, list[str]]
    token: str | None
    status: int = 0


@dataclass
class RouteFault:
    route: str
    status: int
    left: int
    retry_after: int | None
    job_id: str | None


@dataclass
class Job:
    """A submitted job: what the client sent (`spec`) and what became of it."""

    id: str
    namespace: str
    owner_type: str
    spec: dict
    faults: JobFaults
    stage: str = "SCHEDULING"
    message: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, line), banner first
    workdir: Path | None = None
    pid: int | None = None
    returncode: int | None = None
    done: bool = False  # over, and its output fully read: log streams may end
    vanished: bool = False
    inspects: int = 0
    logs_dropped: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)
    kill_timer: threading.Timer | None = field(default=None, repr=False)
    cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    as_submitted: dict = field(default_factory=dict, repr=False)

    command = property(lambda self: list(self.spec.get("command") or []))
    arguments = property(lambda self: list(self.spec.get("arguments") or []))
    environment = property(lambda self: dict(self.spec.get("environment") or {}))
    secrets = property(lambda self: dict(self.spec.get("secrets") or {}))
    labels = property(lambda self: dict(self.spec.get("labels") or {}))
    timeout = property(lambda self: self.spec.get("timeoutSeconds"))

    @property
    def output(self) -> list[str]:
        """The lines the command printed (the "Job started" line left out)."""
        with self.cond:
            return [line for _, line in self.logs[1:]]

    def set_stage(self, stage: str, message: str | None = None) -> bool:
        """Move to `stage` unless already over; True if it moved. Caller holds `cond`."""
        if self.stage in TERMINAL:
            return False
        self.stage, self.message = stage, message
        if stage in TERMINAL:
            self.finished_at = time.time()
        self.cond.notify_all()
        return True

    def to_json(self) -> dict:
        """The job as the Hub answers it (camelCase keys)."""
        spec, owner_id = self.spec, sha1(self.namespace.encode()).hexdigest()[:24]
        body = {"id": self.id, "createdAt": utc_stamp(self.created_at),
                "command": self.command, "arguments": self.arguments, "environment": self.environment,
                "secrets": {name: None for name in self.secrets},  # the Hub never echoes secret values
                "flavor": spec.get("flavor"), "labels": self.labels or None,
                "status": {"stage": self.stage, "message": self.message},
                "owner": {"id": owner_id, "name": self.namespace, "type": self.owner_type},
                "initiator": {"type": self.owner_type, "id": owner_id, "name": self.namespace},
                "durations": self._durations()}
        for key in ("dockerImage", "spaceId"):
            if spec.get(key):
                body[key] = spec[key]
        if self.started_at:
            body["startedAt"] = utc_stamp(self.started_at)
        if self.finished_at:
            body["finishedAt"] = utc_stamp(self.finished_at)
        return body

    def _durations(self) -> dict:
        end = self.finished_at or time.time()
        running = int(end - self.started_at) if self.started_at else None
        scheduling = int((self.started_at or end) - self.created_at)
        return {"schedulingSecs": scheduling, "runningSecs": running, "totalSecs": int(end - self.created_at)}


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pump(job: Job, stream) -> None:
    """Copy the process's output into the job's log, one line at a time."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        with job.cond:
            job.logs.append((utc_stamp(), line))
            job.cond.notify_all()
    stream.close()


class StandIn:
    """The server: `endpoint`, `user`, `jobs`, `hits`, `requests`; `stop()` or use it as a context manager.

    keepalive: seconds between ": keep-alive" comments on a silent log stream (the Hub's are 30s apart).
    Keep it above 5: fetch_job_logs(follow=False) stops reading a running job after 5 silent seconds.
    """

    def __init__(self, user: str = "lab-tester", root: Path | None = None, base_env: dict | None = None,
                 keepalive: float = 30.0):
        self.user, self.keepalive = user, keepalive
        self.root = Path(tempfile.mkdtemp(prefix="hf-jobs-standin-", dir=root))
        self.base_env = dict(base_env) if base_env is not None else self._default_env()
        self.job_faults = JobFaults()
        self.requests: list[Hit] = []
        self._jobs: dict[str, Job] = {}
        self._queued_faults: list[JobFaults] = []
        self._route_faults: list[RouteFault] = []
        self._runners: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        serve = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        serve.start()

    # -- the Python API ------------------------------------------------------------------
    @property
    def jobs(self) -> list[Job]:
        """Every submitted job, vanished ones included, in submission order."""
        with self._lock:
            return list(self._jobs.values())

    def job(self, job_id: str) -> Job:
        with self._lock:
            return self._jobs[job_id]

    @property
    def hits(self) -> Counter:
        """How many requests each route received (faulted answers included)."""
        with self._lock:
            return Counter(hit.route for hit in self.requests)

    def fail_route(self, route: str, times: int = 1, status: int = 500, retry_after: int | None = None,
                   job_id: str | None = None) -> None:
        with self._lock:
            self._route_faults.append(RouteFault(route, status, times, retry_after, job_id))

    def queue_job_faults(self, *faults: JobFaults) -> None:
        with self._lock:
            self._queued_faults.extend(faults)

    def vanish(self, job_id: str) -> None:
        job = self.job(job_id)
        with job.cond:
            job.vanished = True
            job.set_stage("DELETED", "vanished (stand-in fault)")
            self._kill(job)
            job.cond.notify_all()

    def stop(self) -> None:
        """Kill every job still running, stop serving, remove the job directories."""
        self._stopping = True
        for job in self.jobs:
            with job.cond:
                self._kill(job)
                job.cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for runner in list(self._runners):
            runner.join(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- jobs ----------------------------------------------------------------------------
    @staticmethod
    def _default_env() -> dict:
        env = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
        return env

    def submit(self, namespace: str, spec: dict) -> Job:
        with self._lock:
            faults = self._queued_faults.pop(0) if self._queued_faults else self.job_faults
            owner_type = "user" if namespace == self.user else "org"
            job = Job(os.urandom(12).hex(), namespace, owner_type, spec, faults)
            self._jobs[job.id] = job
            runner = threading.Thread(target=self._execute, args=(job,), daemon=True, name=f"job-{job.id}")
            self._runners.append(runner)
            job.as_submitted = job.to_json()  # what the run route answers: the job before it moves on
        runner.start()
        return job

    def _execute(self, job: Job) -> None:
        try:
            process = self._start(job)
            if process is not None:
                self._supervise(job, process)
        finally:
            with job.cond:
                job.done = True
                job.cond.notify_all()

    def _start(self, job: Job) -> subprocess.Popen | None:
        """Wait out scheduling, then spawn the command (unless canceled or failed meanwhile)."""
        with job.cond:
            job.cond.wait_for(lambda: job.stage != "SCHEDULING" or self._stopping, job.faults.schedule_delay)
            if job.stage != "SCHEDULING" or self._stopping:
                job.set_stage("CANCELED", "stand-in stopped")
                return None
            if job.faults.fail_to_start:
                job.set_stage("ERROR", job.faults.fail_to_start)
                return None
            job.workdir = Path(tempfile.mkdtemp(prefix=f"job-{job.id[:8]}-", dir=self.root))
            try:
                job.process = subprocess.Popen(
                    job.command + job.arguments, cwd=job.workdir, env=self._job_env(job),
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    start_new_session=True)
            except OSError as err:
                job.set_stage("ERROR", f"could not start the command: {err}")
                return None
            job.pid, job.started_at = job.process.pid, time.time()
            job.logs.append((utc_stamp(), BANNER.format(utc_stamp())))
            job.set_stage("RUNNING")
            return job.process

    def _job_env(self, job: Job) -> dict:
        env = dict(self.base_env)
        env.update({key: str(value) for key, value in job.environment.items()})
        env.update({key: str(value) for key, value in job.secrets.items()})
        return env

    def _supervise(self, job: Job, process: subprocess.Popen) -> None:
        reader = threading.Thread(target=_pump, args=(job, process.stdout), daemon=True)
        reader.start()
        timed_out = False
        try:
            process.wait(timeout=job.timeout or None)
        except subprocess.TimeoutExpired:
            timed_out = True
            with job.cond:
                self._kill(job)
            process.wait()
        _kill_group(process.pid, signal.SIGKILL)  # what it left behind would otherwise hold the pipe open
        reader.join()
        with job.cond:
            if job.kill_timer:
                job.kill_timer.cancel()  # the group is gone; its id must not be signalled again
            job.returncode = process.returncode
            if timed_out:
                job.set_stage("ERROR", f"timed out after {job.timeout}s")
            elif process.returncode == 0:
                job.set_stage("COMPLETED")
            else:
                job.set_stage("ERROR", f"exit code {process.returncode}")

    def _kill(self, job: Job) -> None:
        """SIGTERM the job's process group, SIGKILL it after a grace period. Caller holds `cond`."""
        process = job.process
        if process is None or process.poll() is not None:
            return
        _kill_group(process.pid, signal.SIGTERM)
        job.kill_timer = threading.Timer(KILL_GRACE, _kill_group, args=(process.pid, signal.SIGKILL))
        job.kill_timer.daemon = True
        job.kill_timer.start()

    def cancel(self, job: Job) -> None:
        with job.cond:
            if job.set_stage("CANCELED", "canceled"):
                self._kill(job)

    def inspected(self, job: Job) -> None:
        """Count an inspect answer; vanish the job once its fault says so."""
        with job.cond:
            job.inspects += 1
            limit = job.faults.vanish_after_inspects
            due = limit is not None and job.inspects >= limit
        if due:
            self.vanish(job.id)

    def visible(self, namespace: str, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job and job.namespace == namespace and not job.vanished else None

    def listed(self, namespace: str, labels: list[str], stages: list[str]) -> list[dict]:
        wanted = dict(label.split("=", 1) if "=" in label else (label, "") for label in labels)
        found = []
        for job in self.jobs:
            with job.cond:
                if job.namespace != namespace or job.vanished:
                    continue
                if any(job.labels.get(k) != v for k, v in wanted.items()):
                    continue
                if stages and job.stage not in stages:
                    continue
                found.append(job.to_json())
        return found

    # -- request bookkeeping -------------------------------------------------------------
    def record(self, hit: Hit) -> None:
        with self._lock:
            self.requests.append(hit)

    def take_fault(self, route: str, job_id: str | None) -> RouteFault | None:
        with self._lock:
            for fault in self._route_faults:
                if fault.route == route and fault.left > 0 and fault.job_id in (None, job_id):
                    fault.left -= 1
                    return fault
        return None

    @property
    def stopping(self) -> bool:
        return self._stopping


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandIn


def _parse_route(method: str, path: str) -> tuple[str, str | None, str | None]:
    """(route name, namespace, job id) for a request; route "unknown" when nothing matches."""
    parts = [unquote(part) for part in path.strip("/").split("/")]
    if method == "GET" and parts == ["api", "whoami-v2"]:
        return "whoami", None, None
    if method == "GET" and parts == ["api", "agent-harnesses"]:
        return "harnesses", None, None
    if len(parts) < 3 or parts[:2] != ["api", "jobs"]:
        return "unknown", None, None
    ns, rest = parts[2], parts[3:]
    table = {("POST", 0): "run", ("GET", 0): "list", ("GET", 1): "inspect"}
    name = table.get((method, len(rest)))
    if len(rest) == 2:
        name = {("GET", "logs"): "logs", ("POST", "cancel"): "cancel"}.get((method, rest[1]))
    return name or "unknown", ns, rest[0] if rest else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def log_message(self, *args):
        pass

    # -- plumbing ------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        hub = self.server.standin
        url = urlparse(self.path)
        route, ns, job_id = _parse_route(method, url.path)
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        self.hit = Hit(route, method, url.path, parse_qs(url.query), token)
        hub.record(self.hit)
        body = self._read_body()
        if route == "harnesses":
            return self._send(200, {"standardEnvVars": [], "harnesses": {}})
        if token is None:
            return self._send(401, {"error": "Invalid credentials in Authorization header"})
        fault = hub.take_fault(route, job_id)
        if fault is not None:
            return self._send_fault(fault)
        getattr(self, f"_on_{route}")(hub, ns, job_id, body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.hit.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_fault(self, fault: RouteFault) -> None:
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        self._send(fault.status, {"error": f"stand-in fault: HTTP {fault.status} on {fault.route}"}, headers)

    def _not_found(self) -> None:
        self._send(404, {"error": "Job not found"})

    # -- routes --------------------------------------------------------------------------
    def _on_unknown(self, hub, ns, job_id, body) -> None:
        self._send(404, {"error": f"no such route: {self.command} {self.path}"})

    def _on_whoami(self, hub, ns, job_id, body) -> None:
        self._send(200, {"type": "user", "id": sha1(hub.user.encode()).hexdigest()[:24], "name": hub.user,
                         "fullname": hub.user, "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def _on_run(self, hub, ns, job_id, body) -> None:
        spec, problem = _parse_spec(body)
        if problem:
            return self._send(400, {"error": problem})
        self._send(200, hub.submit(ns, spec).as_submitted)

    def _on_list(self, hub, ns, job_id, body) -> None:
        query = self.hit.query
        self._send(200, hub.listed(ns, query.get("label", []), query.get("stage", [])))

    def _on_inspect(self, hub, ns, job_id, body) -> None:
        job = hub.visible(ns, job_id)
        if job is None:
            return self._not_found()
        with job.cond:
            answer = job.to_json()
        self._send(200, answer)
        hub.inspected(job)

    def _on_cancel(self, hub, ns, job_id, body) -> None:
        job = hub.visible(ns, job_id)
        if job is None:
            return self._not_found()
        hub.cancel(job)
        with job.cond:
            answer = job.to_json()
        self._send(200, answer)

    def _on_logs(self, hub, ns, job_id, body) -> None:
        job = hub.visible(ns, job_id)
        if job is None:
            return self._not_found()
        tail = self.hit.query.get("tail", [None])[0]
        self.hit.status = 200
        self.send_response(200)
        for key, value in (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                           ("Transfer-Encoding", "chunked"), ("Connection", "close")):
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        try:
            if self._stream_events(hub, job, int(tail) if tail else None):
                self._chunk(b"")  # the zero-length chunk: a complete body
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading

    def _stream_events(self, hub: StandIn, job: Job, tail: int | None) -> bool:
        """Send events until the job is over; False if the stream was cut on purpose."""
        with job.cond:
            sent = max(0, len(job.logs) - tail) if tail is not None else 0
            cut_after = None if job.logs_dropped else job.faults.drop_logs_after
        lines_sent = 0
        while True:
            with job.cond:
                job.cond.wait_for(lambda: len(job.logs) > sent or job.done or job.vanished or hub.stopping,
                                  hub.keepalive)
                batch, over = job.logs[sent:], job.done or job.vanished or hub.stopping
            for index, (stamp, line) in enumerate(batch, start=sent):
                self._chunk(b"data: " + json.dumps({"timestamp": stamp, "data": line}).encode() + b"\n\n")
                lines_sent += index > 0
                if cut_after is not None and lines_sent >= cut_after:
                    return self._cut(job)
            sent += len(batch)
            if over and not batch:
                return True
            if not batch:
                self._chunk(b": keep-alive\n\n")

    def _cut(self, job: Job) -> bool:
        with job.cond:
            job.logs_dropped = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        return False

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _parse_spec(body: bytes) -> tuple[dict, str | None]:
    """The job spec from a run request, or a reason to answer 400."""
    try:
        spec = json.loads(body or b"null")
    except ValueError:
        return {}, "body is not JSON"
    if not isinstance(spec, dict):
        return {}, "body must be a JSON object"
    command = spec.get("command")
    if not command or not all(isinstance(part, str) for part in command):
        return spec, "command must be a non-empty list of strings"
    if not (spec.get("dockerImage") or spec.get("spaceId")):
        return spec, "one of dockerImage or spaceId is required"
    return spec, None


def keep_client_on_loopback(monkeypatch: pytest.MonkeyPatch, hub: StandIn) -> list[str]:
    """Keep huggingface_hub on the stand-in, in this process and in the processes it starts.

    HfApi(endpoint=...) covers the Jobs calls themselves, but the client also reads module-level
    defaults: constants.ENDPOINT (its user-agent lookup of /api/agent-harnesses, skipped here by
    disabling telemetry) and the module-level HfApi, whose endpoint was fixed at import (list_jobs()
    without a namespace asks it whoami). Offline mode would refuse even loopback. Returns the list of
    host names something tried to resolve other than loopback (they are refused).
    """
    from huggingface_hub import constants, hf_api

    for name, value in (("HF_ENDPOINT", hub.endpoint), ("HF_HUB_DISABLE_TELEMETRY", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    patches = {"ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_TELEMETRY": True}
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", hub.endpoint)
    return _refuse_other_hosts(monkeypatch)


def _refuse_other_hosts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    refused: list[str] = []
    resolve = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "127.0.0.1", "localhost", "::1"):
            refused.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: only loopback in these tests")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    return refused


@pytest.fixture
def hf_jobs(monkeypatch, tmp_path) -> StandIn:
    """A running stand-in (jobs run under tmp_path) with huggingface_hub kept on loopback; the test
    fails if anything in this process tried to reach another host."""
    with StandIn(root=tmp_path) as hub:
        refused = keep_client_on_loopback(monkeypatch, hub)
        yield hub
    assert not refused, f"tried to reach {refused} (only the stand-in may be reached)"
