"""Webhook delivery against real local HTTP servers: retries, backoff, logging, never blocking."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fixtures.make_lab import write_config

from runner.lab import Lab
from runner.report import webhook
from runner.report.anomalies import record_anomalies


class FlakyHandler(BaseHTTPRequestHandler):
    """Answers 503 to the first `fail_first` requests, then 200; keeps every body."""

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.calls += 1
            failing = server.calls <= server.fail_first
            if not failing:
                server.bodies.append(body)
        self.send_response(503 if failing else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    server.calls, server.fail_first, server.bodies, server.lock = 0, 1, [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent():
    """A socket that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook/SECRET-TOKEN"
    sock.close()


def lab_with_hook(tmp_path, url, min_level="warn", retries=2) -> Lab:
    write_config(tmp_path)
    with open(tmp_path / "lab.yaml", "a") as handle:
        handle.write(f"reporting:\n  webhook: {{url: '{url}', min_level: {min_level}, retries: {retries}}}\n")
    return Lab(tmp_path)


def test_fails_first_then_delivers_and_logs_the_failure(tmp_path, flaky):
    url = f"http://127.0.0.1:{flaky.server_address[1]}/hook"
    sender = webhook.Sender(url, tmp_path / "webhook.log", retries=2, backoff_s=0.05, timeout_s=2)
    assert sender.submit({"kind": "stall", "message": "m"})
    assert sender.flush(10)
    assert flaky.calls == 2 and flaky.bodies == [{"kind": "stall", "message": "m"}]
    assert sender.delivered == 1 and sender.failed == 0
    log = (tmp_path / "webhook.log").read_text()
    assert "attempt 1/3 for stall event failed" in log and "503" in log and "gave up" not in log


def test_a_server_that_never_answers_does_not_block_the_caller(tmp_path, silent):
    patient = webhook.Sender(silent, tmp_path / "patient.log", retries=0, timeout_s=30)
    assert all(patient.submit({"kind": "nan", "n": i}) for i in range(3))
    assert patient.failed == patient.delivered == 0  # returned while the first request still waits
    sender = webhook.Sender(silent, tmp_path / "logs" / "webhook.log", retries=1, backoff_s=0.05, timeout_s=0.3)
    for i in range(3):
        sender.submit({"kind": "nan", "n": i})
    assert sender.flush(15)
    assert sender.failed == 3 and sender.delivered == 0
    log = (tmp_path / "logs" / "webhook.log").read_text()
    assert log.count("gave up on nan event after 2 attempts") == 3
    assert "SECRET-TOKEN" not in log                 # only scheme://host:port is logged


def test_full_queue_drops_and_logs_instead_of_blocking(tmp_path, silent):
    sender = webhook.Sender(silent, tmp_path / "webhook.log", retries=0, timeout_s=0.2, max_pending=2)
    accepted = [sender.submit({"kind": "k", "n": i}) for i in range(6)]
    assert accepted.count(True) in (2, 3) and accepted[-1] is False
    sender.flush(10)
    assert "dropped k event" in (tmp_path / "webhook.log").read_text()


def test_recorded_anomalies_reach_the_lab_webhook_above_min_level(tmp_path, flaky):
    flaky.fail_first = 0
    lab = lab_with_hook(tmp_path, f"http://127.0.0.1:{flaky.server_address[1]}/hook", min_level="warn")
    events = [{"level": "info", "kind": "note", "message": "below min_level", "experiment": "e-1"},
              {"level": "error", "kind": "nan", "message": "train_loss is nan", "experiment": "e-1"}]
    recorded = record_anomalies(lab, events)
    assert len(recorded) == 2
    assert webhook.sender_for(lab).flush(10)
    assert [b["kind"] for b in flaky.bodies] == ["nan"]
    body = flaky.bodies[0]
    assert body["lab"] == "fixture-lab" and body["experiment"] == "e-1" and "nan" in body["text"]


def test_no_webhook_configured_is_a_no_op(tmp_path):
    write_config(tmp_path)
    lab = Lab(tmp_path)
    assert webhook.sender_for(lab) is None
    assert webhook.deliver(lab, [{"level": "error", "kind": "nan", "message": "x"}]) == 0
