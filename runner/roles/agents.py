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

Ownership is verified, never assumed. Before an agent starts, the main
checkout is snapshotted (HEAD plus `git status` and a blob of every dirty file,
written to git's object store so any earlier content can be restored); when it
ends, what changed since is checked against the role's rules:

    researcher  new or changed hypotheses/*.yaml
    planner     status/review of existing hypotheses/*.yaml; new queue/*.yaml (status
                queued, passing the gates: duplicate, near-duplicate, do-not-repeat,
                single-change)
    worker      its own queue/<task>.yaml (status -> ready; history/updated), nothing
                else in main (its code goes into its worktree)
    reporter    experiments/LEADERBOARD.md, reports/**
    everyone    experiments/events.parquet, append-only (events are how roles report)

Anything else, any YAML that `lab validate` rejects and any deletion is refused:
an `refused` event names the role, the file and the rule, the agent's version
is kept under .lab/refused/<role>-<task>/<path> and the file is restored (or
removed if it was new). New hypotheses are reviewed by the gates: a duplicate
is kept but marked `duplicate` with the rule and the original it repeats.

Concurrency. Changes in the main checkout carry no author, so at most one
non-worker agent (researcher, planner, reporter) runs at a time; workers run in
parallel. A change seen when an agent ends is attributed to that agent unless it
is a running worker's own queue entry, or the ending agent is a worker and the
change is one the running non-worker may make (it is then checked when that one
ends). Commits made by an agent are recognised by the committer address this
module sets (`<role>.<task>@agents.benchlab.invalid`). Call `poll()` when the
runner's own writes in main are committed, and do not adopt or commit agents'
files while `idle()` is False: that is the runner's part of the contract.

Claims. `claim(lab, exp_id, worker)` creates .lab/claims/<exp_id> with O_EXCL:
the file system guarantees that exactly one of several concurrent claimants
wins, across processes; `release_claim` removes it when the entry leaves the
queue.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import gates
from ..assets import asset_path
from ..state.events import record_event
from ..files.locks import FileLock
from ..errors import LabError
from ..state.timeutil import iso
from ..files.yamlio import atomic_write, dump_yaml

ROLES = ("researcher", "planner", "worker", "reporter")
MAIN_WRITERS = ("researcher", "planner", "reporter")
PLACEHOLDERS = ("prompt_file", "worktree", "entry", "lab", "role", "task")
KILL_GRACE_S = 2.0
COMMITTER_DOMAIN = "agents.benchlab.invalid"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -- claims -----------------------------------------------------------------------
def claim(lab, exp_id: str, worker_name: str) -> bool:
    """Claim an entry for one worker; True for exactly one of concurrent callers."""
    path = Path(lab.runtime) / "claims" / exp_id
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"worker": worker_name, "pid": os.getpid(), "at": iso()}) + "\n")
    return True


def claim_holder(lab, exp_id: str) -> str | None:
    try:
        return json.loads((Path(lab.runtime) / "claims" / exp_id).read_text())["worker"]
    except (OSError, ValueError, KeyError):
        return None


def release_claim(lab, exp_id: str) -> None:
    (Path(lab.runtime) / "claims" / exp_id).unlink(missing_ok=True)


# -- prompts ----------------------------------------------------------------------
def _skill_text(lab, name: str) -> str | None:
    for base in (Path(lab.root) / "skills", _packaged_skills()):
        if base and (base / name / "SKILL.md").is_file():
            return (base / name / "SKILL.md").read_text(encoding="utf-8")
    return None


def _packaged_skills() -> Path | None:
    try:
        return asset_path("skills")
    except FileNotFoundError:
        return None


def build_prompt(lab, role: str, entry: Path | None, extra: str = "") -> str:
    """The prompt an agent gets: the lab's skill, its role's skill, its entry file and the task."""
    target = lab.config["target"]
    parts = [f"# benchlab: you are the {role} of the lab `{lab.config['lab']}`",
             f"Lab root: {lab.root}\nObjective: {lab.config['objective']['direction']} "
             f"{lab.metric}\nEditable: {', '.join(target['editable'])}\n"
             f"Protected (never edit): {', '.join(target.get('protected') or [])}\n"
             f"Declared parameters: {', '.join(target.get('params') or []) or '(none)'}"]
    for name in ("autolab", f"autolab-{role}"):
        text = _skill_text(lab, name)
        if text:
            parts.append(f"## Skill `{name}`\n\n{text.strip()}")
    if entry is not None:
        entry = Path(entry)
        body = entry.read_text(encoding="utf-8") if entry.is_file() else "(missing)"
        parts.append(f"## Your entry: {lab.rel(entry)}\n\n```yaml\n{body.strip()}\n```")
    parts.append("## Task\n\n" + (extra.strip() or _DEFAULT_TASKS[role]))
    return "\n\n".join(parts) + "\n"


_DEFAULT_TASKS = {
    "researcher": "Propose new hypotheses as hypotheses/<id>.yaml (status proposed); do not repeat "
                  "anything in hypotheses/ or experiments/scores.parquet.",
    "planner": "Review proposed hypotheses (set status accepted, rejected or duplicate with a review) and "
               "queue accepted ones as queue/<id>.yaml (status queued), one change each.",
    "worker": "Make exactly the change of your entry in your worktree (the current directory), then set "
              "status: ready in your entry file.",
    "reporter": "Update experiments/LEADERBOARD.md and write a report under reports/.",
}


# -- snapshots of the main checkout --------------------------------------------------
def _git(root: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    done = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True)
    if check and done.returncode != 0:
        raise LabError(f"git {args[0]} failed: {done.stderr.decode(errors='replace').strip()}", str(root))
    return done.stdout


@dataclass
class Snapshot:
    """HEAD plus an explicit content digest (git blob id, None if absent) of every
    path that differs from HEAD; any other path is as in HEAD."""
    head: str
    digests: dict[str, str | None]

    def digest(self, path: str, blobs: dict) -> str | None:
        if path in self.digests:
            return self.digests[path]
        return blobs.get((self.head, path))


def snapshot(root: Path) -> Snapshot:
    head = _git(root, "rev-parse", "HEAD").decode().strip()
    out = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    paths = [item[3:].decode("utf-8", "surrogateescape") for item in out.split(b"\0") if len(item) > 3]
    return Snapshot(head, _hash_files(root, paths))


def _hash_files(root: Path, paths: list[str]) -> dict[str, str | None]:
    """Blob ids of these files, written to the object store (so they can be restored)."""
    present = [p for p in paths if (root / p).is_file() and not (root / p).is_symlink()]
    digests: dict[str, str | None] = {p: None for p in paths}
    if present:
        out = _git(root, "hash-object", "-w", "--stdin-paths",
                   stdin="\n".join(present).encode() + b"\n")
        digests.update(zip(present, out.decode().split()))
    for p in paths:
        if (root / p).is_symlink():
            digests[p] = "link:" + hashlib.sha1(os.readlink(root / p).encode()).hexdigest()
    return digests


def _blobs_at(root: Path, head: str, paths: list[str]) -> dict:
    """{(head, path): blob id} for the paths that exist in commit `head`."""
    found = {}
    for start in range(0, len(paths), 500):
        out = _git(root, "ls-tree", "-z", head, "--", *paths[start:start + 500])
        for item in out.split(b"\0"):
            if item:
                meta, _, name = item.decode("utf-8", "surrogateescape").partition("\t")
                found[(head, name)] = meta.split()[2]
    return found


def _agent_commits(root: Path, since: str, until: str) -> dict[str, set[str]]:
    """{committer address: paths} of commits between two heads made by agents."""
    if since == until:
        return {}
    out = _git(root, "log", "--format=%x00%ce", "--name-only", "--no-renames", f"{since}..{until}",
               check=False).decode("utf-8", "surrogateescape")
    touched: dict[str, set[str]] = {}
    for chunk in out.split("\0")[1:]:
        lines = [line for line in chunk.splitlines() if line]
        if lines and lines[0].endswith("@" + COMMITTER_DOMAIN):
            touched.setdefault(lines[0], set()).update(lines[1:])
    return touched


def committer(role: str, task_id: str) -> str:
    return f"{role}.{task_id}@{COMMITTER_DOMAIN}"


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
        if role in MAIN_WRITERS and any(r in MAIN_WRITERS for r, _ in self.tasks):
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
                         time.monotonic() + limit)
        values = {"prompt_file": str(prompt), "worktree": str(cwd), "entry": str(entry or ""),
                  "lab": str(self.root), "role": role, "task": task_id}
        argv = [_fill(arg, values) for arg in cfg["command"]]
        self.tasks[(role, task_id)] = task
        try:
            with open(log, "ab") as out:
                out.write(f"# {iso()} {role} {task_id}: {' '.join(argv)}\n".encode())
                out.flush()
                task.process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, env=self._env(role, task, cfg),
                                                start_new_session=True)
        except OSError as exc:
            task.error = f"cannot start {argv[0]!r}: {exc.strerror or exc} (roles.{role}.command)"
        pid = task.process.pid if task.process else None
        atomic_write(home / "run.json", json.dumps({
            "role": role, "task": task_id, "cwd": str(cwd), "entry": str(entry) if entry else None, "pid": pid,
            "pid_start": _start_time(pid), "argv": argv, "started": iso()}))
        return task

    def _env(self, role: str, task: AgentTask, cfg: dict) -> dict:
        env = {**os.environ, **(cfg.get("env") or {})}
        env.update(LAB_ROLE=role, LAB_ROOT=str(self.root), LAB_ENTRY=str(task.entry or ""),
                   LAB_WORKTREE=str(task.cwd if role == "worker" else ""), LAB_TASK=task.task_id,
                   LAB_PROMPT_FILE=str(task.prompt), GIT_COMMITTER_EMAIL=committer(role, task.task_id))
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
            _kill_group(task.process, signal.SIGKILL)  # leftovers of an agent that exited
            state = ("timed_out" if task.killed_at is not None else
                     "finished" if code == 0 and not task.error else "failed")
            done.append(self._finish(key, task, state, None if task.error else code))
        return done

    def stop_all(self) -> list[AgentOutcome]:
        """Kill every agent (TERM, then KILL after a grace period) and verify what each wrote."""
        for task in self.tasks.values():
            _kill_group(task.process, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        for task in self.tasks.values():
            if task.process:
                try:
                    task.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
                _kill_group(task.process, signal.SIGKILL)
                task.process.wait()
        return [self._finish(key, task, "stopped", task.process.returncode if task.process else None)
                for key, task in list(self.tasks.items())]

    def _kill(self, task: AgentTask, now: float) -> None:
        if task.killed_at is None:
            task.killed_at = now
            _kill_group(task.process, signal.SIGTERM)
        elif now - task.killed_at >= KILL_GRACE_S:
            _kill_group(task.process, signal.SIGKILL)
        try:
            task.process.wait(0.2)
        except subprocess.TimeoutExpired:
            pass

    def _finish(self, key, task: AgentTask, state: str, code: int | None) -> AgentOutcome:
        accepted, refused, restored = self._verify(task)
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
        if state in ("failed", "timed_out"):
            record_event(self.lab, "error" if state == "failed" else "warn", f"agent-{state.replace('_', '-')}",
                         f"{task.role} agent {task.task_id} {state}: {reason} (log {self.lab.rel(task.log)})",
                         experiment=task.task_id if task.role == "worker" else None, path=self.lab.rel(task.log))
        return AgentOutcome(task.role, task.task_id, state, code, accepted, refused, restored,
                            str(task.log), reason)

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
            if "ended" in info or info.get("role") not in ROLES:
                continue
            pid = info.get("pid")
            if pid and _start_time(pid) == info.get("pid_start"):
                _signal_group(pid, signal.SIGKILL)
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
                error="the runner stopped while it ran; killed on restart")
        order = sorted(self.tasks, key=lambda k: k[0] in MAIN_WRITERS)  # workers first: see _belongs_elsewhere
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
        before = self._baseline or snapshot(self.root)
        after = snapshot(self.root)
        commits = _agent_commits(self.root, before.head, after.head)
        me = committer(task.role, task.task_id)
        candidates = sorted(set(before.digests) | set(after.digests) | {p for c in commits.values() for p in c})
        if not candidates:
            return [], [], []
        blobs = {**_blobs_at(self.root, before.head, candidates), **_blobs_at(self.root, after.head, candidates)}
        changed, deferred = [], {}
        for path in candidates:
            old, new = before.digest(path, blobs), after.digest(path, blobs)
            if old == new:
                continue
            if self._belongs_elsewhere(task, path, commits, me):
                deferred[path] = old
            else:
                changed.append((path, old, new))
        fresh = {Path(p).stem for p, old, _ in changed if old is None and (_HYP.match(p) or _QUEUE.match(p))}
        checker = Ownership(self.lab, task, fresh)
        accepted, refused, restored = [], [], []
        for path, old, new in changed:
            rule = checker.check(path, old, new)
            if rule is None:
                accepted.append(path)
                continue
            self._refuse(task, path, rule, old)
            refused.append((path, rule))
            if path in commits.get(me, ()):
                restored.append(path)   # the agent committed it: the restoration must be committed too
        if len(self.tasks) > 1:
            now = _hash_files(self.root, [p for p, _ in refused] + checker.marked)
            self._set_baseline(Snapshot(after.head, {**after.digests, **now, **deferred}))
        return list(dict.fromkeys(accepted + checker.marked)), refused, restored

    def _belongs_elsewhere(self, task: AgentTask, path: str, commits: dict, me: str) -> bool:
        """A change that a still-running agent made, or may have made (checked when it ends)."""
        if any(path in paths for c, paths in commits.items() if c != me):
            return True
        running = [t for k, t in self.tasks.items() if k != (task.role, task.task_id)]
        for other in running:
            if other.role == "worker" and path == f"queue/{other.task_id}.yaml":
                return True
            if task.role == "worker" and other.role in MAIN_WRITERS and Ownership.may_write(other.role, path):
                return True
        return False

    def _refuse(self, task: AgentTask, path: str, rule: str, old: str | None) -> None:
        target = self.root / path
        keep = Path(self.lab.runtime) / "refused" / f"{task.role}-{task.task_id}" / path
        if target.is_file():
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, keep)
        with FileLock(Path(self.lab.locks) / "git.lock"):
            _restore(self.root, path, old)
        kept = f"; the agent's version is kept in {self.lab.rel(keep)}" if target.exists() or keep.exists() else ""
        record_event(self.lab, "error", "refused",
                     f"{task.role} agent {task.task_id} wrote {path}: refused by rule {rule} "
                     f"({RULE_TEXT.get(rule, 'see runner/gates.py')}){kept}; restored "
                     f"{'the previous version' if old else 'by removing it'}",
                     experiment=task.task_id if task.role == "worker" else None, path=path)


def _restore(root: Path, path: str, digest: str | None) -> None:
    """Put back the content `digest` (None: remove the file) and unstage the path."""
    target = root / path
    listed = _git(root, "ls-tree", "HEAD", "--", path).decode()
    tracked = bool(listed.strip())
    if digest is None or digest.startswith("link:"):
        if target.is_file() or target.is_symlink():
            target.unlink()
    else:
        atomic_write(target, _git(root, "cat-file", "blob", digest))
        os.chmod(target, 0o755 if listed.startswith("100755") else 0o644)
    if tracked:
        _git(root, "restore", "--staged", "--", path, check=False)
    else:
        _git(root, "rm", "-q", "--cached", "--ignore-unmatch", "--", path, check=False)


def _kill_group(process: subprocess.Popen | None, sig: int) -> None:
    if process is not None:
        _signal_group(process.pid, sig)


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


def _fill(arg: str, values: dict) -> str:
    """Replace the known {placeholders}; leave any other braces alone."""
    return re.sub(r"\{(" + "|".join(PLACEHOLDERS) + r")\}", lambda m: values[m.group(1)], arg)


# -- the rules of each role --------------------------------------------------------------------
_HYP = re.compile(r"^hypotheses/[^/]+\.yaml$")
_QUEUE = re.compile(r"^queue/[^/]+\.yaml$")
EVENTS = "experiments/events.parquet"
RULE_TEXT = {
    "not-owned": "the role does not own this file; a worker's code belongs in its worktree",
    "protected": "target.protected in lab.yaml",
    "invalid": "`lab validate` rejects it",
    "deleted": "agents never delete lab files",
    "fields": "changed fields the role does not own",
    "status": "a status this role may not set",
    "append-only": "events may only be appended",
    **{rule: "a gate on the change (runner/gates.py)" for rule in gates.RULES},
}


class Ownership:
    """Decides, path by path, whether a role may have made a change in main's checkout."""

    def __init__(self, lab, task: AgentTask, fresh: set[str] = frozenset()):
        self.lab, self.task = lab, task
        self.fresh = set(fresh)          # ids of files new in this batch, not yet reviewed
        self.root = Path(lab.root)
        self.marked: list[str] = []      # hypotheses the gates marked duplicate (to commit)
        self._history: gates.History | None = None

    @staticmethod
    def may_write(role: str, path: str) -> bool:
        if path == EVENTS:
            return True
        if role == "researcher":
            return bool(_HYP.match(path))
        if role == "planner":
            return bool(_HYP.match(path) or _QUEUE.match(path))
        if role == "reporter":
            return path == "experiments/LEADERBOARD.md" or path.startswith("reports/")
        return False

    def check(self, path: str, old: str | None, new: str | None) -> str | None:
        """None if allowed, else the rule it breaks."""
        role = self.task.role
        if new is None:
            return "deleted"
        if path == EVENTS:
            return self._events(old)
        if gates.is_protected(self.lab, path):
            return "protected"
        if role == "worker":
            return self._worker(path, old)
        if not self.may_write(role, path):
            return "not-owned"
        if _HYP.match(path) or _QUEUE.match(path):
            return self._yaml(path, old)
        return None

    # -- per kind -----------------------------------------------------------------------
    def _yaml(self, path: str, old: str | None) -> str | None:
        from ..validation.validate import validate
        if not validate(self.root, [str(self.root / path)]).ok:
            return "invalid"
        data = _load(self.root / path)
        previous = _load_blob(self.root, old) if old else None
        if _QUEUE.match(path):
            if previous is not None:
                return "not-owned"       # the planner queues new entries; it does not edit live ones
            if data.get("status") != "queued":
                return "status"
            return self._gate(path, data, queue=True)
        if self.task.role == "planner" and previous is not None:
            if _without(previous, "status", "review") != _without(data, "status", "review"):
                return "fields"          # the planner judges hypotheses; it does not rewrite them
            return None
        if self.task.role == "planner":
            return "not-owned"           # new hypotheses are the researcher's
        if previous is None:
            return "status" if data.get("status") != "proposed" else self._gate(path, data, queue=False)
        if {k: data.get(k) for k in ("status", "review")} != {k: previous.get(k) for k in ("status", "review")}:
            return "status"              # judging a hypothesis is the planner's
        return None

    def _gate(self, path: str, data: dict, queue: bool) -> str | None:
        if self._history is None:
            self._history = gates.History.load(self.lab)
        own = data.get("id")
        self.fresh.discard(own)
        rejection = gates.review_change(self.lab, self._history, data.get("change") or {},
                                        base=data.get("base"), exclude_id=self.fresh | {own},
                                        hypothesis_id=data.get("hypothesis") if queue else own)
        if rejection is None:
            self._history.add(own, data.get("change") or {}, data.get("base"),
                              data.get("status", ""), kind="experiment" if queue else "hypothesis")
            return None
        if queue:
            record_event(self.lab, "warn", "gate", f"{path}: {rejection}", experiment=own,
                         hypothesis=data.get("hypothesis"), path=path)
            return rejection.rule
        self._mark(path, data, rejection)
        return None

    def _mark(self, path: str, data: dict, rejection: gates.Rejection) -> None:
        """Keep the researcher's hypothesis, but on the do-not-repeat list with the reason."""
        data["status"] = "duplicate" if rejection.rule in ("duplicate", "near-duplicate") else "rejected"
        review = {"by": "gate", "at": iso(), "rule": rejection.rule, "reason": rejection.message}
        if rejection.collides_with:
            review["collides_with"] = rejection.collides_with
        data["review"] = review
        atomic_write(self.root / path, dump_yaml(data))
        self.marked.append(path)
        record_event(self.lab, "warn", "gate", f"{path}: {rejection}", hypothesis=data.get("id"), path=path)

    def _worker(self, path: str, old: str | None) -> str | None:
        if path != f"queue/{self.task.task_id}.yaml" or old is None:
            return "not-owned"           # a worker's code belongs in its worktree
        from ..validation.validate import validate
        if not validate(self.root, [str(self.root / path)]).ok:
            return "invalid"
        data, previous = _load(self.root / path), _load_blob(self.root, old)
        if _without(previous, "status", "updated", "history") != _without(data, "status", "updated", "history"):
            return "fields"
        if data.get("status") not in ("ready", previous.get("status")):
            return "status"
        return None

    def _events(self, old: str | None) -> str | None:
        """events.parquet may only grow, with the events schema."""
        import pyarrow.parquet as pq
        from ..files.tables import EVENTS as SCHEMA, check_parquet
        path = self.root / EVENTS
        if check_parquet(path, SCHEMA, EVENTS):
            return "invalid"
        if old:
            before = _parquet_rows(_git(self.root, "cat-file", "blob", old))
            if before is None or pq.read_metadata(path).num_rows < before:
                return "append-only"
        return None


def _parquet_rows(data: bytes) -> int | None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        return pq.read_metadata(pa.BufferReader(data)).num_rows
    except Exception:
        return None


def _load(path: Path) -> dict:
    data = yaml.load(path.read_bytes(), Loader=_Loader)
    return data if isinstance(data, dict) else {}


def _load_blob(root: Path, digest: str) -> dict:
    try:
        data = yaml.load(_git(root, "cat-file", "blob", digest), Loader=_Loader)
    except (yaml.YAMLError, LabError):
        return {}
    return data if isinstance(data, dict) else {}


def _without(data: dict, *keys: str) -> dict:
    return {k: v for k, v in data.items() if k not in keys}
