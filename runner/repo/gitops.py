"""Git operations of the lab, serialised and tolerant of concurrent committers.

Agents and humans commit on main while the runner does; every runner-side
commit takes the lab's git lock (between lab processes) and retries when
another git process holds .git/index.lock (between the lab and everyone else).
Commits name their paths explicitly so a user's unrelated staged work is
never swept into a runner commit.
"""
from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import git

from ..errors import LabError
from ..files.locks import FileLock

AUTHOR = ("benchlab", "lab@benchlab.invalid")
LEDGER = ".lab/commits"
_LOCK_ERRORS = ("index.lock", "Unable to create", "cannot lock ref", "shallow.lock")


def repo(root: Path) -> git.Repo:
    try:
        return git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise LabError("not a git repository (a lab lives in git: run `lab init`)", str(root)) from None


def _identity_env(r: git.Repo) -> dict:
    """Use the user's identity when configured; fall back to the lab's own."""
    env = {}
    reader = r.config_reader()
    if not reader.has_option("user", "name") and "GIT_AUTHOR_NAME" not in os.environ:
        env.update(GIT_AUTHOR_NAME=AUTHOR[0], GIT_COMMITTER_NAME=AUTHOR[0])
    if not reader.has_option("user", "email") and "GIT_AUTHOR_EMAIL" not in os.environ:
        env.update(GIT_AUTHOR_EMAIL=AUTHOR[1], GIT_COMMITTER_EMAIL=AUTHOR[1])
    return env


def run_git(root: Path, *args: str, retries: int = 40) -> str:
    """`git args` in root, retrying while another process holds a git lock."""
    r = repo(root)
    env = _identity_env(r)
    for attempt in range(retries):
        try:
            with r.git.custom_environment(**env):
                # its own session: a Ctrl-C sent to the runner's process group must not kill git
                # halfway through a commit; the runner finishes its pass and stops cleanly
                return r.git.execute(["git", *args], start_new_session=True)
        except git.GitCommandError as exc:
            text = f"{exc.stderr}{exc.stdout}"
            if attempt + 1 < retries and any(marker in text for marker in _LOCK_ERRORS):
                time.sleep(0.05 + random.random() * 0.1 * (attempt + 1))
                continue
            raise
    raise AssertionError("unreachable")


def head(root: Path, ref: str = "HEAD") -> str:
    return run_git(root, "rev-parse", ref)


def commit_paths(root: Path, paths: list[str], message: str) -> str | None:
    """Commit exactly these lab-relative paths (added, changed or deleted).

    Returns the new commit, or None when nothing changed. Safe against other
    lab processes (file lock) and against other git users (lock retries).
    """
    with FileLock(root / ".lab" / "locks" / "git.lock"):
        existing = [p for p in paths if (root / p).exists()]
        if existing:
            run_git(root, "add", "-A", "--", *existing)
        gone = [p for p in paths if not (root / p).exists()]
        if gone:
            run_git(root, "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", *gone)
            # only a removal of something HEAD has is a change to commit; a file created and
            # removed between two commits (perhaps staged by a killed runner) never was
            in_head = run_git(root, "ls-tree", "-r", "--name-only", "HEAD", "--", *gone).splitlines()
            gone = [p for p in gone if any(f == p or f.startswith(p.rstrip("/") + "/") for f in in_head)]
        paths = existing + gone
        if not paths or not run_git(root, "diff", "--cached", "--name-only", "--", *paths):
            return None
        run_git(root, "commit", "-q", "--no-verify", "-m", message, "--", *paths)
        commit = head(root)
        _remember(root, commit)
        return commit


def _remember(root: Path, commit: str) -> None:
    """The lab's own commits, so that a commit anyone else made (whatever its committer
    address says) is verified by its content, never trusted by its name."""
    ledger = root / LEDGER
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger, "a") as handle:
        handle.write(commit + "\n")


def lab_commits(root: Path) -> set[str]:
    try:
        return set((root / LEDGER).read_text().split())
    except FileNotFoundError:
        return set()


def changed_by_others(root: Path, since: str, until: str) -> set[str]:
    """Paths changed by commits in since..until that the lab did not make itself."""
    if since == until:
        return set()
    out = git_bytes(root, "log", "--format=%x00%H", "--name-only", "--no-renames", f"{since}..{until}",
                    check=False).decode("utf-8", "surrogateescape")
    ours, paths = lab_commits(root), set()
    for chunk in out.split("\0")[1:]:
        lines = [line for line in chunk.splitlines() if line]
        if lines and lines[0] not in ours:
            paths.update(lines[1:])
    return paths


def run_git_init(directory: Path) -> None:
    git.Repo.init(directory, initial_branch="main")


def git_bytes(root: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    """`git args` in root as raw bytes (blobs, -z listings), with optional stdin; no lock retries."""
    done = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True, start_new_session=True)
    if check and done.returncode != 0:
        raise LabError(f"git {args[0]} failed: {done.stderr.decode(errors='replace').strip()}", str(root))
    return done.stdout
