"""File events that wake the loop (watchdog, debounced); the loop's periodic tick
covers any event that never arrives."""
from __future__ import annotations

import logging
import threading
import time
import warnings

from ..lab import Lab

# watchdog warns when a recursive watch sees a job dir re-created, and logs an error when an
# event arrives while the observer stops; both are harmless here
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
logging.getLogger("watchdog.observers.inotify").addFilter(
    lambda record: "called when the thread is inactive" not in record.getMessage())


class Watcher:
    def __init__(self, lab: Lab):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.wake = threading.Event()
        wake = self.wake
        jobs = str(lab.jobs)

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                path = getattr(event, "dest_path", "") or event.src_path
                if path.endswith((".tmp", ".lock")) or "/.git/" in path:
                    return
                if jobs in path and not path.endswith("exit.json"):
                    return  # logs and metric lines stream here; only a job's end matters
                wake.set()

        self.observer = Observer()
        handler = Handler()
        for directory, recursive in ((lab.hypotheses, False), (lab.queue, False), (lab.root, False),
                                     (lab.jobs, True), (lab.worktrees, False)):
            directory.mkdir(parents=True, exist_ok=True)
            self.observer.schedule(handler, str(directory), recursive=recursive)

    def __enter__(self) -> "Watcher":
        self.observer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.observer.stop()
        self.observer.join(timeout=2)

    def wait(self, timeout: float, debounce: float = 0.05) -> bool:
        fired = self.wake.wait(timeout)
        if fired:
            time.sleep(debounce)  # let a burst of writes settle
            self.wake.clear()
        return fired
