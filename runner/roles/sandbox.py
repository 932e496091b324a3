"""Operating-system confinement of agent roles with bubblewrap: which paths each role
may write, the bwrap argv that enforces it, whether bwrap works here, and the lab's policy.

    argv = sandbox.command(lab, role, task_id, argv, cwd, entry)   # unchanged when unsandboxed

Inside, everything is read-only except the role's paths and the user's home (agent CLIs
keep their config there); /tmp is private; the agent and everything it starts share a
pid namespace that dies with it. See `wrap` for the order of the binds and why it matters.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import LabError
from ..repo.gitops import run_git
from ..repo.worktrees import branch

RUNNER_CODE = Path(__file__).resolve().parents[2]   # the directory holding the runner package

# --as-pid-1: the agent is pid 1 of its namespace, so when it exits the kernel kills everything
# else in it before bwrap can exit (with bwrap's own init, bwrap may exit first and a detached
# process outlive it for a moment). --cap-drop ALL: root's capabilities would let the agent
# remount "/" read-write (a no-op when unprivileged).
BASE = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--as-pid-1",
        "--unshare-ipc", "--die-with-parent", "--cap-drop", "ALL")
# Read at startup by programs the runner (or a person) runs later, outside the sandbox:
# writable, they would let an agent run code unconfined. Pinned read-only when present.
HOME_PINNED = (".gitconfig", ".config/git", ".ssh", ".local/lib", ".cache/pre-commit", ".config/pip",
               ".pip", ".pythonrc", ".npmrc", ".bashrc", ".bash_profile", ".bash_login", ".profile",
               ".bash_logout", ".zshrc", ".zshenv", ".zprofile")
# Absent, an agent could create them; empty, they change nothing: made before pinning.
HOME_MADE_EMPTY = {".gitconfig": "file", ".config/git": "dir"}


@dataclass(frozen=True)
class Binds:
    """Paths of one sandbox, each bound at the same place inside, in this order."""
    readonly: tuple[Path, ...] = ()   # kept visible, read-only (a lab under /tmp, below the private /tmp)
    writable: tuple[Path, ...] = ()
    pinned: tuple[Path, ...] = ()     # read-only again, on top of a writable bind
    masked: tuple[Path, ...] = ()     # hidden under an empty tmpfs (what the agent must not see)


# -- is bwrap usable here ------------------------------------------------------------
@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """None if bwrap can make a sandbox here, else why not (tried once per process)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        done = subprocess.run([exe, *BASE, "--", "true"], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not run: {exc}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return "bwrap cannot make a sandbox here" + (f": {lines[-1]}" if lines else "")
    return None


def available() -> bool:
    return unavailable() is None


# -- policy --------------------------------------------------------------------------------
_warned: set[str] = set()


def mode(lab, role: str) -> str:
    """`bwrap` or `none` for this role: lab.yaml roles.<role>.sandbox, default bwrap where it works.
    Running unconfined prints one warning per role and process."""
    wanted = (lab.config["roles"].get(role) or {}).get("sandbox", "bwrap")
    if wanted == "none":
        _warn(role, f"roles.{role}.sandbox is none: the {role} agent runs unconfined")
        return "none"
    why = unavailable()
    if why:
        _warn(role, f"{why}: the {role} agent runs unconfined (roles.{role}.sandbox)")
        return "none"
    return "bwrap"


def _warn(role: str, message: str) -> None:
    if role not in _warned:
        _warned.add(role)
        print(f"lab: warning: {message}; only the check after it exits guards the lab", file=sys.stderr)


def command(lab, role: str, task_id: str, argv: list[str], cwd: Path, entry: Path | None = None,
            network: bool = True) -> list[str]:
    """The argv to start a role's agent with: wrapped in bwrap, or unchanged where the policy says none."""
    if mode(lab, role) == "none":
        return list(argv)
    worktree = Path(cwd) if role == "worker" else None
    return wrap(argv, role_binds(lab, role, task_id, worktree, entry), cwd, network=network)


# -- what each role may write ----------------------------------------------------------------
def role_binds(lab, role: str, task_id: str, worktree: Path | None = None,
               entry: Path | None = None) -> Binds:
    """The sandbox of one agent: the lab (and its git directory) read-only, the role's paths writable."""
    root = _real(lab.root)
    common = _real(Path(run_git(root, "rev-parse", "--path-format=absolute", "--git-common-dir").strip()))
    readonly = (root,) if _within(common, root) else (root, common)
    if role == "worker":
        if worktree is None:
            raise LabError("a sandboxed worker needs its worktree", field="worktree")
        writable, pinned = _worker(lab, task_id, Path(worktree), entry, common)
    elif role in ("researcher", "planner"):
        writable, pinned = (_owned_dir(lab.hypotheses, root), _owned_dir(lab.queue, root)), ()
    elif role == "reporter":
        writable, pinned = (_owned_dir(lab.root / "reports", root),), ()
    else:
        raise LabError(f"no sandbox for role {role!r}", "lab.yaml", "roles")
    return Binds(readonly, writable, pinned)


def _worker(lab, task_id: str, worktree: Path, entry: Path | None, common: Path):
    """Its worktree and its own queue entry; of git, what `git commit` in a linked worktree
    writes: the object store, the worktree's admin dir, the ref and reflog of exp/<id>.
    Refs are replaced through `<ref>.lock` + rename, so the directory of exp/ refs is bound:
    a worker can move another exp/* ref (see ref_tampering), never main's refs or HEAD."""
    wt = _checked(worktree, lab.worktrees)
    entry = _checked_file(Path(entry) if entry else lab.queue / f"{task_id}.yaml", lab.queue)
    if entry.name != f"{task_id}.yaml":
        raise LabError(f"{entry} is not the entry of {task_id}", field="entry")
    admin = _real(Path(run_git(wt, "rev-parse", "--absolute-git-dir").strip()))
    if admin.parent != common / "worktrees":
        raise LabError(f"{wt} is not a linked worktree of this lab's repository", str(wt))
    ref_dir = Path(f"refs/heads/{branch(task_id)}").parent
    refs, logs = common / ref_dir, common / "logs" / ref_dir
    for made in (refs, logs):
        made.mkdir(parents=True, exist_ok=True)
    writable = (wt, entry, common / "objects", admin, refs, logs)
    # the runner runs git in this worktree later, unconfined: its links to the repository stay put
    pinned = (wt / ".git", admin / "HEAD", admin / "commondir", admin / "gitdir",
              common / "objects" / "info", common / "objects" / "pack")
    return writable, tuple(p for p in pinned if p.exists())


def _owned_dir(path: Path, root: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return _checked(path, root)


def _checked(path: Path, base: Path) -> Path:
    """The real path, refused unless it lies under `base`: a symlink planted by an earlier
    unconfined agent must not turn into a writable bind of something else."""
    real = _real(path)
    if not _within(real, _real(base)) or real == _real(base):
        raise LabError(f"{path} resolves to {real}, outside {base}: not bound writable", str(path))
    return real


def _checked_file(path: Path, base: Path) -> Path:
    """A single file to bind writable: a regular file under `base` with no other name (a hard
    link to, say, lab.yaml would hand the agent that file)."""
    real = _checked(path, base)
    info = real.stat() if real.exists() else None
    if info is None or not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise LabError(f"{path} is not a plain file with a single name: not bound writable", str(path))
    return real


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, base: Path) -> bool:
    return path == base or base in path.parents


# -- the bwrap argv -----------------------------------------------------------------------------
def wrap(argv: list[str], binds: Binds, cwd: Path, *, network: bool = True, home: bool = True) -> list[str]:
    """bwrap argv running `argv` in `cwd` with only `binds.writable` (and the home) writable.

    Later binds cover earlier ones, so the order is the policy: "/" read-only, a private
    /tmp, the home writable, then read-only again what must not change under it (the
    runner's interpreter and PATH, startup files), the lab read-only (it may live under
    /tmp or the home), the role's writable paths, the pinned paths on top of those, and
    the masked paths (empty) last. The environment passes through; `network=False` leaves only loopback."""
    args = ["bwrap", *BASE, "--tmpfs", "/tmp"]
    home_dir = _home() if home else None
    if home_dir:
        args += ["--bind", str(home_dir), str(home_dir)]
    for path in _keep_readonly(home_dir) + list(binds.readonly):
        args += ["--ro-bind", str(path), str(path)]
    for path in binds.writable:
        args += ["--bind", str(path), str(path)]
    for path in binds.pinned:
        args += ["--ro-bind", str(path), str(path)]
    for path in binds.masked:
        args += ["--tmpfs", str(path)]
    if not network:
        args.append("--unshare-net")
    return args + ["--chdir", str(_real(Path(cwd))), "--", *argv]


def _home() -> Path | None:
    home = _real(Path(os.environ.get("HOME") or Path.home()))
    return home if home.is_dir() and home != Path("/") else None


def _keep_readonly(home: Path | None) -> list[Path]:
    """Paths under the private /tmp or the writable home that must stay as they are outside:
    the runner's own Python, code (an editable install's checkout may live under /tmp) and PATH,
    and the home's startup files."""
    hidden = [Path("/tmp")] + ([home] if home else [])
    mine = [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path, str(RUNNER_CODE),
            *os.environ.get("PATH", "").split(os.pathsep)]
    if home:
        _make_pins(home)
        mine += [home / name for name in HOME_PINNED]
    found = {_real(Path(p)) for p in mine if p and os.path.isabs(p) and os.path.exists(p)}
    keep = sorted(p for p in found if any(_within(p, h) and p != h for h in hidden))
    return [p for p in keep if not any(q in p.parents for q in keep)]  # a parent's bind covers its children


def _make_pins(home: Path) -> None:
    """Create, empty, what git outside would read if an agent wrote it; and the PATH directories
    in the home, so that no agent can put a `git` there that the runner would then run."""
    for name, kind in HOME_MADE_EMPTY.items():
        if not os.path.lexists(home / name):
            (home / name).parent.mkdir(parents=True, exist_ok=True)
            (home / name).mkdir() if kind == "dir" else (home / name).touch()
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        inside = entry and os.path.isabs(entry) and _within(_real(Path(entry)), home)
        if inside and not os.path.lexists(entry):
            Path(entry).mkdir(parents=True, exist_ok=True)


# -- stopping -----------------------------------------------------------------------------------
def stop(pid: int, sig: int = signal.SIGKILL, timeout: float = 5.0) -> bool:
    """Signal the process group of a sandboxed agent (`pid`: the bwrap the runner started) and
    wait until nothing in its sandbox runs. bwrap dies at once (TERM or KILL); the agent, pid 1
    of the sandbox, gets SIGKILL from bwrap's death a moment later, and the kernel then kills
    the rest of its namespace. True once all are gone. (When the agent exits by itself, bwrap
    exits only after its namespace is empty: no wait is needed.)"""
    init = _sandbox_init(pid)
    born = _stat(init)[2] if init else None
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    if init is None:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, _, started = _stat(init)
        if started != born or state in ("Z", "X"):
            return True  # pid 1 ends only after the kernel has killed the rest of its namespace
        time.sleep(0.02)
    return False


def _sandbox_init(pid: int) -> int | None:
    """bwrap's only child: the agent, pid 1 of the sandbox's pid namespace."""
    for name in os.listdir("/proc"):
        if name.isdigit() and _stat(int(name))[1] == pid:
            return int(name)
    return None


def _stat(pid: int) -> tuple[str | None, int | None, str | None]:
    """(state, parent pid, start time) of a process, Nones if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None, None, None
    return fields[0], int(fields[1]), fields[19]


# -- what a worker can still do: move another exp/* ref ------------------------------------------
def exp_refs(lab) -> dict[str, str]:
    """{ref: commit, or '-> target' for a symbolic ref} of every exp/* branch."""
    out = run_git(lab.root, "for-each-ref", "--format=%(refname) %(objectname) %(symref)",
                  f"refs/heads/{branch('')}")
    refs = {}
    for line in out.splitlines():
        name, sha, *target = line.split(" ")
        refs[name] = f"-> {target[0]}" if target and target[0] else sha
    return refs


def restore_refs(lab, before: dict[str, str], problems: list[str]) -> None:
    """Put the exp/* refs named in `problems` back as they were in `before` (deleting new ones)."""
    for name in {problem.split(" ", 1)[0] for problem in problems}:
        if (run_git(lab.root, "symbolic-ref", "-q", name) if _is_symbolic(lab, name) else ""):
            run_git(lab.root, "symbolic-ref", "--delete", name)
        old = before.get(name)
        if old and not old.startswith("->"):
            run_git(lab.root, "update-ref", "--no-deref", name, old)
        else:
            run_git(lab.root, "update-ref", "--no-deref", "-d", name)


def _is_symbolic(lab, name: str) -> bool:
    return exp_refs(lab).get(name, "").startswith("->")


def ref_tampering(lab, before: dict[str, str], may_move: set[str]) -> list[str]:
    """Problems with exp/* refs since `before` (exp_refs when the worker started): a symbolic ref
    (the runner's later commit in that worktree would follow it, e.g. onto main), or a ref moved
    that belongs to no worker in `may_move` (the ending one and those still running)."""
    after = exp_refs(lab)
    allowed = {f"refs/heads/{branch(t)}" for t in may_move}
    symbolic = {name for name, value in after.items() if value.startswith("->")}
    problems = [f"{name} is a symbolic ref ({after[name]})" for name in sorted(symbolic)]
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name) and name not in allowed | symbolic:
            problems.append(f"{name} moved from {before.get(name, '(none)')} to {after.get(name, '(none)')}")
    return problems
