"""The hf_jobs backend against the loopback Jobs stand-in, through the real huggingface_hub client:
whole labs run by `lab run` (submit, logs, metric stream, promotion), faults, kill -9 and
reattach, smoke runs, and no secret value anywhere in the lab or its history."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from hf_jobs_standin import JobFaults, StandIn, hf_jobs, keep_client_on_loopback  # noqa: F401 (fixture)
from test_loop import TOY, finished, queue, scores_by_id, toy_lab

from runner.backends import HfJobsBackend, JobSpec
from runner.lab import Lab
from runner.repo import gitops
from runner.state.events import read_events

SECRET = "hf_SeCrEtVaLuE0123456789abcdefXYZ"   # the Hub token: must never reach a file of the lab
TARGET = TOY.replace('if MODE == "crash":', 'if MODE == "leak":\n    print("token=" + os.environ.get("HF_TOKEN", ""))\n'
                     'if os.environ.get("LAB_MAX_STEPS"):\n    print("smoke steps:", os.environ["LAB_MAX_STEPS"])\n'
                     'if MODE == "crash":')


def remote_lab(tmp_path: Path, hub: StandIn, slots: int = 2, sleep: float = 0.0, smoke: bool = False,
               retries: int = 1) -> Lab:
    """The toy lab with `default: hf_jobs`, a bare repo as its `origin`, the token passed by name."""
    lab = toy_lab(tmp_path / "lab", slots=1, sleep=sleep, retries=retries)
    (lab.root / "score.py").write_text(TARGET.replace("SLEEP = 0.0", f"SLEEP = {sleep}"))
    config = yaml.safe_load((lab.root / "lab.yaml").read_text())
    config["backends"].update(default="hf_jobs", hf_jobs={
        "namespace": hub.user, "flavor": "cpu-basic", "image": "python:3.12", "slots": slots,
        "secrets": ["HF_TOKEN"], "remote": "origin"})
    config["limits"]["max_running"] = slots + 1
    if smoke:
        config["target"]["smoke"] = {"env": {"LAB_MAX_STEPS": "2"}, "time_limit_s": 30}
    (lab.root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.run_git(lab.root, "commit", "-qam", "run on hf_jobs")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(lab.root), str(bare)], check=True)
    gitops.run_git(lab.root, "remote", "add", "origin", f"file://{bare}")
    return Lab(lab.root)


def lab_env(hub: StandIn) -> dict:
    return {"HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": SECRET,
            "HF_HUB_OFFLINE": "0"}


def lab_run(run_lab, lab: Lab, hub: StandIn, *args: str):
    out = run_lab("-C", lab.root, "run", "--until-idle", "--quiet", *args, cwd=lab.root, env=lab_env(hub),
                  timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def jobs_of(hub: StandIn, exp_id: str) -> list:
    return [job for job in hub.jobs if job.labels.get("experiment") == exp_id]


def events(lab: Lab) -> list[dict]:
    return read_events(lab).to_pylist()


def assert_no_secret(lab: Lab, value: str = SECRET) -> None:
    """Not in any file of the lab (.lab/ included; Parquet read back as rows), nor in any commit."""
    for path in lab.root.rglob("*"):
        if ".git" in path.relative_to(lab.root).parts or not path.is_file():
            continue
        text = str(pq.read_table(path).to_pylist()) if path.suffix == ".parquet" else \
            path.read_bytes().decode("utf-8", "replace")
        assert value not in text, f"the secret is in {path}"
    history = subprocess.run(["git", "log", "-p", "--all"], cwd=lab.root, capture_output=True, text=True).stdout
    assert history and value not in history


# -- whole labs through `lab run` -------------------------------------------------------------------
def test_a_lab_runs_on_hf_jobs_end_to_end(tmp_path, hf_jobs, run_lab):
    lab = remote_lab(tmp_path, hf_jobs)
    base = queue(lab, None, baseline=True)
    better = queue(lab, {"X": 2.5}, "move X towards 3")
    leak = queue(lab, {"MODE": "leak"}, "print the token")
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    lab_run(run_lab, lab, hf_jobs)

    assert [finished(lab, e)["status"] for e in (base, better, leak)] == ["finished", "finished", "finished"]
    record = finished(lab, better)
    assert record["result"]["promoted"] and record["result"]["value"] == pytest.approx(1.25)
    assert 'X = 2.5' in gitops.run_git(lab.root, "show", "main:score.py")
    (job,) = jobs_of(hf_jobs, better)
    assert record["job"]["backend"] == "hf_jobs" and record["job"]["id"] == job.id
    assert record["job"]["url"] == f"{hf_jobs.endpoint}/jobs/{hf_jobs.user}/{job.id}"
    assert record["job"]["flavor"] == "cpu-basic" and record["job"]["run_started"] >= record["job"]["started"]
    assert job.labels["benchlab"] == "1" and job.labels["lab"] == lab.config["lab"]
    assert job.labels["base"] == record["base"][:12] and job.labels["token"] == record["job"]["token"]
    assert job.secrets == {"HF_TOKEN": SECRET} and "HF_TOKEN" not in job.environment   # by name, as a secret
    assert job.spec["dockerImage"] == "python:3.12" and job.spec["flavor"] == "cpu-basic"
    # the job cloned exactly the pushed commit of exp/<id>, and its step metrics came back
    assert gitops.run_git(lab.root, "ls-remote", "origin", f"exp/{better}").split()[0] == record["result"]["commit"]
    steps = [r for r in pq.read_table(lab.experiments / better / "metrics.parquet").to_pylist() if not r["summary"]]
    assert sorted((r["step"], r["value"]) for r in steps if r["name"] == "train_loss") == [(0, 5.0), (1, 4.0), (2, 3.0)]
    assert "val_bpb: 1.250000" in (lab.experiments / better / "log.txt").read_text()
    assert all(len(jobs_of(hf_jobs, e)) == 1 for e in (base, better, leak))        # nothing submitted twice
    assert "token=***" in (lab.experiments / leak / "log.txt").read_text()
    status = run_lab("-C", lab.root, "status", cwd=lab.root)
    line = next(line for line in status.stdout.splitlines() if line.strip().startswith(better))
    assert "hf_jobs" in line and record["job"]["url"] in line and "waited" in line and "ran" in line
    report = run_lab("-C", lab.root, "report", "--out", tmp_path / "report", cwd=lab.root)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="jobs"' in page and f'<a href="{record["job"]["url"]}">' in page
    lanes = {row["slot"] for row in scores_by_id(lab).values()}
    assert lanes <= {"hf0", "hf1"} and lanes                          # the Gantt's lanes: the remote slots
    assert_no_secret(lab)


def test_an_entry_may_name_its_backend_and_flavor(tmp_path, hf_jobs, run_lab, git):
    lab = remote_lab(tmp_path, hf_jobs)
    config = yaml.safe_load((lab.root / "lab.yaml").read_text())
    config["backends"]["baseline"] = {"flavor": "a100-large"}
    (lab.root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    git(lab.root, "commit", "-qam", "baselines on a bigger flavor")
    hyp = run_lab("-C", lab.root, "hypothesis", "new", "--title", "X to 2", "--param", "X=2", cwd=lab.root)
    hyp_id = hyp.stdout.split()[0]
    local = run_lab("-C", lab.root, "queue", "add", "--hypothesis", hyp_id, "--backend", "local", cwd=lab.root)
    big = run_lab("-C", lab.root, "queue", "add", "--hypothesis", hyp_id, "--param", "X=2.2", "--flavor",
                  "h200x8", cwd=lab.root)
    assert local.returncode == 0 and big.returncode == 0, local.stderr + big.stderr
    local_id, big_id = local.stdout.split()[0], big.stdout.split()[0]
    lab_run(run_lab, lab, hf_jobs)
    assert finished(lab, local_id)["job"]["backend"] == "local" and not jobs_of(hf_jobs, local_id)
    assert finished(lab, big_id)["job"]["flavor"] == "h200x8" == jobs_of(hf_jobs, big_id)[0].spec["flavor"]
    records = {j.id: finished(lab, j.labels["experiment"]) for j in hf_jobs.jobs}
    baselines = [j for j in hf_jobs.jobs if records[j.id]["kind"] == "baseline"]
    # the lab's baseline runs on backends.baseline's flavor; the h200x8 entry's base is measured in its own
    # environment class first, where it runs (results are judged only within one class)
    assert {j.spec["flavor"] for j in baselines} == {"a100-large", "h200x8"}
    assert finished(lab, big_id)["environment"]["class"] in {records[j.id]["environment"]["class"] for j in baselines
                                                             if j.spec["flavor"] == "h200x8"}
    for job in hf_jobs.jobs:      # a re-run of a stale result keeps where it ran
        if records[job.id].get("requeued_from") == big_id:
            assert job.spec["flavor"] == "h200x8" and records[job.id]["flavor"] == "h200x8"


def test_network_faults_are_retried_and_a_vanished_job_is_run_again(tmp_path, hf_jobs, run_lab):
    lab = remote_lab(tmp_path, hf_jobs, sleep=1.5)
    base = queue(lab, None, baseline=True)
    change = queue(lab, {"X": 2.8}, "X near 3")
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    hf_jobs.fail_route("run", times=1, status=500)                    # the first submit fails
    hf_jobs.fail_route("list", times=2, status=429, retry_after=0)
    hf_jobs.fail_route("inspect", times=2, status=503)
    hf_jobs.fail_route("logs", times=1, status=500)
    hf_jobs.queue_job_faults(JobFaults(schedule_delay=1.0, drop_logs_after=1))
    vanished: list[str] = []

    def vanish_the_change_once():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not vanished:
            for job in jobs_of(hf_jobs, change):
                if job.stage == "RUNNING":
                    hf_jobs.vanish(job.id)
                    vanished.append(job.id)
            time.sleep(0.05)
    thread = threading.Thread(target=vanish_the_change_once, daemon=True)
    thread.start()
    lab_run(run_lab, lab, hf_jobs)
    thread.join()

    assert finished(lab, base)["status"] == "finished"
    assert "val_bpb: 5.000000" in (lab.experiments / base / "log.txt").read_text()   # whole, despite the cut
    record = finished(lab, change)
    assert vanished and record["status"] == "finished" and record["job"]["attempts"] == 2
    assert record["job"]["id"] != vanished[0] and len(jobs_of(hf_jobs, change)) == 2
    kinds = {e["kind"]: e["message"] for e in events(lab)}
    assert "backend-unreachable" in kinds and "run_job" in kinds["backend-unreachable"]
    assert "retry" in kinds and vanished[0] in kinds["retry"]


def test_kill_9_of_the_runner_reattaches_and_submits_nothing_twice(tmp_path, hf_jobs, run_lab):
    from conftest import _env, lab_executable
    lab = remote_lab(tmp_path, hf_jobs, sleep=3.0)
    ids = [queue(lab, None, baseline=True), queue(lab, {"X": 2.5}, "move X")]
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    runner = subprocess.Popen([lab_executable(), "-C", str(lab.root), "run", "--quiet"], env=_env(lab_env(hf_jobs)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(j.stage == "RUNNING" for j in hf_jobs.jobs) < 2:
        time.sleep(0.05)
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    assert sum(j.stage == "RUNNING" for j in hf_jobs.jobs) == 2          # the jobs outlive the runner
    lab_run(run_lab, lab, hf_jobs)
    assert [finished(lab, e)["status"] for e in ids] == ["finished", "finished"]
    assert [len(jobs_of(hf_jobs, e)) for e in ids] == [1, 1]
    assert all(finished(lab, e)["job"]["attempts"] == 1 for e in ids)
    assert finished(lab, ids[1])["result"]["promoted"]


def test_a_failing_smoke_run_submits_nothing(tmp_path, hf_jobs, run_lab):
    lab = remote_lab(tmp_path, hf_jobs, smoke=True)
    base = queue(lab, None, baseline=True)
    crash = queue(lab, {"MODE": "crash"}, "crash")
    nan = queue(lab, {"MODE": "nan"}, "nan")
    good = queue(lab, {"X": 2.5}, "good")
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    lab_run(run_lab, lab, hf_jobs)
    for exp_id, why in ((crash, "boom: the change broke the script"), (nan, "val_bpb is nan")):
        record = finished(lab, exp_id)
        assert record["status"] == "failed" and "smoke run failed, nothing submitted" in record["result"]["reason"]
        assert why in record["result"]["reason"] and not jobs_of(hf_jobs, exp_id)
        assert "smoke steps: 2" in (lab.experiments / exp_id / "log.txt").read_text()  # the smoke's own log
    assert finished(lab, good)["result"]["promoted"] and len(jobs_of(hf_jobs, good)) == 1
    assert "smoke steps" not in (lab.experiments / good / "log.txt").read_text()      # the real run's log
    assert len(jobs_of(hf_jobs, base)) == 1                                            # baselines: no smoke


# -- the backend itself -------------------------------------------------------------------------------
@pytest.fixture
def backend_spec(tmp_path, hf_jobs, git, monkeypatch):
    """A worktree-like repo with an `origin`, an HfJobsBackend and a spec factory."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    repo, bare = tmp_path / "wt", tmp_path / "origin.git"
    repo.mkdir()
    (repo / "score.py").write_text("import os, sys, time\nprint('hello', flush=True)\n"
                                   "time.sleep(float(os.environ.get('NAP', '0')))\nprint('val_bpb: 1.5')\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "x"]):
        git(repo, *args)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    git(repo, "remote", "add", "origin", f"file://{bare}")
    config = {"lab": "t", "target": {"command": ["python", "score.py"]},
              "backends": {"hf_jobs": {"namespace": hf_jobs.user, "slots": 1, "image": "python:3.12"}}}
    backend = HfJobsBackend(config)

    def spec(token: str = "ab" * 8, nap: float = 0.0, limit: float = 60.0) -> JobSpec:
        return JobSpec("e-1", "hf0", ["python", "score.py"], repo, {"NAP": str(nap)}, tmp_path / "jobs" / token,
                       limit, 60.0, token=token, labels={"experiment": "e-1"})
    return backend, spec


def until_terminal(backend, spec, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (status := backend.poll(spec)).terminal:
        assert time.monotonic() < deadline, f"still {status.reason}"
        time.sleep(0.1)
    return status


def test_start_adopts_the_attempts_job_when_its_record_was_lost(hf_jobs, backend_spec):
    backend, spec = backend_spec
    first = backend.start(spec())
    (spec().job_dir / "remote.json").unlink()           # killed between run_job and writing the record
    again = backend.start(spec())
    assert again["id"] == first["id"] and len(hf_jobs.jobs) == 1
    other = backend.start(spec(token="cd" * 8))         # another attempt is another job
    assert other["id"] != first["id"] and len(hf_jobs.jobs) == 2
    status = until_terminal(backend, spec())
    assert (status.state, status.exit_code) == ("exited", 0)
    assert spec().job_dir.joinpath("log").read_text().splitlines() == ["hello", "val_bpb: 1.5"]


def test_the_time_limit_counts_from_the_start_and_cancels_the_job(hf_jobs, backend_spec):
    backend, spec = backend_spec
    hf_jobs.queue_job_faults(JobFaults(schedule_delay=2.0))
    job_spec = spec(nap=60, limit=1.0)
    job_id = backend.start(job_spec)["id"]
    time.sleep(1.5)
    assert backend.poll(job_spec).reason.startswith("scheduling")     # queue wait is not run time
    status = until_terminal(backend, job_spec)
    assert status.state == "timed_out" and "time limit of 1s exceeded" in status.reason
    assert hf_jobs.job(job_id).stage == "CANCELED"


def test_cancel_and_an_unknown_job(hf_jobs, backend_spec):
    backend, spec = backend_spec
    job_spec = spec(nap=60)
    job_id = backend.start(job_spec)["id"]
    backend.cancel(job_spec, "cancelled by a person")
    assert hf_jobs.job(job_id).stage == "CANCELED"
    assert (until_terminal(backend, job_spec).state, backend.poll(job_spec).reason) == ("killed", "cancelled by a person")
    gone = spec(token="ef" * 8, nap=60)
    hf_jobs.vanish(backend.start(gone)["id"])
    status = until_terminal(backend, gone)
    assert status.state == "lost" and "unknown to the Hub" in status.reason


def test_a_job_that_never_starts_ends_in_error_or_cancelled(hf_jobs, backend_spec):
    backend, spec = backend_spec
    hf_jobs.queue_job_faults(JobFaults(fail_to_start="image pull failed"), JobFaults(schedule_delay=30))
    broken, waiting = spec(), spec(token="cd" * 8)
    backend.start(broken)
    status = until_terminal(backend, broken)
    assert (status.state, status.exit_code) == ("exited", 1)
    assert "the job ended in ERROR: image pull failed" in broken.job_dir.joinpath("log").read_text()
    backend.start(waiting)
    backend.cancel(waiting, "cancelled while scheduling")
    assert until_terminal(backend, waiting).state == "killed"


def test_reattach_cancels_jobs_of_experiments_no_longer_live(hf_jobs, backend_spec):
    backend, spec = backend_spec
    job_id = backend.start(spec(nap=60))["id"]
    assert backend.reattach({"e-1"}, Path("/nonexistent")) == []
    assert backend.reattach(set(), Path("/nonexistent")) == [job_id]
    assert hf_jobs.job(job_id).stage == "CANCELED"


def test_the_trackio_mirror_leaves_the_hub_online(hf_jobs, tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants

    from runner.report import trackio_mirror
    pytest.importorskip("trackio")
    with trackio_mirror.hub_offline():
        assert constants.HF_HUB_OFFLINE
    trackio_mirror._import_trackio(str(tmp_path / "trackio"))
    assert not constants.HF_HUB_OFFLINE and "HF_HUB_OFFLINE" not in os.environ
    assert HfApi(endpoint=hf_jobs.endpoint, token="t").whoami()["name"] == hf_jobs.user


def test_lab_yaml_backends_are_validated_with_clear_errors(tmp_path, make_lab, run_lab):
    lab = make_lab(tmp_path)
    config = yaml.safe_load((lab.root / "lab.yaml").read_text())
    config["backends"].update(default="hf_jobs", hf_jobs={"flavor": "h100-mega", "slots": -2, "secrets": [SECRET]},
                              slurm={"slots": 0, "workdir": "scratch"})
    (lab.root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = run_lab("-C", lab.root, "validate", cwd=lab.root)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    for field in ("backends.hf_jobs.flavor", "backends.hf_jobs.slots", "backends.hf_jobs.secrets[0]",
                  "backends.slurm.slots", "backends.slurm.workdir"):
        assert f"lab.yaml:" in text and field in text, (field, text)
    assert "'h100-mega' is not one of" in text
    assert "not such a name" in text and SECRET not in text and SECRET[:20] not in text   # never echoed

    config["backends"] = {"default": "slurm", "local": {"slots": 1}}      # valid, but slurm is not configured
    (lab.root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = run_lab("-C", lab.root, "run", "--once", cwd=lab.root)
    assert out.returncode != 0 and "backends.default" in out.stderr and "add a backends.slurm section" in out.stderr
