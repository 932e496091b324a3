"""The local backend with real processes: tiny Python scripts as targets."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner.backends import JobSpec, JobStartError, LocalBackend, jobwrap, make_backends
from runner.errors import LabError
from runner.files.metrics import objective, parse_summary, read_log, read_stream

CPU2 = {"backends": {"local": {"kind": "cpu", "slots": 2, "threads_per_slot": 1}}, "limits": {"max_running": 2}}


def gone(pid: int) -> bool:
    """True once the process no longer runs (a zombie counts as gone)."""
    info = jobwrap.proc_stat(pid)
    return info is None or info["state"] in ("Z", "X")


@pytest.fixture
def lab(tmp_path):
    """A jobs root; at teardown no process of any job under it may survive."""
    root = tmp_path / "jobs"
    root.mkdir()
    yield root
    survivors = jobwrap.marked_processes(under=str(root.resolve()))
    jobwrap.signal_pids([p["pid"] for p in survivors], signal.SIGKILL)
    assert survivors == [], f"job processes survived the test: {survivors}"


def make_spec(root: Path, script: str, name: str = "e1", slot: str = "cpu0", time_limit: float = 10,
              stall: float = 10, env: dict | None = None, job: str | None = None) -> JobSpec:
    work = root.parent / "work"
    work.mkdir(exist_ok=True)
    (work / f"{name}.py").write_text(textwrap.dedent(script))
    return JobSpec(exp_id=name, slot=slot, command=[sys.executable, f"{name}.py"], cwd=work, env=env or {},
                   job_dir=root / (job or name), time_limit_s=time_limit, stall_timeout_s=stall)


def wait(backend: LocalBackend, spec: JobSpec, timeout: float = 8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.poll(spec)
        if status.terminal:
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {spec.exp_id} still {status.state} after {timeout}s: {status.reason}")


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# -- slots and environment -----------------------------------------------------
def test_cpu_slots_are_capped_by_max_running():
    backend = LocalBackend({"backends": {"local": {"kind": "cpu", "slots": 4}}, "limits": {"max_running": 3}})
    assert backend.slots == ["cpu0", "cpu1", "cpu2"]
    assert make_backends(CPU2)["local"].slots == ["cpu0", "cpu1"]


def test_job_environment_confines_a_cpu_slot(lab):
    spec = make_spec(lab, """
        import json, os
        keys = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS",
                "CUDA_VISIBLE_DEVICES", "LAB_METRICS", "LAB_EXPERIMENT", "LAB_SLOT", "PYTHONUNBUFFERED", "EXTRA"]
        print(json.dumps({k: os.environ.get(k) for k in keys}))
    """, slot="cpu1", env={"EXTRA": "yes"})
    backend = LocalBackend({**CPU2, "backends": {"local": {"kind": "cpu", "slots": 2, "threads_per_slot": 3}}})
    backend.start(spec)
    assert wait(backend, spec).state == "exited"
    seen = json.loads(read_log(spec.job_dir / "log"))
    assert seen == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3",
                    "TORCH_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1",
                    "LAB_METRICS": str((spec.job_dir / "metrics.jsonl").resolve()), "LAB_EXPERIMENT": "e1",
                    "LAB_SLOT": "cpu1", "EXTRA": "yes"}


@pytest.mark.slow
def test_torch_in_a_cpu_slot_uses_one_thread(lab):
    pytest.importorskip("torch")
    spec = make_spec(lab, "import torch; print('threads:', torch.get_num_threads())")
    backend = LocalBackend(CPU2)
    backend.start(spec)
    assert wait(backend, spec, timeout=30).exit_code == 0
    assert parse_summary(read_log(spec.job_dir / "log")) == {"threads": 1.0}


def test_gpu_slots_from_config_and_detection(tmp_path, monkeypatch):
    config = {"backends": {"local": {"kind": "gpu", "gpus": ["0", "1", "2"]}}, "limits": {"max_running": 2}}
    backend = LocalBackend(config)
    assert backend.slots == ["gpu0", "gpu1"]
    assert backend.slot_env("gpu1") == {"CUDA_VISIBLE_DEVICES": "1"}

    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
                    "echo 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    detected = LocalBackend({"backends": {"local": {"kind": "gpu"}}, "limits": {"max_running": 8}})
    assert detected.slots == ["gpu0", "gpu1"]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")     # the runner's own restriction wins
    assert LocalBackend({"backends": {"local": {"kind": "gpu"}}}).slot_env("gpu3") == {"CUDA_VISIBLE_DEVICES": "3"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(LabError, match="no GPU was found"):
        LocalBackend({"backends": {"local": {"kind": "gpu"}}})


def test_unknown_slot_and_missing_cwd_are_refused(lab):
    backend = LocalBackend(CPU2)
    with pytest.raises(ValueError, match="unknown slot 'cpu9'"):
        backend.start(make_spec(lab, "pass", slot="cpu9"))
    spec = make_spec(lab, "pass")
    spec.cwd = lab.parent / "no-such-worktree"
    with pytest.raises(JobStartError, match="cannot start the job wrapper"):
        backend.start(spec)


# -- outcomes: the metric cases of the Reliability list ---------------------------
def test_success_summary_and_metric_stream(lab):
    spec = make_spec(lab, """
        import json, os, sys
        with open(os.environ["LAB_METRICS"], "a") as stream:
            for step in range(3):
                stream.write(json.dumps({"step": step, "time_s": 0.1 * step, "loss": 3.0 - step}) + "\\n")
        print("val_bpb: 1.25")
        print("training_seconds: 0.5")
    """)
    backend = LocalBackend(CPU2)
    record = backend.start(spec)
    assert record["backend"] == "local" and record["slot"] == "cpu0" and record["log"].endswith("/log")
    assert record["pid"] > 0 and record["started"].endswith("Z")
    status = wait(backend, spec)
    assert (status.state, status.exit_code, status.reason) == ("exited", 0, "exit code 0")
    assert status.finished >= status.started
    assert objective(parse_summary(read_log(status.log_path)), "val_bpb") == 1.25
    assert [r["loss"] for r in read_stream(status.metrics_path)] == [3.0, 2.0, 1.0]


def test_crash_keeps_exit_code_and_traceback(lab):
    spec = make_spec(lab, """
        print("val_bpb: 0.5")
        raise RuntimeError("boom")
    """)
    backend = LocalBackend(CPU2)
    backend.start(spec)
    status = wait(backend, spec)
    assert (status.state, status.exit_code, status.reason) == ("exited", 1, "exit code 1")
    log = read_log(status.log_path)
    assert "Traceback" in log and "RuntimeError: boom" in log
    # the summary falls back to the last occurrence; the caller must require exit 0
    assert parse_summary(log) == {"val_bpb": 0.5}


def test_nan_printed_is_reported_as_nan(lab):
    spec = make_spec(lab, "print('val_bpb: nan'); print('train_loss: inf')")
    backend = LocalBackend(CPU2)
    backend.start(spec)
    assert wait(backend, spec).exit_code == 0
    summary = parse_summary(read_log(spec.job_dir / "log"))
    value = objective(summary, "val_bpb")
    assert value != value and summary["train_loss"] == float("inf")


def test_no_metric_printed(lab):
    spec = make_spec(lab, "print('done, but forgot the metric')")
    backend = LocalBackend(CPU2)
    backend.start(spec)
    assert wait(backend, spec).exit_code == 0
    assert objective(parse_summary(read_log(spec.job_dir / "log")), "val_bpb") is None


def test_fake_val_bpb_before_the_real_one_and_interleaved_stderr(lab):
    spec = make_spec(lab, """
        import sys
        print("val_bpb: 0.001")                       # fake / early
        for step in range(3):
            print(f"step {step} loss: {3 - step}")
            print(f"warning: step {step} is slow", file=sys.stderr)
        print("val_bpb: 1.0421")
        print("num_params: 1200")
    """)
    backend = LocalBackend(CPU2)
    backend.start(spec)
    assert wait(backend, spec).exit_code == 0
    log = read_log(spec.job_dir / "log")
    assert "warning: step 2 is slow\nval_bpb: 1.0421" in log      # stderr interleaved in order
    assert parse_summary(log) == {"val_bpb": 1.0421, "num_params": 1200.0}


def test_command_that_cannot_start(lab):
    spec = make_spec(lab, "pass")
    spec.command = ["no-such-program-xyz"]
    backend = LocalBackend(CPU2)
    backend.start(spec)
    status = wait(backend, spec)
    assert (status.state, status.exit_code) == ("exited", 127)
    assert "cannot start 'no-such-program-xyz'" in status.reason


def test_job_killed_by_a_signal_of_its_own_is_a_failure_not_lost(lab):
    spec = make_spec(lab, "import os, signal; print('oom', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    backend = LocalBackend(CPU2)
    backend.start(spec)
    status = wait(backend, spec)
    assert (status.state, status.exit_code, status.reason) == ("exited", -9, "killed by signal 9 (SIGKILL)")


def test_group_signalled_from_outside_is_lost_so_it_can_be_retried(lab):
    """A shutdown or a manual `kill -TERM -PGID` is not the change's fault."""
    spec = make_spec(lab, "import time; print('up', flush=True); time.sleep(60)")
    backend = LocalBackend(CPU2)
    record = backend.start(spec)
    wait_for(lambda: "up" in read_log(spec.job_dir / "log"))
    os.killpg(record["pid"], signal.SIGTERM)
    status = wait(backend, spec)
    assert (status.state, status.exit_code) == ("lost", -signal.SIGTERM)
    assert "stopped from outside the runner by SIGTERM" in status.reason


# -- limits and stopping ---------------------------------------------------------
def test_hang_is_stopped_at_the_stall_timeout(lab):
    spec = make_spec(lab, """
        import time
        print("loading", flush=True)
        time.sleep(60)
    """, stall=0.6)
    backend = LocalBackend(CPU2, kill_grace_s=1)
    record = backend.start(spec)
    status = wait(backend, spec)
    assert status.state == "stalled" and status.exit_code == -signal.SIGTERM
    assert "no output and no metric" in status.reason
    assert 0.6 <= status.finished - status.started < 6
    assert gone(record["pid"])


def test_metric_lines_keep_a_silent_job_alive(lab):
    spec = make_spec(lab, """
        import json, os, time
        for step in range(10):
            with open(os.environ["LAB_METRICS"], "a") as stream:
                stream.write(json.dumps({"step": step}) + "\\n")
            time.sleep(0.15)
    """, stall=1.0)
    backend = LocalBackend(CPU2)
    backend.start(spec)
    status = wait(backend, spec)
    assert (status.state, status.exit_code) == ("exited", 0)
    assert len(read_stream(status.metrics_path)) == 10


def test_time_limit_kills_a_busy_job(lab):
    spec = make_spec(lab, """
        import time
        while True:
            print("step", flush=True)
            time.sleep(0.05)
    """, time_limit=1.0, stall=10)
    backend = LocalBackend(CPU2, kill_grace_s=1)
    record = backend.start(spec)
    status = wait(backend, spec)
    assert status.state == "timed_out" and "time limit of 1s exceeded" in status.reason
    assert 1.0 <= status.finished - status.started < 6
    assert gone(record["pid"])


def test_kill_escalates_to_sigkill_for_a_job_ignoring_sigterm(lab):
    spec = make_spec(lab, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(60)
    """)
    backend = LocalBackend(CPU2, kill_grace_s=0.3)
    record = backend.start(spec)
    wait_for(lambda: "ignoring" in read_log(spec.job_dir / "log"))
    backend.cancel(spec, "cancelled by the planner")   # returns once the group is gone (bench/latency.py times it)
    assert gone(record["pid"])
    status = backend.poll(spec)
    assert (status.state, status.reason) == ("killed", "cancelled by the planner")
    backend.cancel(spec, "again")                       # idempotent, first reason kept
    assert backend.poll(spec).reason == "cancelled by the planner"


def test_poll_escalates_when_sigterm_is_ignored(lab):
    spec = make_spec(lab, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(60)
    """, time_limit=0.5)
    backend = LocalBackend(CPU2, kill_grace_s=0.3)
    backend.start(spec)
    wait_for(lambda: "ignoring" in read_log(spec.job_dir / "log"))
    time.sleep(0.6)
    assert backend.poll(spec).reason.startswith("stopping: time limit")
    status = wait(backend, spec)
    assert status.state == "timed_out"


def test_background_process_left_by_the_job_dies_with_it(lab):
    spec = make_spec(lab, """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        print("bg:", child.pid)
    """)
    backend = LocalBackend(CPU2)
    backend.start(spec)
    assert wait(backend, spec).exit_code == 0
    background = int(parse_summary(read_log(spec.job_dir / "log"))["bg"])
    wait_for(lambda: gone(background))


# -- recovery after a runner restart -------------------------------------------------
def test_reattach_from_a_fresh_backend_reads_the_exit_code(lab):
    spec = make_spec(lab, """
        import sys, time
        time.sleep(0.8)
        print("val_bpb: 2.5")
        sys.exit(3)
    """)
    first = LocalBackend(CPU2)
    record = first.start(spec)
    del first                                          # the runner side is gone (kill -9)
    second = LocalBackend(CPU2)
    assert second.poll(spec).state == "running"
    assert second.start(spec)["pid"] == record["pid"]
    status = wait(second, spec)
    assert (status.state, status.exit_code, status.pid) == ("exited", 3, record["pid"])
    assert parse_summary(read_log(status.log_path)) == {"val_bpb": 2.5}


def test_reattached_backend_can_kill_and_time_out(lab):
    spec = make_spec(lab, "import time; print('up', flush=True); time.sleep(60)", time_limit=0.7)
    LocalBackend(CPU2).start(spec)
    fresh = LocalBackend(CPU2, kill_grace_s=1)
    status = wait(fresh, spec)
    assert status.state == "timed_out"


def test_start_is_idempotent_per_job_dir(lab):
    spec = make_spec(lab, "import time; print('up', flush=True); time.sleep(60)")
    first = LocalBackend(CPU2, kill_grace_s=1).start(spec)
    again = LocalBackend(CPU2).start(spec)
    assert again == first
    assert len(jobwrap.marked_processes(job_dir=str(spec.job_dir.resolve()))) == 2   # wrapper + one child
    LocalBackend(CPU2, kill_grace_s=1).cancel(spec, "test over")


def test_wrapper_killed_hard_is_lost_and_its_child_swept(lab):
    spec = make_spec(lab, "import time; print('up', flush=True); time.sleep(60)")
    backend = LocalBackend(CPU2)
    record = backend.start(spec)
    wait_for(lambda: "up" in read_log(spec.job_dir / "log"))
    child = [p["pid"] for p in jobwrap.marked_processes(job_dir=str(spec.job_dir.resolve()))
             if p["pid"] != record["pid"]]
    os.kill(record["pid"], signal.SIGKILL)             # no exit.json will ever be written
    wait_for(lambda: gone(record["pid"]))
    status = LocalBackend(CPU2).poll(spec)
    assert status.state == "lost" and "without an exit record" in status.reason
    wait_for(lambda: all(gone(pid) for pid in child))


def test_reused_pid_is_not_mistaken_for_the_job(lab):
    """A pid record whose pid now belongs to an unrelated process reads as lost,
    and neither kill nor orphans touch that process."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        job_dir = lab / "old"
        job_dir.mkdir()
        other = jobwrap.identity(bystander.pid)
        jobwrap.write_json(job_dir / "pid", {**other, "start_ticks": other["start_ticks"] + 1,
                                             "started": time.time() - 5, "experiment": "old"})
        spec = JobSpec("old", "cpu0", ["true"], lab, {}, job_dir, 1, 1)
        backend = LocalBackend(CPU2, kill_grace_s=0.2)
        assert backend.poll(spec).state == "lost"
        backend.cancel(spec, "must not touch the reused pid")
        assert backend.reattach(set(), lab) == []
        assert bystander.poll() is None
        jobwrap.write_json(job_dir / "pid", {**other, "started": time.time(), "experiment": "old"})
        assert backend.poll(spec).state == "lost"   # even with its true start time: it carries no job marker
        backend.cancel(spec, "must not touch a process outside the job")
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_orphans_kills_jobs_whose_experiment_is_not_live(lab):
    script = "import time; print('up', flush=True); time.sleep(60)"
    dead, live = make_spec(lab, script, name="dead"), make_spec(lab, script, name="live", slot="cpu1")
    starter = LocalBackend(CPU2)
    dead_job, live_job = starter.start(dead), starter.start(live)
    wait_for(lambda: "up" in read_log(dead.job_dir / "log"))
    restarted = LocalBackend(CPU2, kill_grace_s=1)
    killed = restarted.reattach({"live"}, lab)
    assert dead_job["pid"] in killed and live_job["pid"] not in killed
    assert gone(dead_job["pid"]) and not gone(live_job["pid"])
    assert restarted.poll(dead).state == "killed" and "orphan" in restarted.poll(dead).reason
    assert restarted.poll(live).state == "running"
    assert restarted.reattach({"live"}, lab) == []
    restarted.cancel(live, "test over")
    assert gone(live_job["pid"])
