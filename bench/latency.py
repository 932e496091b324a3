"""Latencies that unit tests no longer assert (wall-clock bounds flake on a loaded machine):

    python bench/latency.py [--repeats 5]

  webhook submit     3 submits to a server that never answers (the caller must not wait)
  papers offline     a search with HF_HUB_OFFLINE=1 and an empty cache (no network wait)
  papers timeout     a search against a Hub that answers after 3 s, with timeout 0.3 s
  agent time limit   a hanging agent with time_limit_s 1.5, from start to its outcome
  job kill           LocalBackend.cancel of a job that ignores SIGTERM (grace 0.3 s)

Prints the median and worst of each next to the bound the old unit tests used.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def timed(fn) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def webhook_submit(tmp: Path) -> float:
    from runner.report import webhook
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sender = webhook.Sender(f"http://127.0.0.1:{sock.getsockname()[1]}/hook", tmp / "webhook.log",
                            retries=1, backoff_s=0.05, timeout_s=0.3)
    took = timed(lambda: [sender.submit({"kind": "nan", "n": i}) for i in range(3)])
    sender.flush(15)
    sock.close()
    return took


def _lab(tmp: Path):
    from runner.lab import Lab
    from runner.scaffold import init_lab
    return Lab(init_lab(tmp / f"lab-{time.monotonic_ns()}", template="blank"))


def papers_offline(tmp: Path) -> float:
    from runner.roles.papers import PapersUnavailable, search_papers
    lab = _lab(tmp)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        started = time.monotonic()
        try:
            search_papers(lab, f"nothing cached {time.monotonic_ns()}", 3)
        except PapersUnavailable:
            pass
        return time.monotonic() - started
    finally:
        del os.environ["HF_HUB_OFFLINE"]


class _Slow(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        time.sleep(3.0)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def papers_timeout(tmp: Path) -> float:
    from runner.roles.papers import PapersUnavailable, search_papers
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        started = time.monotonic()
        try:
            search_papers(_lab(tmp), f"slow {time.monotonic_ns()}", 3, timeout=0.3)
        except PapersUnavailable:
            pass
        return time.monotonic() - started
    finally:
        del os.environ["HF_ENDPOINT"]
        server.shutdown()


def agent_time_limit(tmp: Path) -> float:
    from runner.roles.agents import AgentRunner
    from test_agents import make_lab, run_to_end
    lab = make_lab(tmp / f"agents-{time.monotonic_ns()}", time_limit=1.5, FAKE_AGENT_SCENARIO="hang")
    runner = AgentRunner(lab)
    started = time.monotonic()
    runner.start("researcher", "r1", lab.root, None)
    run_to_end(runner, timeout=30)
    return time.monotonic() - started


def job_kill(tmp: Path) -> float:
    from runner.backends.local import LocalBackend
    from runner.files.metrics import read_log
    from test_backend_local import CPU2, make_spec, wait_for
    root = tmp / f"jobs-{time.monotonic_ns()}"
    root.mkdir()
    spec = make_spec(root / "lab", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                   "print('ignoring SIGTERM', flush=True)\ntime.sleep(60)\n")
    backend = LocalBackend(CPU2, kill_grace_s=0.3)
    backend.start(spec)
    wait_for(lambda: "ignoring" in read_log(spec.job_dir / "log"), timeout=30)
    return timed(lambda: backend.cancel(spec, "bench"))


CASES = {"webhook submit": (webhook_submit, 0.2), "papers offline": (papers_offline, 1.0),
         "papers timeout": (papers_timeout, 2.0), "agent time limit": (agent_time_limit, 1.5 + 2.0 + 3),
         "job kill": (job_kill, 4.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'case':<20}{'median s':>10}{'worst s':>10}{'old bound':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (case, bound) in CASES.items():
            runs = [case(Path(tmp)) for _ in range(args.repeats)]
            flag = "" if max(runs) < bound else "  over"
            print(f"{name:<20}{statistics.median(runs):>10.3f}{max(runs):>10.3f}{bound:>11.1f}{flag}")


if __name__ == "__main__":
    main()
