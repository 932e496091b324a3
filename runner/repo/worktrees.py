"""One branch `exp/<id>` and one worktree `.lab/worktrees/<id>` per experiment."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..lab import Lab
from .gitops import run_git


def branch(exp_id: str) -> str:
    return f"exp/{exp_id}"


def path(lab: Lab, exp_id: str) -> Path:
    return lab.worktrees / exp_id


def ensure(lab: Lab, exp_id: str, base: str) -> Path:
    """Create the worktree on exp/<id> at base; idempotent after a crash halfway."""
    wt = path(lab, exp_id)
    if (wt / ".git").exists():
        return wt
    if wt.exists():
        _remove_half_made(wt)
    run_git(lab.root, "worktree", "prune")
    lab.worktrees.mkdir(parents=True, exist_ok=True)
    exists = run_git(lab.root, "branch", "--list", branch(exp_id))
    if exists:
        run_git(lab.root, "worktree", "add", "-q", str(wt), branch(exp_id))
    else:
        run_git(lab.root, "worktree", "add", "-q", "-b", branch(exp_id), str(wt), base)
    return wt


def _remove_half_made(wt: Path, patience_s: float = 10.0) -> None:
    """Remove a worktree a killed runner left half-made. Its `git worktree add` may
    outlive it for a moment and keep writing files, so retry until the dir stays gone."""
    deadline = time.monotonic() + patience_s
    while wt.exists():
        shutil.rmtree(wt, ignore_errors=True)
        if time.monotonic() > deadline:
            shutil.rmtree(wt)  # let the error say what is in the way
        time.sleep(0.05)


def remove(lab: Lab, exp_id: str) -> None:
    """Remove the worktree, keep the branch."""
    wt = path(lab, exp_id)
    if wt.exists():
        try:
            run_git(lab.root, "worktree", "remove", "--force", str(wt))
        except Exception:
            shutil.rmtree(wt, ignore_errors=True)
    run_git(lab.root, "worktree", "prune")


def commit_leftovers(wt: Path, exp_id: str, who: str) -> None:
    """Commit whatever the worker left uncommitted in its worktree."""
    run_git(wt, "add", "-A")
    if run_git(wt, "status", "--porcelain"):
        run_git(wt, "commit", "-q", "--no-verify", "-m", f"{exp_id}: changes by {who}")


def changes(lab: Lab, exp_id: str, base: str) -> tuple[list[str], str]:
    """(changed files, unified diff) of exp/<id> against its base."""
    files = run_git(lab.root, "diff", "--name-only", base, branch(exp_id)).splitlines()
    diff = run_git(lab.root, "diff", base, branch(exp_id)) if files else ""
    return files, diff + ("\n" if diff else "")


def listed(lab: Lab) -> list[str]:
    return sorted(p.name for p in lab.worktrees.iterdir()) if lab.worktrees.is_dir() else []


def changes_in_worktree(wt: Path, base: str) -> tuple[list[str], str]:
    """(changed files, diff) of a worktree against `base`, committed or not (new files count),
    staged in a scratch copy of its index: the worker's own index and files stay as they are."""
    index = Path(run_git(wt, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    scratch = index.with_name(f"{index.name}.lab-check")
    try:
        env = {"GIT_INDEX_FILE": str(scratch)}
        run_git(wt, "read-tree", "HEAD", env=env)   # a fresh index: no cached stat can hide a change
        run_git(wt, "add", "-A", env=env)
        files = run_git(wt, "diff", "--cached", "--name-only", base, env=env).splitlines()
        diff = run_git(wt, "diff", "--cached", base, env=env) if files else ""
    finally:
        scratch.unlink(missing_ok=True)
    return files, diff + ("\n" if diff else "")
