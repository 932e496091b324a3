"""The private one-node Slurm of tests/slurm_cluster.py, driven through the real CLIs a backend would use.

Each test also pins the exact flags and output formats of Slurm 22.05 that the Slurm backend relies on.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, start_cluster, wait_until

JOB_TIMEOUT = 60
# A job script fragment: wait (bounded, 60 s) for a file the test creates, exit 1 if it never comes.
AWAIT = 'for i in $(seq 600); do [ -e {path} ] && exit 0; sleep 0.1; done; exit 1'


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster):
    """The session's cluster, emptied of this test's jobs afterwards."""
    yield slurm_cluster
    slurm_cluster.cancel_all()


def submit(cluster: SlurmCluster, workdir: Path, script: str, name: str = "lab-test", *extra: str) -> str:
    out = cluster.run("sbatch", "--parsable", f"--chdir={workdir}", f"--output={workdir}/slurm-%j.out",
                      f"--job-name={name}", f"--comment=exp={name}", *extra, "--wrap", script).stdout.strip()
    assert out.isdigit(), f"sbatch --parsable printed {out!r}"  # ';cluster' is appended only with federation
    return out


def queue_state(cluster: SlurmCluster, job: str) -> str:
    """'PENDING', 'RUNNING', ... while the job is queued; '' once it has left squeue's default view."""
    return cluster.run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip()


def wait_for_queue_state(cluster: SlurmCluster, job: str, state: str) -> None:
    wait_until(lambda: queue_state(cluster, job) == state, JOB_TIMEOUT, f"job {job} to be {state}")


def final_record(cluster: SlurmCluster, job: str) -> str:
    """'JobID|State|ExitCode' from the job completion log (jobcomp/filetxt, hence -c), once written."""
    def record():
        return cluster.run("sacct", "-c", "-j", job, "-P", "-n", "-X", "-o", "JobID,State,ExitCode").stdout.strip()
    return wait_until(record, JOB_TIMEOUT, f"job {job} in the job completion log")


def scontrol_fields(cluster: SlurmCluster, job: str) -> dict[str, str]:
    """`scontrol show job ID -o` as a dict, once the job is no longer COMPLETING (its processes gone):
    the completion log is written before that, so its state can still read COMPLETING meanwhile."""
    def fields():
        line = cluster.run("scontrol", "show", "job", job, "-o").stdout.strip()
        found = dict(token.split("=", 1) for token in line.split() if "=" in token)
        return found if found["JobState"] != "COMPLETING" else None
    return wait_until(fields, JOB_TIMEOUT, f"job {job} to finish completing")


@pytest.mark.parametrize("code, state", [(0, "COMPLETED"), (3, "FAILED")])
def test_batch_job_writes_its_output_and_ends_with_its_exit_code(slurm, tmp_path, code, state):
    job = submit(slurm, tmp_path, f'echo "job $SLURM_JOB_ID in $(pwd)"; exit {code}', name=f"lab-exit-{code}")
    assert final_record(slurm, job) == f"{job}|{state}|{code}:0"
    assert (tmp_path / f"slurm-{job}.out").read_text() == f"job {job} in {tmp_path}\n"
    wait_until(lambda: queue_state(slurm, job) == "", JOB_TIMEOUT, "the job to leave squeue's default view")
    fields = scontrol_fields(slurm, job)  # kept for MinJobAge (300 s) after the end
    assert (fields["JobState"], fields["ExitCode"], fields["Comment"]) == (state, f"{code}:0", f"exp=lab-exit-{code}")


def test_running_job_is_running_and_found_by_name_and_comment(slurm, tmp_path):
    job = submit(slurm, tmp_path, f"touch started; {AWAIT.format(path='release')}", name="lab-find-me")
    wait_for_queue_state(slurm, job, "RUNNING")
    wait_until((tmp_path / "started").exists, JOB_TIMEOUT, "the job's script to start")  # after RUNNING shows
    assert slurm.run("squeue", "-h", "-n", "lab-find-me", "-o", "%i|%j|%k|%T").stdout.splitlines() == \
        [f"{job}|lab-find-me|exp=lab-find-me|RUNNING"]
    # squeue cannot filter by comment: list id|comment and match it.
    listed = slurm.run("squeue", "-h", "-o", "%i|%k").stdout.splitlines()
    assert [line.split("|")[0] for line in listed if line.split("|", 1)[1] == "exp=lab-find-me"] == [job]
    (tmp_path / "release").touch()
    assert final_record(slurm, job) == f"{job}|COMPLETED|0:0"


def test_scancel_of_a_running_job_gives_cancelled(slurm, tmp_path):
    job = submit(slurm, tmp_path, "sleep 300", name="lab-cancel-running")
    wait_for_queue_state(slurm, job, "RUNNING")
    slurm.run("scancel", job)
    assert final_record(slurm, job).split("|")[:2] == [job, "CANCELLED"]
    assert scontrol_fields(slurm, job)["JobState"] == "CANCELLED"


def test_scancel_of_a_held_job_gives_cancelled_without_running_it(slurm, tmp_path):
    job = submit(slurm, tmp_path, "touch ran", "lab-cancel-held", "--hold")
    wait_for_queue_state(slurm, job, "PENDING")
    slurm.run("scancel", job)
    assert final_record(slurm, job).split("|")[:2] == [job, "CANCELLED"]
    assert not (tmp_path / "ran").exists()


def test_one_cpu_jobs_run_concurrently_until_the_node_is_full(slurm, tmp_path):
    """cpus 1-CPU jobs run at once (each waits for all to start); one more waits for Resources."""
    barrier = (f'touch started.$SLURM_JOB_ID; for i in $(seq 600); do '
               f'[ $(ls started.* | wc -l) -ge {slurm.cpus} ] && [ -e release ] && exit 0; sleep 0.1; done; exit 1')
    jobs = [submit(slurm, tmp_path, barrier, f"lab-fill-{i}", "--ntasks=1", "--cpus-per-task=1")
            for i in range(slurm.cpus)]
    extra = submit(slurm, tmp_path, "touch extra-ran", "lab-fill-extra", "--ntasks=1", "--cpus-per-task=1")
    for job in jobs:
        wait_for_queue_state(slurm, job, "RUNNING")
    wait_until(lambda: slurm.run("squeue", "-h", "-j", extra, "-o", "%T|%r").stdout.strip() == "PENDING|Resources",
               JOB_TIMEOUT, "the extra job to wait for Resources")
    assert not (tmp_path / "extra-ran").exists()
    (tmp_path / "release").touch()
    assert [final_record(slurm, job) for job in jobs] == [f"{job}|COMPLETED|0:0" for job in jobs]
    assert final_record(slurm, extra) == f"{extra}|COMPLETED|0:0"


def test_a_second_cluster_coexists_and_stop_removes_it(slurm, tmp_path):
    other = start_cluster()
    try:
        assert other.env != slurm.env
        job = submit(other, tmp_path, "echo other", name="lab-other-cluster")
        assert final_record(other, job) == f"{job}|COMPLETED|0:0"
        assert (tmp_path / f"slurm-{job}.out").read_text() == "other\n"
        assert slurm.run("squeue", "-h", "-t", "all", "-n", "lab-other-cluster", "-o", "%i").stdout == ""
    finally:
        other.stop()
    assert not other.root.exists()
    assert all(proc.poll() is not None for proc in other.processes.values())
    assert slurm.run("sinfo", "-h", "-N", "-o", "%t").stdout.strip() == "idle"
