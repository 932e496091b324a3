"""The slurm backend on a real one-node Slurm (tests/slurm_cluster.py): labs with `default: slurm`
and 2 slots run by `lab run` through dispatch, metric, promotion, cancel, time limit, and a kill -9
of the runner with jobs in flight (reattach, nothing run twice)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import lab_executable
from slurm_cluster import wait_until
from test_loop import finished, queue, toy_lab

from runner.backends import JobSpec, SlurmBackend
from runner.lab import Lab
from runner.repo import gitops


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    """The session's cluster, its client configuration in this process's environment, emptied after."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    yield slurm_cluster
    slurm_cluster.cancel_all()


def slurm_lab(tmp_path: Path, cluster, sleep: float = 0.0, time_limit_s: float = 30) -> Lab:
    lab = toy_lab(tmp_path / "lab", slots=1, sleep=sleep)
    config = yaml.safe_load((lab.root / "lab.yaml").read_text())
    config["backends"].update(default="slurm", slurm={"partition": cluster.partition, "slots": 2,
                                                      "sbatch": ["--cpus-per-task=1"], "workdir": "shared"})
    config["limits"]["max_running"] = 3
    config["target"].update(time_limit_s=time_limit_s, stall_timeout_s=60)
    (lab.root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.run_git(lab.root, "commit", "-qam", "run on slurm")
    return Lab(lab.root)


def lab_run(run_lab, lab: Lab, *args: str):
    out = run_lab("-C", lab.root, "run", "--until-idle", "--quiet", *args, cwd=lab.root, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def slurm_jobs(cluster, exp_id: str) -> list[str]:
    """Ids of the jobs Slurm ran for an experiment (the job completion log: one line per finished job)."""
    path = cluster.root / "log" / "jobcomp.txt"
    text = path.read_text() if path.exists() else ""
    return re.findall(rf"JobId=(\d+) .*?Name=benchlab-{re.escape(exp_id)} ", text)


def queued_jobs(cluster) -> dict[str, str]:
    out = cluster.run("squeue", "-h", "-o", "%i|%T|%j").stdout
    return {line.split("|")[2]: line.split("|")[1] for line in out.splitlines() if line.strip()}


def test_a_lab_runs_on_slurm_and_promotes(tmp_path, slurm, run_lab):
    lab = slurm_lab(tmp_path, slurm)
    base = queue(lab, None, baseline=True)
    better = queue(lab, {"X": 2.5}, "move X towards 3")
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    lab_run(run_lab, lab)
    assert finished(lab, base)["status"] == "finished"
    record = finished(lab, better)
    assert record["result"]["promoted"] and record["result"]["value"] == pytest.approx(1.25)
    assert record["job"]["backend"] == "slurm" and record["job"]["flavor"] == slurm.partition
    assert record["job"]["slot"] in ("slurm0", "slurm1") and [record["job"]["id"]] == slurm_jobs(slurm, better)
    assert len(slurm_jobs(slurm, base)) == 1
    steps = [r for r in pq.read_table(lab.experiments / better / "metrics.parquet").to_pylist() if not r["summary"]]
    assert sorted(r["step"] for r in steps if r["name"] == "train_loss") == [0, 1, 2]
    assert "val_bpb: 1.250000" in (lab.experiments / better / "log.txt").read_text()


def test_time_limit_cancel_and_a_failing_job(tmp_path, slurm, run_lab):
    lab = slurm_lab(tmp_path, slurm, time_limit_s=4)
    base = queue(lab, None, baseline=True)
    hang = queue(lab, {"MODE": "hang"}, "hang")
    crash = queue(lab, {"MODE": "crash"}, "crash")
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    lab_run(run_lab, lab)
    assert finished(lab, base)["status"] == "finished"
    record = finished(lab, hang)
    assert record["status"] == "timed_out" and "time limit of 4s exceeded" in record["result"]["reason"]
    failed = finished(lab, crash)
    assert failed["status"] == "failed" and "boom: the change broke the script" in failed["result"]["reason"]
    assert not queued_jobs(slurm)                                # the hung job was scancelled

    cancel = queue(lab, {"MODE": "hang", "X": 2.0}, "hang again")
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    runner = subprocess.Popen([lab_executable(), "-C", str(lab.root), "run", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: queued_jobs(slurm).get(f"benchlab-{cancel}") == "RUNNING", 60, "the job to run")
    path = lab.queue / f"{cancel}.yaml"
    path.write_text(re.sub(r"^status: running$", "status: cancelled", path.read_text(), flags=re.M))  # a person
    wait_until(lambda: (lab.experiments / cancel / "experiment.yaml").exists(), 60, "the cancellation recorded")
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 0
    assert finished(lab, cancel)["status"] == "cancelled"
    wait_until(lambda: re.search(rf"Name=benchlab-{cancel} JobState=CANCELLED", (slurm.root / "log/jobcomp.txt")
                                 .read_text()), 60, "Slurm to record the job cancelled")


def test_kill_9_with_jobs_in_flight_reattaches_and_runs_nothing_twice(tmp_path, slurm, run_lab):
    lab = slurm_lab(tmp_path, slurm, sleep=4.0)
    ids = [queue(lab, None, baseline=True), queue(lab, {"X": 2.5}, "move X")]
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    runner = subprocess.Popen([lab_executable(), "-C", str(lab.root), "run", "--quiet"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    wait_until(lambda: list(queued_jobs(slurm).values()).count("RUNNING") == 2, 60, "two jobs running")
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    assert list(queued_jobs(slurm).values()).count("RUNNING") == 2      # the jobs outlive the runner
    lab_run(run_lab, lab)
    assert [finished(lab, e)["status"] for e in ids] == ["finished", "finished"]
    assert [len(slurm_jobs(slurm, e)) for e in ids] == [1, 1]
    assert all(finished(lab, e)["job"]["attempts"] == 1 for e in ids)
    assert finished(lab, ids[1])["result"]["promoted"]


def test_start_adopts_the_job_by_its_comment_and_reads_final_states(tmp_path, slurm):
    backend = SlurmBackend({"lab": "t", "backends": {"slurm": {"slots": 1, "partition": slurm.partition}}})

    def spec(token: str, code: int = 0) -> JobSpec:
        return JobSpec("e-1", "slurm0", ["bash", "-c", f"echo hi; exit {code}"], tmp_path, {}, tmp_path / token,
                       60, 60, token=token)
    first = backend.start(spec("ab" * 8, code=3))
    (tmp_path / ("ab" * 8) / "remote.json").unlink()     # killed between sbatch and writing the record
    again = backend.start(spec("ab" * 8, code=3))
    assert again["id"] == first["id"] and again["backend"] == "slurm"

    def ended(s):
        status = backend.poll(s)
        return status if status.terminal else None
    status = wait_until(lambda: ended(spec("ab" * 8, 3)), 60, "the job to end")
    assert (status.state, status.exit_code) == ("exited", 3)
    assert (tmp_path / ("ab" * 8) / "log").read_text() == "hi\n"
    ok = spec("cd" * 8)
    assert backend.start(ok)["id"] != first["id"]
    assert wait_until(lambda: ended(ok), 60, "the job to end").exit_code == 0
