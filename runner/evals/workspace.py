"""A fresh lab for one run of one case: `lab init`, the skill installed or absent, the
case's files and setup commands, and for a worker its entry assigned with a worktree.

The lab is `<tmp>/lab` in a new temporary directory (the prompt file lies beside it).
Every skill's evals/ is left out of it, so no agent reads the assertions. With the
skill, the skill under test is in skills/ and installed where agents read skills
(`lab skills install`: .claude/, .agents/, .codex/, .opencode/ and the AGENTS.md and
CLAUDE.md pointer), all in the first commit, so a worker's worktree has it too. For the
baseline it is nowhere in the lab.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import LabError
from ..lab import Lab
from ..repo import gitops, worktrees
from ..roles.agents import fill
from ..scaffold import init_lab
from ..state import machine
from .cases import FILES, Case
from .sanitize import git_settings

SETUP_TIMEOUT_S = 300


@dataclass
class Workspace:
    tmp: Path
    lab: Lab
    cwd: Path                                    # where the agent starts
    values: dict[str, str]                       # the placeholders: lab base task worktree entry role
    prompt: Path
    before: dict[str, str] = field(default_factory=dict)   # {path: sha256} once set up, .git excluded
    setup_commit: str = ""
    git_state: dict[str, bytes] = field(default_factory=dict)  # sanitize.GIT_SETTINGS as set up

    @property
    def root(self) -> Path:
        return self.lab.root

    def fill(self, text: str) -> str:
        return fill(text, self.values)

    def path(self, text: str) -> Path:
        """A case's path (placeholders filled, relative to the lab root); never outside the lab."""
        raw = Path(self.fill(text))
        path = raw if raw.is_absolute() else self.root / raw
        real = Path(os.path.abspath(path))
        if real != self.root and self.root not in real.parents:
            raise LabError(f"{text!r} points outside the case's lab", field="path")
        return real

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def remove(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def prepare(case: Case, skill_dir: Path, with_skill: bool) -> Workspace:
    """Build the case's lab; on any failure remove it and raise LabError naming the case."""
    tmp = Path(tempfile.mkdtemp(prefix="benchlab-eval-")).resolve()
    try:
        root = init_lab(tmp / "lab", template=case.template, name=f"eval-{case.skill}", commit=False)
        _place_skill(root, skill_dir, with_skill)
        base = _commit(root, f"eval: {case.skill} {case.id} ({'with' if with_skill else 'without'} the skill)")
        lab = Lab(root)
        values = {"lab": str(root), "base": base, "role": case.role or "", "task": case.task or case.id,
                  "worktree": "", "entry": ""}
        ws = Workspace(tmp, lab, root, values, tmp / "prompt.md")
        if case.role == "worker":
            ws.values.update(worktree=str(worktrees.path(lab, case.task)), entry=str(lab.queue / f"{case.task}.yaml"))
        _write_files(case, skill_dir, ws)
        _run_setup(case, ws)
        _commit(root, f"eval: files and setup of {case.id}")
        if case.role == "worker":
            ws.cwd = _assign(lab, case)
            _commit(root, f"eval: {case.task} assigned")
        ws.prompt.write_text(ws.fill(case.prompt), encoding="utf-8")
        ws.setup_commit = gitops.head(root)
        ws.before = tree_hashes(root)
        ws.git_state = git_settings(ws)
        return ws
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, LabError):
            p = exc.problem
            path = p.path.replace(str(tmp / "lab") + "/", "") if p.path != "-" else ""
            raise LabError(f"case {case.id}: {p.message}", path, p.field, p.line) from None
        raise


def _place_skill(root: Path, skill_dir: Path, with_skill: bool) -> None:
    from ..roles import skills
    for evals in (root / "skills").glob("*/evals"):
        shutil.rmtree(evals)
    target = root / "skills" / skill_dir.name
    shutil.rmtree(target, ignore_errors=True)
    if not with_skill:
        return
    shutil.copytree(skill_dir, target, ignore=shutil.ignore_patterns("evals", "__pycache__", "*.pyc"))
    found = skills.find_skills(root / "skills", [skill_dir.name])
    dirs = skills.target_dirs(list(skills.CLIENT_NAMES), root, False)
    skills.install(found, dirs)
    block = skills.pointer_block(found, [d.relative_to(root).as_posix() for d in dirs])
    for name in dict.fromkeys(skills.POINTER_FILES.values()):
        skills.write_pointer(root / name, block)


def _commit(root: Path, message: str) -> str:
    if not (root / ".git").exists():
        gitops.run_git_init(root)
    gitops.run_git(root, "add", "-A")
    if gitops.run_git(root, "status", "--porcelain"):
        gitops.run_git(root, "commit", "-q", "--no-verify", "-m", message)
    return gitops.head(root)


# -- the case's files -----------------------------------------------------------------
def _write_files(case: Case, skill_dir: Path, ws: Workspace) -> None:
    for item in case.files:
        if isinstance(item, str):
            source, dest = skill_dir / item, ws.path(item[len(FILES):])
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(source, dest)
            continue
        dest = ws.path(item["path"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        if "rows" in item:
            _write_rows(dest, ws.rel(dest), [_filled(row, ws) for row in item["rows"]])
        else:
            dest.write_text(ws.fill(item["content"]), encoding="utf-8")


def _filled(value, ws: Workspace):
    if isinstance(value, str):
        return ws.fill(value)
    if isinstance(value, dict):
        return {k: _filled(v, ws) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, ws) for v in value]
    return value


def _write_rows(path: Path, rel: str, rows: list[dict]) -> None:
    """Rows of a lab table, typed by its schema (timestamps as ISO text, e.g. 2026-11-21T08:30:00Z)."""
    import pyarrow as pa

    from ..files import tables
    schema = tables.schema_for(rel)
    if schema is None:
        raise LabError("rows can only fill one of the lab's Parquet tables", rel, "rows")
    stamps = {f.name for f in schema if pa.types.is_timestamp(f.type)}
    try:
        typed = [{k: datetime.fromisoformat(v.replace("Z", "+00:00")) if k in stamps and isinstance(v, str) else v
                  for k, v in row.items()} for row in rows]
        tables.write_table(path, pa.Table.from_pylist(typed, schema=schema))
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise LabError(f"rows do not fit the table's schema: {exc}", rel, "rows") from None


def _run_setup(case: Case, ws: Workspace) -> None:
    env = base_env(ws)
    for number, command in enumerate(case.setup, 1):
        try:
            done = subprocess.run(["bash", "-c", ws.fill(command)], cwd=ws.root, env=env, capture_output=True,
                                  text=True, timeout=SETUP_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise LabError(f"setup command {number} ran over {SETUP_TIMEOUT_S}s", field="setup") from None
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise LabError(f"setup command {number} exited {done.returncode}: {last}", field="setup")


def _assign(lab: Lab, case: Case) -> Path:
    """What the runner does for a worker: its branch and worktree at the entry's base, and the
    entry `assigned` (when it is still queued). An entry already recorded gets its worktree only."""
    from ..files.yamlio import load_yaml
    from ..state.entries import load as load_entry
    from ..state.entries import transition
    entry_path, record = lab.queue / f"{case.task}.yaml", lab.experiments / case.task / "experiment.yaml"
    if entry_path.is_file():
        entry = load_entry(lab, entry_path)
        wt = worktrees.ensure(lab, case.task, entry.base)
        if entry.status == machine.QUEUED:
            transition(entry, machine.ASSIGNED, "runner", branch=worktrees.branch(case.task), worker="agent",
                       job={"backend": "local", "slot": "cpu0"})
        return wt
    if record.is_file():
        return worktrees.ensure(lab, case.task, load_yaml(record)[0].get("base") or gitops.head(lab.root))
    raise LabError(f"task {case.task}: neither queue/{case.task}.yaml nor experiments/{case.task}/experiment.yaml "
                   "is among the case's files", field="task")


# -- what the agent may use --------------------------------------------------------------
def base_env(ws: Workspace) -> dict[str, str]:
    """The environment of setup commands and the agent: the caller's, without its LAB_ variables,
    with this lab's, and the `lab` of this install first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    here = Path(sys.executable).parent
    if (here / "lab").exists():
        env["PATH"] = os.pathsep.join([str(here), env.get("PATH", "")])
    env["LAB_ROOT"] = str(ws.root)
    return env


def tree_hashes(root: Path) -> dict[str, str]:
    """{lab-relative path: sha256} of every file under root, .git excluded (worktrees included)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            path = Path(folder) / name
            if name == ".git" or path.is_symlink():
                continue
            try:   # never open a fifo or a device an agent left: reading it could block for ever
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if is_plain(path) else "not a plain file"
            except OSError as exc:
                digest = f"unreadable: {exc.strerror or exc}"
            out[path.relative_to(root).as_posix()] = digest
    return out


def is_plain(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_glob(text: str) -> bool:
    return bool(re.search(r"[*?\[]", text))
