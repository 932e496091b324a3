"""The Jobs stand-in, driven through the real huggingface_hub client: what the client sees is what an
hf_jobs backend will see."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
from hf_jobs_standin import JobFaults, StandIn, hf_jobs  # noqa: F401 (hf_jobs is a fixture)
from huggingface_hub import HfApi, constants, hf_api
from huggingface_hub.errors import HfHubHTTPError, JobNotFoundError
from huggingface_hub.utils import _detect_agent, _http

NS = "lab-tester"  # the stand-in's default user
TOKEN = "hf_test_token"
TERMINAL = ("COMPLETED", "ERROR", "CANCELED", "DELETED")


@pytest.fixture
def api(hf_jobs) -> HfApi:
    return HfApi(endpoint=hf_jobs.endpoint, token=TOKEN)


@pytest.fixture
def naps(monkeypatch) -> list[float]:
    """The waits huggingface_hub's HTTP retry helper asks for, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=asked.append))
    return asked


def until(check, what: str, timeout: float = 30.0):
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)
    return value


def python_job(api: HfApi, code: str, **kwargs):
    kwargs.setdefault("namespace", NS)
    return api.run_job(image="python:3.12", command=["python", "-u", "-c", code], **kwargs)


def finished(api: HfApi, job_id: str, namespace: str = NS):
    """The job's info once the client sees it in a terminal stage."""
    def check():
        info = api.inspect_job(job_id=job_id, namespace=namespace)
        return info if info.status.stage in TERMINAL else None
    return until(check, f"job {job_id} to end")


def logs(api: HfApi, job_id: str, **kwargs) -> list[str]:
    return list(api.fetch_job_logs(job_id=job_id, namespace=NS, **kwargs))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


class Drain(threading.Thread):
    """Consumes an iterator in the background: `items` so far, then `error` if it raised."""

    def __init__(self, iterable):
        super().__init__(daemon=True)
        self.iterable, self.items, self.error = iterable, [], None
        self.start()

    def run(self):
        try:
            for item in self.iterable:
                self.items.append(item)
        except Exception as err:  # noqa: BLE001 (the test inspects it)
            self.error = err

    def finish(self, timeout: float = 60.0) -> Drain:
        self.join(timeout)
        assert not self.is_alive(), "the iteration never ended"
        return self


# -- the happy path ----------------------------------------------------------------------------
def test_a_job_runs_and_the_client_reads_its_state_and_logs(hf_jobs, api):
    code = "import sys\nprint('step 1')\nprint('warn', file=sys.stderr)\nprint('val_bpb: 1.23')"
    job = python_job(api, code, labels={"experiment": "exp-1"}, flavor="a10g-small")
    assert job.status.stage == "SCHEDULING"
    assert job.url == f"{hf_jobs.endpoint}/jobs/{NS}/{job.id}"

    done = finished(api, job.id)
    assert done.status.stage == "COMPLETED" and done.status.message is None
    assert done.labels["experiment"] == "exp-1"
    assert done.labels["name"].startswith("python-3-12-")  # the client names every job
    assert (done.owner.name, done.owner.type, done.flavor) == (NS, "user", "a10g-small")
    assert done.created_at <= done.started_at <= done.finished_at
    assert logs(api, job.id) == ["step 1", "warn", "val_bpb: 1.23"]
    assert logs(api, job.id, follow=True) == ["step 1", "warn", "val_bpb: 1.23"]
    assert logs(api, job.id, tail=2) == ["warn", "val_bpb: 1.23"]
    assert api.wait_for_job(job.id, namespace=NS, timeout=30, poll_interval=0.05).status.stage == "COMPLETED"
    sent = hf_jobs.job(job.id)
    assert sent.spec["dockerImage"] == "python:3.12" and sent.command[:2] == ["python", "-u"]
    assert {hit.token for hit in hf_jobs.requests} == {TOKEN}


def test_following_streams_lines_while_the_job_runs_and_ends_with_it(hf_jobs, api):
    code = ("import os, time\nprint('before')\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"
            "print('after')")
    job = python_job(api, code)
    drain = Drain(api.fetch_job_logs(job_id=job.id, namespace=NS, follow=True))
    until(lambda: drain.items == ["before"], "the first line")
    assert api.inspect_job(job_id=job.id, namespace=NS).status.stage == "RUNNING"
    (hf_jobs.job(job.id).workdir / "go").touch()
    assert drain.finish().items == ["before", "after"] and drain.error is None
    assert api.inspect_job(job_id=job.id, namespace=NS).status.stage == "COMPLETED"


def test_without_follow_a_running_job_gives_what_it_printed_so_far(hf_jobs, api):
    code = ("import os, time\nprint('first')\nwhile not os.path.exists('go'):\n    print('tick')\n"
            "    time.sleep(0.1)")
    job = python_job(api, code)
    until(lambda: hf_jobs.job(job.id).output, "the first line")
    # The client stops at the first line stamped a second past the server's Date header.
    lines = Drain(api.fetch_job_logs(job_id=job.id, namespace=NS)).finish().items
    assert lines[0] == "first" and set(lines[1:]) <= {"tick"}
    assert api.inspect_job(job_id=job.id, namespace=NS).status.stage == "RUNNING"
    (hf_jobs.job(job.id).workdir / "go").touch()
    assert finished(api, job.id).status.stage == "COMPLETED"


def test_a_git_clone_and_train_command_runs_on_this_machine(hf_jobs, api, tmp_path):
    repo, bare = tmp_path / "src", tmp_path / "lab.git"
    repo.mkdir()
    (repo / "train.py").write_text("print('val_bpb: 0.987')\n")
    for args in (["init", "-q", "-b", "main"], ["add", "train.py"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], ["branch", "exp/x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    script = f"git clone -q --branch exp/x file://{bare} w && cd w && python train.py"
    job = api.run_job(image="pytorch/pytorch:latest", command=["bash", "-c", script], namespace=NS)
    assert finished(api, job.id).status.stage == "COMPLETED"
    assert logs(api, job.id) == ["val_bpb: 0.987"]


def test_without_a_namespace_the_client_asks_whoami(hf_jobs, api):
    job = python_job(api, "print('hi')", namespace=None)
    assert hf_jobs.hits["whoami"] == 1 and hf_jobs.job(job.id).namespace == NS
    assert api.whoami()["name"] == NS
    until(lambda: api.inspect_job(job_id=job.id).status.stage == "COMPLETED", "the job to complete")
    assert list(api.fetch_job_logs(job_id=job.id)) == ["hi"]
    api.cancel_job(job_id=job.id)  # a finished job stays as it ended
    assert api.inspect_job(job_id=job.id).status.stage == "COMPLETED"


def test_an_org_namespace_owns_its_jobs(hf_jobs, api):
    job = python_job(api, "print(1)", namespace="some-org")
    assert (job.owner.name, job.owner.type) == ("some-org", "org")
    assert job.url.endswith(f"/jobs/some-org/{job.id}")
    with pytest.raises(JobNotFoundError):  # not under the user's namespace
        api.inspect_job(job_id=job.id, namespace=NS)
    assert finished(api, job.id, namespace="some-org").status.stage == "COMPLETED"


def test_a_failing_command_ends_in_error_with_its_exit_code(hf_jobs, api):
    job = python_job(api, "import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)")
    done = finished(api, job.id)
    assert (done.status.stage, done.status.message) == ("ERROR", "exit code 3")
    assert logs(api, job.id) == ["boom"]


def test_cancel_kills_the_whole_process_group(hf_jobs, api):
    script = "sleep 300 & echo child=$!; wait"
    job = api.run_job(image="ubuntu", command=["bash", "-c", script], namespace=NS)
    line = until(lambda: [x for x in hf_jobs.job(job.id).output if x.startswith("child=")], "the child pid")
    child, shell = int(line[0].split("=")[1]), hf_jobs.job(job.id).pid
    assert alive(child) and alive(shell)
    api.cancel_job(job_id=job.id, namespace=NS)
    assert api.inspect_job(job_id=job.id, namespace=NS).status.stage == "CANCELED"
    until(lambda: not alive(child) and not alive(shell), "the job's processes to die")
    assert logs(api, job.id) == [line[0]]


def test_list_filters_by_labels_and_stage(hf_jobs, api):
    a = python_job(api, "print(1)", labels={"lab": "l1", "exp": "a"})
    b = python_job(api, "print(2)", labels={"lab": "l1", "exp": "b"})
    python_job(api, "print(3)", labels={"lab": "l2", "exp": "a"})
    for job in (a, b):
        finished(api, job.id)

    def ids(**kwargs):
        return [job.id for job in api.list_jobs(namespace=NS, **kwargs)]

    assert ids(labels={"lab": "l1"}) == [a.id, b.id]
    assert ids(labels={"lab": "l1", "exp": "a"}) == [a.id]
    assert ids(labels={"lab": "l3"}) == []
    assert ids(labels={"lab": "l1"}, status="COMPLETED") == [a.id, b.id]
    assert ids(labels={"lab": "l1"}, status="RUNNING") == []
    assert [job.id for job in api.list_jobs(namespace="some-org")] == []
    queries = [hit.query for hit in hf_jobs.requests if hit.route == "list"]
    assert queries[1] == {"label": ["lab=l1", "exp=a"]}


def test_env_and_secrets_reach_the_process_in_a_fresh_directory(hf_jobs, api, monkeypatch):
    monkeypatch.setenv("STANDIN_OUTER", "leaked")
    code = ("import os\nenv = os.environ\nprint(env['GREETING'], env['API_KEY'], env.get('STANDIN_OUTER'))\n"
            "print(os.getcwd(), os.listdir('.'))")
    job = python_job(api, code, env={"GREETING": "hello"}, secrets={"API_KEY": "s3cret"})
    assert finished(api, job.id).status.stage == "COMPLETED"
    workdir = hf_jobs.job(job.id).workdir
    assert logs(api, job.id) == ["hello s3cret None", f"{workdir} []"]
    info = api.inspect_job(job_id=job.id, namespace=NS)
    assert info.environment == {"GREETING": "hello"}
    assert info.secrets == {"API_KEY": None}  # names only: the value never comes back
    assert hf_jobs.job(job.id).secrets == {"API_KEY": "s3cret"}


def test_timeout_seconds_kills_a_long_job(hf_jobs, api):
    job = python_job(api, "import time\nprint('started')\ntime.sleep(300)", timeout=1)
    assert hf_jobs.job(job.id).spec["timeoutSeconds"] == 1
    done = finished(api, job.id)
    assert (done.status.stage, done.status.message) == ("ERROR", "timed out after 1s")
    assert logs(api, job.id) == ["started"]
    assert not alive(hf_jobs.job(job.id).pid)


def test_stopping_the_stand_in_kills_running_jobs(hf_jobs, tmp_path):
    with StandIn(root=tmp_path) as hub:  # a second one, stopped by the test
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        job = python_job(api, "import time\nprint('up')\ntime.sleep(300)")
        until(lambda: hub.job(job.id).output == ["up"], "the job to start")
    until(lambda: not alive(hub.job(job.id).pid), "the job to die")


def test_processes_started_by_the_test_reach_the_stand_in_through_the_environment(hf_jobs):
    code = ("from huggingface_hub import HfApi\n"
            "api = HfApi(token='hf_child')\n"
            "print(api.run_job(image='python:3.12', command=['true'], namespace='lab-tester').url)")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    [job] = hf_jobs.jobs
    assert child.stdout.strip() == f"{hf_jobs.endpoint}/jobs/{NS}/{job.id}"
    assert hf_jobs.hits == {"run": 1}  # and no user-agent lookup: telemetry is off for children too


def test_requests_without_a_token_are_refused(hf_jobs):
    with pytest.raises(HfHubHTTPError) as raised:
        list(HfApi(endpoint=hf_jobs.endpoint, token=False).list_jobs(namespace=NS))
    assert raised.value.response.status_code == 401


# -- faults ------------------------------------------------------------------------------------
def test_a_500_on_run_or_inspect_raises_at_once(hf_jobs, api):
    hf_jobs.fail_route("run", times=1, status=500)
    with pytest.raises(HfHubHTTPError) as raised:
        python_job(api, "print(1)")
    assert raised.value.response.status_code == 500 and hf_jobs.jobs == []
    job = python_job(api, "print(1)")

    hf_jobs.fail_route("inspect", times=2, status=500, job_id=job.id)
    for _ in range(2):
        with pytest.raises(HfHubHTTPError) as raised:
            api.inspect_job(job_id=job.id, namespace=NS)
        assert type(raised.value) is HfHubHTTPError and raised.value.response.status_code == 500
    assert finished(api, job.id).status.stage == "COMPLETED"
    assert [hit.status for hit in hf_jobs.requests if hit.route == "run"] == [500, 200]


def test_a_500_on_logs_is_not_retried_even_when_following(hf_jobs, api):
    job = python_job(api, "print(1)")
    finished(api, job.id)
    hf_jobs.fail_route("logs", times=1, status=500)
    with pytest.raises(HfHubHTTPError) as raised:
        logs(api, job.id, follow=True)
    assert raised.value.response.status_code == 500 and hf_jobs.hits["logs"] == 1
    assert logs(api, job.id) == ["1"]


def test_a_429_is_retried_by_list_after_retry_after_but_not_by_run(hf_jobs, api, naps):
    hf_jobs.fail_route("run", times=1, status=429, retry_after=5)
    with pytest.raises(HfHubHTTPError) as raised:
        python_job(api, "print(1)")
    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "5" and hf_jobs.hits["run"] == 1
    job = python_job(api, "print(1)")  # the caller's own retry goes through

    hf_jobs.fail_route("list", times=1, status=429, retry_after=7)
    assert [found.id for found in api.list_jobs(namespace=NS)] == [job.id]
    assert [hit.status for hit in hf_jobs.requests if hit.route == "list"] == [429, 200]
    assert naps == [8]  # Retry-After, plus one second


def test_list_retries_a_500_five_times_with_backoff(hf_jobs, api, naps):
    hf_jobs.fail_route("list", times=2, status=500)
    assert list(api.list_jobs(namespace=NS)) == []
    assert [hit.status for hit in hf_jobs.requests if hit.route == "list"] == [500, 500, 200]
    assert naps == [1, 2]

    hf_jobs.fail_route("list", times=6, status=500)
    with pytest.raises(HfHubHTTPError) as raised:
        list(api.list_jobs(namespace=NS))
    assert raised.value.response.status_code == 500 and hf_jobs.hits["list"] == 3 + 6
    assert naps == [1, 2] + [1, 2, 4, 8, 8]


def test_a_stream_cut_after_the_job_ended_raises_without_follow_and_truncates_with_it(hf_jobs, api):
    hf_jobs.job_faults = JobFaults(drop_logs_after=2)
    code = "for i in range(5):\n    print('line', i)"
    first, second = python_job(api, code), python_job(api, code)
    for job in (first, second):
        finished(api, job.id)

    drain = Drain(api.fetch_job_logs(job_id=first.id, namespace=NS)).finish()
    assert drain.items == ["line 0", "line 1"]
    assert isinstance(drain.error, httpx2.RemoteProtocolError)
    # Following, the client checks the stage before retrying: the job is over, so it stops, silently.
    drain = Drain(api.fetch_job_logs(job_id=second.id, namespace=NS, follow=True)).finish()
    assert drain.items == ["line 0", "line 1"] and drain.error is None
    assert logs(api, second.id) == [f"line {i}" for i in range(5)]  # only the first stream is cut


def test_a_stream_cut_while_the_job_runs_is_resumed_by_follow(hf_jobs, api):
    hf_jobs.queue_job_faults(JobFaults(drop_logs_after=2))
    code = ("import os, time\nprint('a')\nprint('b')\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"
            "print('c')")
    job = python_job(api, code)
    drain = Drain(api.fetch_job_logs(job_id=job.id, namespace=NS, follow=True))
    until(lambda: hf_jobs.hits["logs"] == 2, "the client to reconnect")
    (hf_jobs.job(job.id).workdir / "go").touch()
    assert drain.finish().items == ["a", "b", "c"] and drain.error is None


def test_a_vanished_job_is_a_404_everywhere(hf_jobs, api):
    job = python_job(api, "print(1)")
    finished(api, job.id)
    hf_jobs.vanish(job.id)
    for call in (api.inspect_job, api.cancel_job, lambda **kw: list(api.fetch_job_logs(**kw))):
        with pytest.raises(JobNotFoundError) as raised:
            call(job_id=job.id, namespace=NS)
        assert raised.value.job_id == job.id and raised.value.response.status_code == 404
    assert list(api.list_jobs(namespace=NS)) == []


def test_a_job_vanishes_after_some_inspects_even_while_followed(hf_jobs, api):
    hf_jobs.queue_job_faults(JobFaults(vanish_after_inspects=2))
    job = python_job(api, "import time\nprint('up')\ntime.sleep(300)")
    for _ in range(2):
        assert api.inspect_job(job_id=job.id, namespace=NS).id == job.id
    with pytest.raises(JobNotFoundError):
        api.inspect_job(job_id=job.id, namespace=NS)
    until(lambda: not alive(hf_jobs.job(job.id).pid), "the vanished job's process to die")

    follower = python_job(api, "import time\nprint('up')\ntime.sleep(300)")
    drain = Drain(api.fetch_job_logs(job_id=follower.id, namespace=NS, follow=True))
    until(lambda: drain.items == ["up"], "the first line")
    hf_jobs.vanish(follower.id)
    assert isinstance(drain.finish().error, JobNotFoundError) and drain.items == ["up"]


def test_a_job_can_fail_before_running(hf_jobs, api):
    hf_jobs.queue_job_faults(JobFaults(fail_to_start="no capacity for a10g-small"))
    job, healthy = python_job(api, "print(1)"), python_job(api, "print(2)")
    done = finished(api, job.id)
    assert (done.status.stage, done.status.message) == ("ERROR", "no capacity for a10g-small")
    assert done.started_at is None and logs(api, job.id) == []
    assert hf_jobs.job(job.id).pid is None
    assert finished(api, healthy.id).status.stage == "COMPLETED"  # the queued fault was for one job only


def test_a_scheduling_delay_holds_the_job_and_cancel_ends_it_there(hf_jobs, api):
    hf_jobs.queue_job_faults(JobFaults(schedule_delay=300), JobFaults(schedule_delay=0.2))
    held, delayed = python_job(api, "print(1)"), python_job(api, "print(2)")
    assert api.inspect_job(job_id=held.id, namespace=NS).status.stage == "SCHEDULING"
    api.cancel_job(job_id=held.id, namespace=NS)
    assert finished(api, held.id).status.stage == "CANCELED"
    assert hf_jobs.job(held.id).pid is None and logs(api, held.id) == []
    assert finished(api, delayed.id).status.stage == "COMPLETED"


# -- which calls honour HfApi(endpoint=...) --------------------------------------------------
def test_list_jobs_without_namespace_asks_the_module_level_client(hf_jobs, api, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_env_token")
    with StandIn(user="someone-else") as decoy:
        monkeypatch.setattr(hf_api.api, "endpoint", decoy.endpoint)
        assert list(api.list_jobs()) == []
    assert [(hit.route, hit.token) for hit in decoy.requests] == [("whoami", "hf_env_token")]
    assert hf_jobs.hits["whoami"] == 0
    assert [hit.path for hit in hf_jobs.requests] == ["/api/jobs/someone-else"]


def test_the_user_agent_lookup_reads_the_module_level_endpoint(hf_jobs, api, monkeypatch, tmp_path):
    with StandIn() as decoy:
        monkeypatch.setattr(constants, "ENDPOINT", decoy.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "harnesses.json"))
        monkeypatch.setattr(_detect_agent, "_registry", None)
        assert api.whoami()["name"] == NS
    assert decoy.hits == {"harnesses": 1} and hf_jobs.hits == {"whoami": 1}
