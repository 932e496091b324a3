"""Coding agents as lab roles: start an agent command, enforce its time limit,
and verify that it wrote only what its role owns.

A role of kind `agent` in lab.yaml names an argv template:

    roles:
      worker: {kind: agent, command: [claude, -p, "@{prompt_file}"], time_limit_s: 1800,
               concurrency: 2, env: {CLAUDE_MODEL: sonnet}}

Placeholders: {prompt_file} {worktree} {entry} {lab} {role} {task}. The agent
runs in its own process group, in its worktree (workers) or the lab root (other
roles), with LAB_ROLE, LAB_ROOT, LAB_ENTRY, LAB_WORKTREE, LAB_TASK and
LAB_PROMPT_FILE set; stdout and stderr go to .lab/logs/agents/<role>-<task>.log.

Ownership is verified, never assumed. Before an agent starts, main's checkout
is snapshotted (repo/snapshot.py); when it ends, every path that changed since,
in the working tree or in commits the runner did not make itself, is checked
against the role's rights (roles/ownership.py, from the table in
state/machine.py). A refused change is restored, the agent's version kept under
.lab/refused/<role>-<task>/<path>, and a `refused` event names the role, the
file and the rule. A new hypothesis the gates find to be a duplicate is kept
but marked `duplicate` with the rule and the original it repeats.

Concurrency. Changes in main's checkout carry no trustworthy author, so at most
one agent that writes main (researcher, planner, reporter) runs at a time;
workers run in parallel. A change seen when an agent ends is attributed to it
unless it is a running worker's own queue entry, or the ending agent is a worker
and the running main-writer may make the change (it is checked when that one
ends). Call `poll()` when the runner's own writes in main are committed, and do
not adopt or commit agents' files while `idle()` is False: that is the runner's
part of the contract.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import jobwrap
from ..errors import LabError
from ..files.locks import FileLock
from ..files.yamlio import atomic_write, load_yaml, write_yaml
from ..repo.gitops import changed_by_others
from ..repo.snapshot import Snapshot, blobs_at, hash_files, restore, snapshot
from ..secrets import MASK, mask
from ..secrets import values as secret_values
from ..state import machine
from ..state.events import record_event
from ..state.timeutil import iso, parse_iso
from . import sandbox, usage
from .ownership import RULE_TEXT, Mark, Ownership
from .prompts import build_prompt

PLACEHOLDERS = ("prompt_file", "worktree", "entry", "lab", "role", "task")
AGENT_MARKER = "LAB_AGENT"   # inherited by everything an agent starts, so that nothing outlives it
KILL_GRACE_S = 2.0


# -- tasks and outcomes ------------------------------------------------------------------
@dataclass
class AgentTask:
    role: str
    task_id: str
    cwd: Path
    entry: Path | None
    log: Path
    prompt: Path
    deadline: float
    process: subprocess.Popen | None = None
    started: float = field(default_factory=time.monotonic)
    killed_at: float | None = None
    error: str | None = None
    sandboxed: bool = False
    refs_before: dict[str, str] = field(default_factory=dict)   # exp/* refs when a worker started
    started_at: float = field(default_factory=time.time)
    log_offset: int = 0            # where this run's output begins in its (appended) log
    copier: threading.Thread | None = None


@dataclass(frozen=True)
class AgentOutcome:
    role: str
    task_id: str
    state: str                     # finished | failed | timed_out | stopped
    exit_code: int | None
    accepted_paths: list[str]      # agent's writes in main that the runner should commit
    refused: list[tuple[str, str]]  # (path, rule)
    restored: list[str] = field(default_factory=list)  # restored over an agent's commit: commit these too
    log: str = ""
    reason: str = ""

    @property
    def to_commit(self) -> list[str]:
        return list(dict.fromkeys(self.accepted_paths + self.restored))


class AgentRunner:
    """Starts agent commands for roles, enforces limits, verifies what they wrote."""

    def __init__(self, lab):
        self.lab = lab
        self.root = Path(lab.root)
        self.tasks: dict[tuple[str, str], AgentTask] = {}
        self._baseline: Snapshot | None = None

    # -- limits -----------------------------------------------------------------------
    def config(self, role: str) -> dict:
        cfg = self.lab.config["roles"].get(role) or {}
        if cfg.get("kind") != "agent":
            raise LabError(f"role {role!r} is not an agent role", "lab.yaml", f"roles.{role}.kind")
        return cfg

    def running(self, role: str | None = None) -> int:
        return sum(1 for r, _ in self.tasks if role is None or r == role)

    def is_running(self, role: str, task_id: str) -> bool:
        """Whether this agent still runs (e.g. do not launch an entry whose worker has not ended)."""
        return (role, task_id) in self.tasks

    def idle(self) -> bool:
        """True when no agent runs: only then may the runner adopt files it did not write."""
        return not self.tasks

    def can_start(self, role: str) -> bool:
        if self.running(role) >= int(self.config(role).get("concurrency", 1)):
            return False
        if role in machine.MAIN_WRITERS and any(r in machine.MAIN_WRITERS for r, _ in self.tasks):
            return False  # main-checkout writers are serialised: attribution must be unambiguous
        return True

    # -- starting ---------------------------------------------------------------------------
    def start(self, role: str, task_id: str, cwd: Path, entry: Path | None, extra: str = "") -> AgentTask:
        cfg = self.config(role)
        if (role, task_id) in self.tasks:
            raise LabError(f"agent {role} {task_id} is already running")
        if not self.can_start(role):
            raise LabError(f"cannot start {role} {task_id} now: concurrency limit or another main-checkout "
                           "agent is running (check can_start first)", "lab.yaml", f"roles.{role}")
        if not self.tasks:
            self._set_baseline(snapshot(self.root))
        home = Path(self.lab.runtime) / "agents" / role / task_id
        prompt = home / "prompt.md"
        atomic_write(prompt, build_prompt(self.lab, role, entry, extra))
        log = Path(self.lab.logs) / "agents" / f"{role}-{task_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        limit = float(cfg.get("time_limit_s", 1800))
        task = AgentTask(role, task_id, Path(cwd), Path(entry) if entry else None, log, prompt,
                         time.monotonic() + limit, log_offset=log.stat().st_size if log.exists() else 0)
        values = {"prompt_file": str(prompt), "worktree": str(cwd), "entry": str(entry or ""),
                  "lab": str(self.root), "role": role, "task": task_id}
        argv = sandbox.command(self.lab, role, task_id, [fill(arg, values) for arg in cfg["command"]],
                               Path(cwd), Path(entry) if entry else None, network=cfg.get("network", True))
        task.sandboxed = argv[0] == "bwrap"
        if role == "worker":
            task.refs_before = sandbox.exp_refs(self.lab)
        self.tasks[(role, task_id)] = task
        try:
            with open(log, "ab") as out:
                out.write(mask(f"# {iso()} {role} {task_id}: {' '.join(argv)}\n").encode())
            task.process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, env=self._env(role, task, cfg),
                                            start_new_session=True)
            task.copier = threading.Thread(target=copy_masked, args=(task.process.stdout, log), daemon=True)
            task.copier.start()
        except OSError as exc:
            task.error = f"cannot start {argv[0]!r}: {exc.strerror or exc} (roles.{role}.command)"
        pid = task.process.pid if task.process else None
        atomic_write(home / "run.json", json.dumps({
            "role": role, "task": task_id, "cwd": str(cwd), "entry": str(entry) if entry else None, "pid": pid,
            "pid_start": _start_time(pid), "marker": _marker(task), "argv": argv, "started": iso(),
            "log_offset": task.log_offset}))
        return task

    def _signal(self, task: AgentTask, sig: int) -> None:
        """Signal the agent's process group and whatever it started: in a sandbox, its pid
        namespace dies with it; unconfined, processes that left the group (setsid) are found
        by the marker every agent process inherits."""
        if task.process is None:
            return
        if task.sandboxed:
            sandbox.stop(task.process.pid, sig)
        else:
            _signal_group(task.process.pid, sig)
        if sig == signal.SIGKILL:
            jobwrap.signal_pids(jobwrap.processes_with(AGENT_MARKER, _marker(task)), sig)

    def _env(self, role: str, task: AgentTask, cfg: dict) -> dict:
        env = {**os.environ, **(cfg.get("env") or {})}
        env.setdefault("LAB_AGENT_ID", _agent_id(cfg))
        env.setdefault("LAB_CACHE", str(Path(self.lab.runtime) / "cache"))  # a smoke run's caches stay in the lab
        env.update(LAB_ROLE=role, LAB_ROOT=str(self.root), LAB_ENTRY=str(task.entry or ""),
                   LAB_WORKTREE=str(task.cwd if role == "worker" else ""), LAB_TASK=task.task_id,
                   LAB_PROMPT_FILE=str(task.prompt), **{AGENT_MARKER: _marker(task)})
        return env

    # -- polling ------------------------------------------------------------------------------
    def poll(self) -> list[AgentOutcome]:
        """Outcomes of agents that ended (killing those past their limit); never blocks long."""
        done = []
        now = time.monotonic()
        for key, task in list(self.tasks.items()):
            code = task.process.poll() if task.process else -1
            if code is None and now >= task.deadline:
                self._kill(task, now)
                code = task.process.poll()
            if code is None:
                continue
            self._signal(task, signal.SIGKILL)  # leftovers of an agent that exited
            state = ("timed_out" if task.killed_at is not None else
                     "finished" if code == 0 and not task.error else "failed")
            done.append(self._finish(key, task, state, None if task.error else code))
        return done

    def stop(self, role: str, task_id: str) -> list[AgentOutcome]:
        """Kill one agent now and verify what it wrote (its task was taken away)."""
        task = self.tasks.get((role, task_id))
        if task is None:
            return []
        self._signal(task, signal.SIGKILL)
        if task.process:
            task.process.wait()
        return [self._finish((role, task_id), task, "stopped", None)]

    def stop_all(self) -> list[AgentOutcome]:
        """Kill every agent (TERM, then KILL after a grace period) and verify what each wrote."""
        for task in self.tasks.values():
            self._signal(task, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        for task in self.tasks.values():
            if task.process:
                try:
                    task.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
                self._signal(task, signal.SIGKILL)
                task.process.wait()
        return [self._finish(key, task, "stopped", task.process.returncode if task.process else None)
                for key, task in list(self.tasks.items())]

    def _kill(self, task: AgentTask, now: float) -> None:
        if task.killed_at is None:
            task.killed_at = now
            self._signal(task, signal.SIGTERM)
        elif now - task.killed_at >= KILL_GRACE_S:
            self._signal(task, signal.SIGKILL)
        try:
            task.process.wait(0.2)
        except subprocess.TimeoutExpired:
            pass

    def _finish(self, key, task: AgentTask, state: str, code: int | None) -> AgentOutcome:
        accepted, refused, restored = self._verify(task)
        if task.role == "worker" and self._refs_tampered(task):
            state, task.error = "failed", "it moved or redirected git refs it does not own"
        del self.tasks[key]
        if not self.tasks:
            self._set_baseline(None)
        record = Path(self.lab.runtime) / "agents" / task.role / task.task_id / "run.json"
        if record.exists():
            atomic_write(record, json.dumps({**json.loads(record.read_text()), "ended": iso(), "state": state}))
        reason = task.error or ""
        if state == "timed_out":
            limit = self.config(task.role).get("time_limit_s", 1800)
            reason = f"killed after its time limit of {limit}s"
        elif state == "failed" and not reason:
            reason = f"exited with code {code}"
        if task.copier is not None:
            task.copier.join(KILL_GRACE_S)   # its last lines (a CLI's usage report) reach the log first
        cfg = self.lab.config["roles"].get(task.role) or {}
        run = usage.account(self.lab, task.role, task.task_id, _agent_id(cfg) if cfg.get("command") else None,
                            state, code, task.log, task.log_offset, task.started_at)
        self._runner_wrote(self.lab.rel(run))
        if state in ("failed", "timed_out"):
            record_event(self.lab, "error" if state == "failed" else "warn", f"agent-{state.replace('_', '-')}",
                         f"{task.role} agent {task.task_id} {state}: {reason} (log {self.lab.rel(task.log)})",
                         experiment=task.task_id if task.role == "worker" else None, path=self.lab.rel(task.log))
        return AgentOutcome(task.role, task.task_id, state, code, accepted, refused, restored,
                            str(task.log), reason)

    def runner_committed(self, commit: str, paths: list[str]) -> None:
        """The runner committed these paths: their new content is the runner's, not a running agent's."""
        if self._baseline is None:
            return
        inside = [p for p in self._baseline.digests if any(p == c or p.startswith(c.rstrip("/") + "/") for c in paths)]
        if not inside:
            return  # only paths dirty at the baseline need a new "before"; the rest compare by commit
        blobs = blobs_at(self.root, commit, inside)
        digests = {**self._baseline.digests, **{path: blobs.get((commit, path)) for path in inside}}
        self._set_baseline(Snapshot(self._baseline.head, digests))

    def _runner_wrote(self, path: str) -> None:
        """The runner just wrote `path` (not yet committed): agents still running are not blamed for it."""
        if self._baseline is not None:
            self._set_baseline(Snapshot(self._baseline.head, {**self._baseline.digests,
                                                              **hash_files(self.root, [path])}))

    # -- crash recovery ----------------------------------------------------------------------------
    def _set_baseline(self, snap: Snapshot | None) -> None:
        """Keep the baseline on disk too, so that a restarted runner can still verify."""
        self._baseline = snap
        path = Path(self.lab.runtime) / "agents" / "baseline.json"
        if snap is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, json.dumps({"head": snap.head, "digests": snap.digests}))

    def recover(self) -> list[AgentOutcome]:
        """After the runner died: kill the agents it left running (their process groups)
        and verify what they wrote against the baseline kept on disk."""
        records = []
        for record in sorted((Path(self.lab.runtime) / "agents").glob("*/*/run.json")):
            try:
                info = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            if "ended" in info or info.get("role") not in machine.AGENT_ROLES:
                continue
            pid = info.get("pid")
            if pid and _start_time(pid) == info.get("pid_start"):
                _signal_group(pid, signal.SIGKILL)
            if info.get("marker"):
                jobwrap.signal_pids(jobwrap.processes_with(AGENT_MARKER, info["marker"]), signal.SIGKILL)
            records.append(info)
        saved = Path(self.lab.runtime) / "agents" / "baseline.json"
        try:
            data = json.loads(saved.read_text())
            self._baseline = Snapshot(data["head"], data["digests"])
        except (OSError, ValueError, KeyError):
            self._baseline = None
        for info in records:
            entry = Path(info["entry"]) if info.get("entry") else None
            self.tasks[(info["role"], info["task"])] = AgentTask(
                info["role"], info["task"], Path(info["cwd"]), entry,
                Path(self.lab.logs) / "agents" / f"{info['role']}-{info['task']}.log",
                Path(self.lab.runtime) / "agents" / info["role"] / info["task"] / "prompt.md", 0.0,
                error="the runner stopped while it ran; killed on restart", started_at=_epoch(info.get("started")),
                log_offset=int(info.get("log_offset") or 0))
        order = sorted(self.tasks, key=lambda k: k[0] in machine.MAIN_WRITERS)  # workers first: see _belongs_elsewhere
        outcomes = []
        for key in order:
            task = self.tasks[key]
            outcomes.append(self._finish(key, task, "stopped", None))
            record_event(self.lab, "warn", "agent-orphan", f"{task.role} agent {task.task_id}: {task.error}",
                         experiment=task.task_id if task.role == "worker" else None)
        self._set_baseline(None)
        return outcomes

    # -- ownership ---------------------------------------------------------------------------------
    def _verify(self, task: AgentTask) -> tuple[list[str], list[tuple[str, str]], list[str]]:
        """(accepted paths, refused (path, rule), restorations HEAD must record) of what changed
        in main since the baseline, dirty or committed by anyone but the runner."""
        before = self._baseline or snapshot(self.root)
        after = snapshot(self.root)
        committed = changed_by_others(self.root, before.head, after.head)
        candidates = sorted(set(before.digests) | set(after.digests) | committed)
        if not candidates:
            return [], [], []
        blobs = {**blobs_at(self.root, before.head, candidates), **blobs_at(self.root, after.head, candidates)}
        changed, deferred = [], {}
        for path in candidates:
            old, new = before.digest(path, blobs), after.digest(path, blobs)
            if old == new:
                continue
            if self._belongs_elsewhere(task, path):
                deferred[path] = old
            else:
                changed.append((path, old, new))
        fresh = {Path(p).stem for p, old, _ in changed if old is None and p.endswith(".yaml")}
        checker = Ownership(self.lab, task.role, task.task_id, fresh)
        accepted, refused, restored = [], [], []
        for path, old, new in changed:
            rule = checker.check(path, old, new)
            if rule is None:
                accepted.append(path)
                continue
            self._refuse(task, path, rule, old)
            refused.append((path, rule))
            if blobs.get((after.head, path)) != old:
                restored.append(path)   # HEAD holds the agent's version: the restoration must be committed
        marked = [self._mark(mark) for mark in checker.marks]
        if len(self.tasks) > 1:
            now = hash_files(self.root, [p for p, _ in refused] + marked)
            self._set_baseline(Snapshot(after.head, {**after.digests, **now, **deferred}))
        return list(dict.fromkeys(accepted + marked)), refused, restored

    def _belongs_elsewhere(self, task: AgentTask, path: str) -> bool:
        """A change that a still-running agent may have made (checked when that one ends)."""
        running = [t for k, t in self.tasks.items() if k != (task.role, task.task_id)]
        for other in running:
            if other.role == "worker" and path == f"queue/{other.task_id}.yaml":
                return True
            if task.role == "worker" and other.role in machine.MAIN_WRITERS and \
                    machine.rule_for(other.role, path, other.task_id):
                return True
        return False

    def _refs_tampered(self, task: AgentTask) -> bool:
        """A worker may move only its own exp/<id> branch, and never into a symbolic ref (the
        runner's next commit in its worktree would follow it, say onto main): put them back."""
        workers = {t.task_id for t in self.tasks.values() if t.role == "worker"}
        problems = sandbox.ref_tampering(self.lab, task.refs_before, workers | {task.task_id})
        if not problems:
            return False
        with FileLock(Path(self.lab.locks) / "git.lock"):
            sandbox.restore_refs(self.lab, task.refs_before, problems)
        record_event(self.lab, "error", "refused", f"worker agent {task.task_id}: {'; '.join(problems)}; "
                     "restored", experiment=task.task_id)
        return True

    def _mark(self, mark: Mark) -> str:
        """Keep a researcher's hypothesis the gates rejected, on the do-not-repeat list with the reason."""
        path = self.root / mark.path
        data = load_yaml(path)[0]
        rejection = mark.rejection
        data["status"] = machine.DUPLICATE if rejection.rule in ("duplicate", "near-duplicate") else machine.REJECTED
        data["review"] = {"by": "gate", "at": iso(), "rule": rejection.rule, "reason": rejection.message,
                          **({"collides_with": rejection.collides_with} if rejection.collides_with else {})}
        write_yaml(path, data)
        record_event(self.lab, "warn", "gate", f"{mark.path}: {rejection}", hypothesis=data.get("id"),
                     path=mark.path)
        return mark.path

    def _refuse(self, task: AgentTask, path: str, rule: str, old: str | None) -> None:
        target = self.root / path
        keep = Path(self.lab.runtime) / "refused" / f"{task.role}-{task.task_id}" / path
        if target.is_file():
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, keep)
        with FileLock(Path(self.lab.locks) / "git.lock"):
            restore(self.root, path, old)
        kept = f"; the agent's version is kept in {self.lab.rel(keep)}" if keep.exists() else ""
        record_event(self.lab, "error", "refused",
                     f"{task.role} agent {task.task_id} wrote {path}: refused by rule {rule} "
                     f"({RULE_TEXT.get(rule, 'see runner/roles/gates.py')}){kept}; restored "
                     f"{'the previous version' if old else 'by removing it'}",
                     experiment=task.task_id if task.role == "worker" else None, path=path)


def copy_masked(stream, log: Path) -> None:
    """The agent's output into its log, line by line, with every known secret masked: an agent
    holds the keys of its CLI and may print them."""
    secrets = [value.encode() for value in secret_values()]
    with open(log, "ab") as out:
        for line in iter(stream.readline, b""):
            for value in secrets:
                line = line.replace(value, MASK.encode())
            out.write(line)
            out.flush()
    stream.close()


def _agent_id(cfg: dict) -> str:
    return cfg.get("agent_id") or Path(cfg["command"][0]).name


def _epoch(text: str | None) -> float:
    try:
        return parse_iso(text).timestamp() if text else time.time()
    except ValueError:
        return time.time()


def _marker(task: AgentTask) -> str:
    return f"{task.role}/{task.task_id}@{os.getpid()}"


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _start_time(pid: int | None) -> str | None:
    """The kernel's start time of a process: tells a live agent from a reused pid."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def fill(arg: str, values: dict) -> str:
    """Replace the {placeholders} that `values` names; leave any other braces alone."""
    return re.sub(r"\{(" + "|".join(map(re.escape, values)) + r")\}", lambda m: str(values[m.group(1)]), arg)


