"""Run an agent command on one case's lab: the argv template of a lab role, in the
bubblewrap sandbox (only the case's lab writable), in its own process group, killed at
its time limit; its output kept, with secrets masked.

    argv = command(template, ws, sandboxed)      # before the guard's snapshot: bwrap pins files
    run_agent(argv, ws, role, role_env, limit_s, sandboxed) -> Launch

Inside the sandbox the user's skill directories in the home (~/.claude/skills ...) are
hidden under empty tmpfs mounts: a globally installed skill would otherwise be in the
baseline run too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..backends import jobwrap
from ..roles import sandbox
from ..roles.agents import AGENT_MARKER, KILL_GRACE_S, PLACEHOLDERS, copy_masked, fill
from ..roles.skills import CLIENT_NAMES, target_dirs
from .workspace import Workspace, base_env, is_plain


@dataclass(frozen=True)
class Launch:
    state: str               # finished | failed | timed_out
    exit_code: int | None
    duration_s: float
    output: str              # stdout and stderr together, secrets masked
    log: Path
    error: str = ""


def argv_of(template: list[str], ws: Workspace) -> list[str]:
    """The roles' placeholders ({prompt_file} {worktree} {entry} {lab} {role} {task}), and {base}."""
    values = {**{name: "" for name in PLACEHOLDERS}, **ws.values, "prompt_file": str(ws.prompt)}
    return [fill(arg, values) for arg in template]


def home_skill_dirs() -> list[Path]:
    """Where agents read a user's skills in the home directory (those that exist)."""
    return [d for d in target_dirs(list(CLIENT_NAMES), None, True) if d.is_dir()]


def agent_env(ws: Workspace, role: str | None, extra: dict | None) -> dict[str, str]:
    env = {**base_env(ws), **{k: str(v) for k, v in (extra or {}).items()}}
    env.update(LAB_ROLE=role or "", LAB_TASK=ws.values["task"], LAB_ENTRY=ws.values["entry"],
               LAB_WORKTREE=ws.values["worktree"], LAB_PROMPT_FILE=str(ws.prompt), LAB_EVAL="1")
    env[AGENT_MARKER] = f"eval/{ws.tmp.name}@{os.getpid()}"
    return env


def command(template: list[str], ws: Workspace, sandboxed: bool) -> list[str]:
    """The argv to run: the template filled, wrapped in bwrap with only the case's lab writable."""
    argv = argv_of(template, ws)
    if not sandboxed:
        return argv
    binds = sandbox.Binds(readonly=(ws.tmp,), writable=(ws.root,), masked=tuple(home_skill_dirs()))
    return sandbox.wrap(argv, binds, ws.cwd, network=True)


def run_agent(argv: list[str], ws: Workspace, role: str | None, extra_env: dict | None,
              limit_s: float, sandboxed: bool) -> Launch:
    env = agent_env(ws, role, extra_env)
    log = ws.tmp / "agent.log"
    started = time.monotonic()
    try:
        process = subprocess.Popen(argv, cwd=ws.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        log.write_text(f"cannot start {argv[0]!r}: {exc.strerror or exc}\n")
        return Launch("failed", None, 0.0, log.read_text(), log, f"cannot start {argv[0]!r}: {exc.strerror or exc}")
    reader = threading.Thread(target=copy_masked, args=(process.stdout, log), daemon=True)
    reader.start()
    timed_out = False
    try:
        process.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop(process, sandboxed, signal.SIGTERM)
        try:
            process.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    finally:       # also on Ctrl-C: nothing the agent started outlives its run
        _stop(process, sandboxed, signal.SIGKILL)
        jobwrap.signal_pids(jobwrap.processes_with(AGENT_MARKER, env[AGENT_MARKER]), signal.SIGKILL)
    process.wait()
    reader.join(timeout=5)
    duration = time.monotonic() - started
    output = log.read_text(encoding="utf-8", errors="replace") if is_plain(log) else ""
    if timed_out:
        return Launch("timed_out", None, duration, output, log, f"killed after its time limit of {limit_s:g}s")
    code = process.returncode
    return Launch("finished" if code == 0 else "failed", code, duration, output, log,
                  "" if code == 0 else f"exited with code {code}")


def _stop(process: subprocess.Popen, sandboxed: bool, sig: int) -> None:
    if sandboxed:
        sandbox.stop(process.pid, sig)
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
