"""Optional webhook delivery of events (lab.yaml `reporting.webhook: {url, min_level, retries}`).

`deliver(lab, events)` returns at once: events go to a bounded in-memory queue drained by one
daemon thread per (lab, url), which POSTs each as JSON with retries and exponential backoff.
Failures are appended to .lab/logs/webhook.log; nothing here blocks or raises into the caller.
The payload carries a `text` field, so Slack- and Discord-style endpoints show something useful.
"""
from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from ..lab import Lab
from ..state.timeutil import iso

LEVELS = {"info": 0, "warn": 1, "error": 2}
DEFAULT_RETRIES = 3
MAX_PENDING = 500


def _origin(url: str) -> str:
    """scheme://host[:port] only: webhook paths often embed secret tokens, which logs must not keep."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def post_json(url: str, payload: dict, timeout_s: float) -> None:
    """One POST; raises on a network error or a non-2xx answer."""
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "benchlab-webhook"})
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 (url from lab.yaml)
        if not 200 <= answer.status < 300:
            raise urllib.error.HTTPError(url, answer.status, answer.reason, answer.headers, None)


class Sender:
    """One background thread that delivers queued payloads to one URL, in order."""

    def __init__(self, url: str, log_path: Path, retries: int = DEFAULT_RETRIES, backoff_s: float = 0.5,
                 timeout_s: float = 5.0, max_pending: int = MAX_PENDING):
        self.url, self.log_path = url, Path(log_path)
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.pending: queue.Queue = queue.Queue(maxsize=max_pending)
        self.delivered = self.failed = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, payload: dict) -> bool:
        """Queue a payload; never blocks. False (and a log line) when the queue is full."""
        try:
            self.pending.put_nowait(payload)
        except queue.Full:
            self._log(f"dropped {payload.get('kind')} event: {self.pending.maxsize} deliveries pending")
            return False
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lab-webhook", daemon=True)
                self._thread.start()
        return True

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued was delivered or given up on (for shutdown and tests)."""
        deadline = time.monotonic() + timeout_s
        while self.pending.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _run(self) -> None:
        while True:
            try:
                payload = self.pending.get(timeout=5.0)
            except queue.Empty:
                return  # idle: the thread ends; submit() starts a new one when needed
            try:
                self._send(payload)
            except Exception as exc:  # never let the thread die silently with work queued
                self._log(f"unexpected error: {exc!r}")
            finally:
                self.pending.task_done()

    def _send(self, payload: dict) -> None:
        attempts = 1 + max(0, self.retries)
        for attempt in range(1, attempts + 1):
            try:
                post_json(self.url, payload, self.timeout_s)
                self.delivered += 1
                return
            except Exception as exc:  # urllib raises URLError, HTTPError, timeouts, OSError
                self._log(f"attempt {attempt}/{attempts} for {payload.get('kind')} event failed: {exc}")
                if attempt < attempts:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
        self.failed += 1
        self._log(f"gave up on {payload.get('kind')} event after {attempts} attempts")

    def _log(self, message: str) -> None:
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(f"{iso()} {_origin(self.url)} {message}\n")
        except OSError:
            pass


_senders: dict[tuple[str, str], Sender] = {}
_senders_lock = threading.Lock()


def sender_for(lab: Lab) -> Sender | None:
    """The lab's Sender, or None when no webhook is configured."""
    config = (lab.config.get("reporting") or {}).get("webhook")
    if not config or not config.get("url"):
        return None
    key = (str(lab.root), config["url"])
    with _senders_lock:
        if key not in _senders:
            _senders[key] = Sender(config["url"], lab.logs / "webhook.log",
                                   retries=int(config.get("retries", DEFAULT_RETRIES)))
        return _senders[key]


def payload(lab: Lab, event: dict) -> dict:
    at = event.get("at")
    at = iso(at) if isinstance(at, datetime) else (at or iso())
    subject = event.get("experiment") or event.get("hypothesis") or ""
    return {"lab": lab.config["lab"], "at": at, "level": event["level"], "kind": event["kind"],
            "experiment": event.get("experiment"), "hypothesis": event.get("hypothesis"),
            "message": event["message"],
            "text": f"[{lab.config['lab']}] {event['level']} {event['kind']} {subject}: {event['message']}"}


def deliver(lab: Lab, events: list[dict]) -> int:
    """Queue events at or above reporting.webhook.min_level; returns how many were queued."""
    try:
        sender = sender_for(lab)
    except Exception:  # a bad lab.yaml is reported by `lab validate`, not by a crash here
        return 0
    if sender is None:
        return 0
    floor = LEVELS.get(lab.config["reporting"]["webhook"].get("min_level", "warn"), 1)
    queued = 0
    for event in events:
        if LEVELS.get(event.get("level"), 0) >= floor:
            queued += sender.submit(payload(lab, event))
    return queued
