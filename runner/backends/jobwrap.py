"""The job wrapper and the on-disk protocol of a local job.

The local backend starts one wrapper per job, in its own session and process
group (``start_new_session``), so the job survives a kill -9 of the runner and
a restarted runner can find it again from files alone:

    python .../runner/backends/jobwrap.py --job-dir DIR -- COMMAND...

(``python -m runner.backends.jobwrap`` works too; the backend runs the file by
path so that a worktree's own ``runner/`` package can never shadow this one.)

Files in DIR:

- ``log``: stdout and stderr of the job, interleaved as written (the backend
  opens it and hands it to the wrapper; the child inherits it).
- ``pid``: written atomically BEFORE the child starts: the wrapper's pid (also
  the process group id), its start time in clock ticks since boot and the boot
  id (together they tell the wrapper from a later process that reuses its pid),
  the wall-clock start, experiment, slot, command and the attempt's token (a
  record without the token the runner gave this attempt is never adopted).
- ``exit.json``: written atomically when the child ends: ``returncode`` (negative
  = killed by that signal), ``exit_code`` or ``signal``, ``finished``. No
  ``exit.json`` and no live wrapper means the job was lost (machine reboot, or
  the wrapper itself was killed with SIGKILL).
- ``stop.json``: written by the backend (not here) when it decides to stop a job.
- ``metrics.jsonl``: the job's own metric stream (``$LAB_METRICS``).

Every process of the job inherits ``LAB_JOB_DIR=DIR`` in its environment; that
marker finds processes that left the group or outlived the wrapper. When the
child ends, the wrapper kills whatever else still carries its marker before it
writes ``exit.json``, so an exited job leaves nothing behind.

When ``LAB_MASKED_ENV`` names variables (the secrets the job is given), the
child's output goes through the wrapper, which replaces their values by ``***``
before anything reaches the log.

This module uses the standard library only and is Linux-first (``/proc``);
without ``/proc`` identity falls back to "pid exists and leads its group".
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PID_FILE = "pid"
LOG_FILE = "log"
EXIT_FILE = "exit.json"
STOP_FILE = "stop.json"
METRICS_FILE = "metrics.jsonl"
MARKER = "LAB_JOB_DIR"
EXPERIMENT = "LAB_EXPERIMENT"
MASKED = "LAB_MASKED_ENV"   # names of variables whose values never reach the log
MASK = b"***"
PROC = Path("/proc")


# -- files --------------------------------------------------------------------
def write_json(path: Path, data: dict) -> None:
    """Atomic: a reader sees the old file, the new one, or none; never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- processes ----------------------------------------------------------------
def proc_stat(pid: int) -> dict | None:
    """State, process group and start time (clock ticks after boot) of a pid."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()   # the name in (...) may hold spaces
    try:
        return {"state": fields[0].decode(), "pgrp": int(fields[2]), "start_ticks": int(fields[19])}
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def identity(pid: int) -> dict:
    """What tells this process apart from a later one with the same pid."""
    stat = proc_stat(pid)
    return {"pid": pid, "pgid": os.getpgid(pid),
            "start_ticks": stat["start_ticks"] if stat else None, "boot_id": boot_id()}


def foreign(pid: int, job_dir: str) -> bool:
    """True when a live process verifiably does not belong to this job: its environment is
    readable and carries no marker of `job_dir` (a process that is exiting reads as empty)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return bool(raw) and f"{MARKER}={job_dir}".encode() not in raw.split(b"\0")


def is_alive(record: dict) -> bool:
    """True if the process described by a `pid` record still runs (zombies are dead)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if not PROC.is_dir():
        return _alive_without_proc(pid, record.get("pgid"))
    stat = proc_stat(pid)
    if stat is None or stat["state"] in ("Z", "X"):
        return False
    if record.get("boot_id") and record["boot_id"] != boot_id():
        return False
    return record.get("start_ticks") in (None, stat["start_ticks"])


def _alive_without_proc(pid: int, pgid) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False


def marked_processes(job_dir: str | None = None, under: str | None = None) -> list[dict]:
    """Live processes whose environment carries the job marker: exactly `job_dir`,
    or any job dir below `under`. Each: {pid, job_dir, experiment}."""
    if not PROC.is_dir():
        return []
    found = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        env = _marker_env(int(entry.name))
        if env is None:
            continue
        where = env.get(MARKER, "")
        if (job_dir is not None and where == job_dir) or (
                under is not None and where.startswith(under.rstrip("/") + "/")):
            found.append({"pid": int(entry.name), "pgrp": env["pgrp"], "job_dir": where,
                          "experiment": env.get(EXPERIMENT)})
    return found


def _marker_env(pid: int) -> dict | None:
    """The marker, experiment and process group of a live marked process, else None."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    if MARKER.encode() + b"=" not in raw:
        return None
    stat = proc_stat(pid)
    if stat is None or stat["state"] in ("Z", "X"):
        return None
    env = {"pgrp": stat["pgrp"]}
    for item in raw.split(b"\0"):
        key, _, value = item.partition(b"=")
        if key in (MARKER.encode(), EXPERIMENT.encode()):
            env[key.decode()] = value.decode("utf-8", errors="replace")
    return env


def processes_with(variable: str, value: str) -> list[int]:
    """Live processes whose environment holds `variable=value` (children inherit it, setsid or not)."""
    if not PROC.is_dir():
        return []
    wanted = f"{variable}={value}".encode()
    found = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                raw = (PROC / entry.name / "environ").read_bytes()
            except OSError:
                continue
            if wanted in raw.split(b"\0"):
                found.append(int(entry.name))
    return found


def signal_pids(pids, sig: int) -> list[int]:
    """Send `sig` to each pid; return those that existed."""
    hit = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            hit.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return hit


# -- the wrapper ----------------------------------------------------------------
def _parse(argv: list[str]) -> tuple[Path, list[str]]:
    parser = argparse.ArgumentParser(prog="jobwrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-dir", required=True, type=Path)
    parser.add_argument("--token", default="")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    return args.job_dir.resolve(), args.token, command


def main(argv: list[str] | None = None) -> int:
    job_dir, token, command = _parse(sys.argv[1:] if argv is None else argv)
    job_dir.mkdir(parents=True, exist_ok=True)
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # a Python-level handler (not SIG_IGN) is reset to the default by exec,
        # so the child still dies of the group's signal; the wrapper stays to record it
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    os.environ[MARKER] = str(job_dir)
    record = {**identity(os.getpid()), "started": time.time(), "host": socket.gethostname(),
              "experiment": os.environ.get(EXPERIMENT), "slot": os.environ.get("LAB_SLOT"),
              "command": command, "cwd": os.getcwd(), "token": token}
    write_json(job_dir / PID_FILE, record)
    secrets = _secret_values()
    returncode, error, pump = _run(command, received, secrets)
    _kill_leftovers(job_dir)
    if pump is not None:
        pump.join(5.0)  # leftovers are dead, so the pipe has reached its end
    write_json(job_dir / EXIT_FILE, {
        "returncode": returncode, "exit_code": returncode if returncode >= 0 else None,
        "signal": -returncode if returncode < 0 else None, "finished": time.time(),
        "signals_received": received, "error": error})
    return returncode if returncode >= 0 else 128 - returncode


def _run(command: list[str], received: list[int], secrets: list[bytes]):
    """(returncode, error, the masking pump thread or None)."""
    if received:                                   # stopped before the child started
        return -received[0], None, None
    output = subprocess.PIPE if secrets else None
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output,
                                 stderr=subprocess.STDOUT if secrets else None)
    except OSError as exc:
        print(f"jobwrap: cannot start {command[0]!r}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 127, f"cannot start {command[0]!r}: {exc.strerror or exc}", None
    pump = None
    if secrets:
        pump = threading.Thread(target=_pump, args=(child.stdout, secrets), daemon=True)
        pump.start()
    return child.wait(), None, pump


def _secret_values() -> list[bytes]:
    names = [n for n in os.environ.get(MASKED, "").split(",") if n]
    values = {os.environ[n].encode() for n in names if len(os.environ.get(n, "")) >= 4}
    return sorted(values, key=len, reverse=True)   # a longer secret first, should one contain another


def _pump(stream, secrets: list[bytes]) -> None:
    """Copy the child's output to ours (the log), secrets replaced, line by line."""
    out = sys.stdout.buffer
    for line in iter(stream.readline, b""):
        for value in secrets:
            line = line.replace(value, MASK)
        out.write(line)
        out.flush()


def _kill_leftovers(job_dir: Path) -> None:
    """Background processes the job left behind die with it."""
    others = [p["pid"] for p in marked_processes(job_dir=str(job_dir)) if p["pid"] != os.getpid()]
    signal_pids(others, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
