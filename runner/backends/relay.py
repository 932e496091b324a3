"""Runs inside a remote job: the target's output and its metric stream, as one output stream.

A remote job has no file the runner can read while it runs, only its output. So
the job's command is ``python -u -c <this file's source> COMMAND...``: the relay
points ``$LAB_METRICS`` at a file in the job's working directory, runs COMMAND
with stdout and stderr piped through it, and is the only writer of the job's
output, so lines never interleave mid-line:

- every line COMMAND prints is copied as is (values of the variables named in
  ``$LAB_MASKED_ENV`` replaced by ``***``);
- every complete line appended to ``$LAB_METRICS`` is printed as
  ``@lab-metric {json}`` (METRIC_PREFIX), within POLL_S of being written and
  all of it before the relay exits. A target may also print such lines itself.

The runner's backend splits them again: ``@lab-metric`` lines go to the job
dir's ``metrics.jsonl``, the rest to its ``log``. The relay exits with
COMMAND's status (128 + N when a signal N ended it). Standard library only.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

METRIC_PREFIX = b"@lab-metric "
METRICS_NAME = ".lab-metrics.jsonl"
POLL_S = 0.5


class Relay:
    def __init__(self, command: list[str]):
        self.path = os.path.abspath(METRICS_NAME)
        self.offset = 0
        self.lock = threading.Lock()
        self.out = sys.stdout.buffer
        names = [n for n in os.environ.get("LAB_MASKED_ENV", "").split(",") if n]
        self.secrets = sorted({os.environ[n].encode() for n in names if len(os.environ.get(n, "")) >= 8},
                              key=len, reverse=True)
        env = {**os.environ, "LAB_METRICS": self.path, "PYTHONUNBUFFERED": "1"}
        open(self.path, "ab").close()
        self.child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)

    def emit(self, line: bytes) -> None:
        for value in self.secrets:
            line = line.replace(value, b"***")
        with self.lock:
            self.out.write(line if line.endswith(b"\n") else line + b"\n")
            self.out.flush()

    def copy_output(self) -> None:
        for line in iter(self.child.stdout.readline, b""):
            self.emit(line)

    def drain_metrics(self, final: bool = False) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        end = len(data) if final else data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            if line.strip():
                self.emit(METRIC_PREFIX + line.strip())
        self.offset += end

    def run(self) -> int:
        reader = threading.Thread(target=self.copy_output, daemon=True)
        reader.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda number, _frame: self.child.send_signal(number))
        while self.child.poll() is None:
            self.drain_metrics()
            time.sleep(POLL_S)
        reader.join()
        self.drain_metrics(final=True)
        code = self.child.returncode
        return 128 - code if code < 0 else code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: relay.py COMMAND...")
    sys.exit(Relay(sys.argv[1:]).run())
