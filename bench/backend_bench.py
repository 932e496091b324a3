"""Backend costs: `python bench/backend_bench.py [local|hf_jobs|slurm ...]` prints a table per backend.

local: start() of a trivial job, start -> terminal status seen, poll() of a running job, the
/proc marker scan and reattach(). hf_jobs (the loopback Jobs stand-in of tests/, through the
real huggingface_hub client) and slurm (a private one-node Slurm, root only): submit latency
(start(), the git push included for hf_jobs), the cost of one poll() per job in flight, and
how many jobs one backend instance keeps in flight at once, each checked at the end for a
missed result (no `val_bpb` line, no metric line) or a duplicated submission.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))   # the stand-in and the private cluster live with the tests
HF_JOBS, SLURM_JOBS = 200, 50
TARGET = ("import json, os, time\n"
          "go = os.environ.get('GO')\n"
          "for _ in range(2400):\n"
          "    if not go or os.path.exists(go):\n"
          "        break\n"
          "    time.sleep(0.25)\n"
          "open(os.environ['LAB_METRICS'], 'a').write(json.dumps({'step': 1, 'loss': 2.0}) + '\\n')\n"
          "print('val_bpb: 1.0')\n")


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{1e3 * statistics.median(values):8.2f} ms (p95 {1e3 * ordered[int(0.95 * (len(ordered) - 1))]:.2f})"


def bench_local(n: int = 30) -> None:
    from runner.backends import JobSpec, LocalBackend, jobwrap
    backend = LocalBackend({"backends": {"local": {"kind": "cpu", "slots": 2}}, "limits": {"max_running": 2}})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        starts, ends = [], []
        for i in range(n):
            spec = JobSpec(f"e{i}", "cpu0", ["true"], root, {}, root / f"j{i}", 10, 10)
            t0 = time.perf_counter()
            backend.start(spec)
            starts.append(time.perf_counter() - t0)
            while not backend.poll(spec).terminal:
                time.sleep(0.002)
            ends.append(time.perf_counter() - t0)
        spec = JobSpec("run", "cpu1", [sys.executable, "-c", "import time; time.sleep(5)"], root, {}, root / "run",
                       10, 10)
        backend.start(spec)
        polls = []
        for _ in range(200):
            t0 = time.perf_counter()
            backend.poll(spec)
            polls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jobwrap.marked_processes(under=str(root))
        scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        backend.reattach({"run"}, root)
        reattach = time.perf_counter() - t0
        backend.cancel(spec, "bench over")
    print("local backend")
    print(f"| start() of `true` (wrapper up, pid file written) | {ms(starts)} |")
    print(f"| start -> terminal status seen, command `true`    | {ms(ends)} |")
    print(f"| poll() of a running job                          | {ms(polls)} |")
    print(f"| /proc marker scan ({len(os.listdir('/proc'))} entries)                | {1e3 * scan:8.2f} ms |")
    print(f"| reattach() over {n + 1} job dirs, nothing to stop      | {1e3 * reattach:8.2f} ms |")


def _repo(root: Path) -> Path:
    """A worktree-like git repo holding the target, with a bare `origin` the jobs clone from."""
    repo = root / "wt"
    repo.mkdir()
    (repo / "score.py").write_text(TARGET)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(root / "origin.git")], check=True)
    subprocess.run(["git", "remote", "add", "origin", f"file://{root / 'origin.git'}"], cwd=repo, check=True)
    return repo


def _fleet(backend, specs, go: Path, engine_count) -> dict:
    """Submit every spec, poll them all until every one is running or queued, release them, poll
    until each has ended; check every result once."""
    submits, polls, steady, peak = [], [], [], 0
    for spec in specs:
        t0 = time.perf_counter()
        backend.start(spec)
        submits.append(time.perf_counter() - t0)
    done: dict[str, object] = {}
    released = False
    deadline = time.monotonic() + 900
    while len(done) < len(specs) and time.monotonic() < deadline:
        t0 = time.perf_counter()
        for spec in specs:
            if spec.exp_id not in done:
                try:
                    status = backend.poll(spec)
                except Exception:  # noqa: BLE001 - an unreachable engine is retried on the next round
                    continue
                if status.terminal:
                    done[spec.exp_id] = status
        live = len(specs) - len(done)
        if not released and peak == len(specs):
            steady.append((time.perf_counter() - t0) / max(1, live))   # all in flight, logs followed
        polls.append((time.perf_counter() - t0) / max(1, live))
        peak = max(peak, live)
        if not released and (len(steady) >= 3 or time.monotonic() > deadline - 800):
            go.touch()
            released = True
        time.sleep(0.2)
    missed = [s.exp_id for s in specs if s.exp_id not in done or done[s.exp_id].exit_code != 0
              or "val_bpb: 1.0" not in (s.job_dir / "log").read_text()
              or '"loss"' not in (s.job_dir / "metrics.jsonl").read_text()]
    return {"submits": submits, "polls": polls, "steady": steady or polls, "peak": peak, "missed": missed,
            "duplicated": engine_count() - len(specs)}


def _report(name: str, result: dict, n: int) -> None:
    print(f"{name} backend, {n} jobs")
    print(f"| submit latency, start()                          | {ms(result['submits'])} |")
    print(f"| poll() per job, all of them in flight            | {ms(result['steady'])} |")
    print(f"| poll() per job, every round (incl. final reads)  | {ms(result['polls'])} |")
    print(f"| jobs in flight at once (one backend instance)    | {result['peak']:8d}    |")
    print(f"| missed results / duplicated submissions          | {len(result['missed']):8d} / "
          f"{result['duplicated']} |")


def bench_hf_jobs(n: int = HF_JOBS) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from hf_jobs_standin import StandIn
        with StandIn(root=root) as hub:
            os.environ.update(HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_TELEMETRY="1", HF_TOKEN="hf_bench_token")
            from huggingface_hub import constants
            constants.ENDPOINT = hub.endpoint
            from runner.backends import HfJobsBackend, JobSpec
            repo, go = _repo(root), root / "go"
            backend = HfJobsBackend({"lab": "bench", "target": {"command": ["python", "score.py"]}, "backends": {
                "hf_jobs": {"namespace": hub.user, "slots": n, "image": "python:3.12"}}})
            specs = [JobSpec(f"e{i}", f"hf{i}", [], repo, {"GO": str(go)}, root / "jobs" / f"e{i}", 900, 900,
                             token=f"{i:032x}", labels={"experiment": f"e{i}"}) for i in range(n)]
            result = _fleet(backend, specs, go, lambda: len(hub.jobs))
    _report("hf_jobs (loopback stand-in)", result, n)


def bench_slurm(n: int = SLURM_JOBS) -> None:
    from slurm_cluster import missing_binaries, start_cluster
    if missing_binaries() or os.geteuid() != 0:
        print("slurm backend: skipped (needs root and the Slurm binaries)")
        return
    cluster = start_cluster()
    try:
        os.environ.update(cluster.env)
        from runner.backends import JobSpec, SlurmBackend
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            repo, go = _repo(root), root / "go"
            backend = SlurmBackend({"lab": "bench", "backends": {"slurm": {"slots": n}}})
            specs = [JobSpec(f"e{i}", f"slurm{i}", [sys.executable, "score.py"], repo, {"GO": str(go)},
                             root / "jobs" / f"e{i}", 900, 900, token=f"{i:032x}") for i in range(n)]
            count = lambda: len(cluster.run("sacct", "-c", "-P", "-n", "-X", "-o", "JobID").stdout.split())  # noqa
            result = _fleet(backend, specs, go, count)
    finally:
        cluster.stop()
    _report(f"slurm (one node, {cluster.cpus} CPUs)", result, n)


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["local", "hf_jobs", "slurm"]
    for name in chosen:
        {"local": bench_local, "hf_jobs": bench_hf_jobs, "slurm": bench_slurm}[name]()
        print()
