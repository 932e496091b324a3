"""Hugging Face Jobs plumbing: a bounded HTTP client for huggingface_hub, what counts as a
passing fault, and the threads that follow running jobs' logs into their job dirs.

huggingface_hub's shared client has no timeout, and run_job/inspect_job/cancel_job never
retry: `configure_client` gives the process's client timeouts and room for one log stream
per job in flight, and `transient` says which failures `remote.retrying` may retry.
A follower streams one running job's log (fetch_job_logs(follow=True)) into the job dir as
lines arrive, so stall detection, anomalies and the live view read local files; a cut
stream is followed again from the start after a pause. Once the job has ended, the backend
re-reads the whole log without follow (a followed stream may stop early without error).
"""
from __future__ import annotations

import threading

from .remote import OutputFiles, describe

CONNECT_S, READ_S = 10.0, 90.0    # the Hub sends a keep-alive on a silent log stream every 30 s
MAX_CONNECTIONS = 1024            # one log stream per job in flight, plus the polls
RETRIED_STATUSES = (408, 425, 429, 500, 502, 503, 504)
_configured = threading.Lock()
_done: list[bool] = []


def configure_client() -> None:
    """Once per process: bounded timeouts and a large pool for huggingface_hub's shared client,
    and no user-agent lookup (telemetry) on the side."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    with _configured:
        if _done:
            return
        constants.HF_HUB_DISABLE_TELEMETRY = True

        def bounded() -> httpx2.Client:   # huggingface_hub's default client, plus the bounds
            return httpx2.Client(event_hooks={"request": [_http.hf_request_event_hook]}, follow_redirects=True,
                                 timeout=httpx2.Timeout(READ_S, connect=CONNECT_S),
                                 limits=httpx2.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=64))

        _http.set_client_factory(bounded)
        _done.append(True)


def transient(exc: Exception) -> bool:
    """Timeouts, dropped connections, offline toggles and 408/429/5xx answers: worth retrying."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        JobNotFoundError,
        OfflineModeIsEnabled,
    )

    if isinstance(exc, JobNotFoundError):
        return False
    if isinstance(exc, HfHubHTTPError):
        response = getattr(exc, "response", None)
        return response is None or response.status_code in RETRIED_STATUSES
    return isinstance(exc, (httpx2.TransportError, httpx2.TimeoutException, OfflineModeIsEnabled, TimeoutError))


class Follower(threading.Thread):
    """Streams one running job's log into its job dir until the stream ends or `stop()`."""

    def __init__(self, api, namespace: str, job_id: str, files: OutputFiles):
        super().__init__(daemon=True, name=f"hf-logs-{job_id[:12]}")
        self.api, self.namespace, self.job_id, self.files = api, namespace, job_id, files
        self._halt = threading.Event()
        self.error: str | None = None

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        pause = 0.5
        while not self._halt.is_set():
            try:
                self._stream()
                return                       # the stream ended: the job is over (the backend checks)
            except Exception as exc:  # noqa: BLE001 - any failure: pause, then follow again
                self.error = describe(exc)
                self._halt.wait(pause)
                pause = min(2 * pause, 30.0)

    def _stream(self) -> None:
        files = self.files.open()            # the stream starts from the job's first line
        try:
            for line in self.api.fetch_job_logs(job_id=self.job_id, namespace=self.namespace, follow=True):
                files.write(line)
                if self._halt.is_set():
                    return
        finally:
            files.close()
