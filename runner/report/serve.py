"""`lab report --watch` and `lab serve`: regenerate as results land, serve on 127.0.0.1.

watch() polls the modification times of the state the report reads (mtime polling works the
same on every filesystem, network mounts included) and rebuilds once they have been stable for
`debounce` seconds. The served page reloads itself when index.html changes (a HEAD poll).
"""
from __future__ import annotations

import threading
import traceback
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from ..lab import Lab


def signature(lab: Lab) -> tuple:
    """Changes whenever scores, events, the queue or lab.yaml change (a table's files are
    written by rename, so its directory's time moves with every new file)."""
    parts = []
    for path in (lab.experiments / "scores", lab.experiments / "events", lab.queue, lab.config_path):
        try:
            stat = path.stat()
            parts.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            parts.append(None)
    return tuple(parts)


def watch(lab: Lab, build: Callable[[], object], *, interval: float = 1.0, debounce: float = 0.5,
          stop: threading.Event | None = None, max_builds: int | None = None,
          on_error: Callable[[str], None] | None = None) -> int:
    """Call build() now and after every settled change, until stop is set; returns builds done."""
    stop = stop or threading.Event()
    builds, built_for = 0, None
    while not stop.is_set() and (max_builds is None or builds < max_builds):
        current = signature(lab)
        if current != built_for:
            if built_for is not None:
                if stop.wait(debounce):
                    break
                if signature(lab) != current:
                    continue  # still changing: wait for it to settle
            try:
                build()
            except Exception:  # a bad state file must not end the watch; say why and go on
                (on_error or (lambda text: None))(traceback.format_exc(limit=3))
            builds += 1
            built_for = current
            continue
        stop.wait(interval)
    return builds


class ReportHandler(SimpleHTTPRequestHandler):
    """Serves the report folder; /experiments/... maps to the lab's experiments/ (the report's
    relative links from .lab/report/ resolve there), with no caching."""

    def __init__(self, *args, experiments: str, **kwargs):
        self.experiments = experiments
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        route = urlsplit(path).path
        if route.startswith("/experiments/"):
            saved, self.directory = self.directory, self.experiments
            try:
                return super().translate_path(path[len("/experiments"):])
            finally:
                self.directory = saved
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the stdlib's name)
        pass


def make_server(lab: Lab, out_dir: Path, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server bound to localhost (port 0: any free port); call serve_forever() or use serve()."""
    handler = partial(ReportHandler, directory=str(Path(out_dir).resolve()),
                      experiments=str(lab.experiments.resolve()))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/index.html"
