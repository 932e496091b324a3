"""Git operations of the lab, serialised and tolerant of concurrent committers.

Agents and humans commit on main while the runner does; every runner-side
commit takes the lab's git lock (between lab processes) and retries when
another git process holds a git lock (between the lab and everyone else).

A commit is built, not swept up: it names its paths, takes for each the content
the lab itself wrote (files/written.py) or else what is on disk, writes a tree
from HEAD plus those entries in a private index, and moves HEAD only if nobody
moved it meanwhile. A user's unrelated staged work is never swept in, and a file
someone rewrote after the runner wrote it is committed as the runner wrote it
(the caller learns which, to restore and report it). The lab records the
commits it makes (.lab/commits): any other commit on main is verified by its
content, never trusted by its committer address.
"""
from __future__ import annotations

import os
import random
import subprocess
import time
from io import BytesIO
from pathlib import Path

import git
from gitdb import IStream

from ..errors import LabError
from ..files import written
from ..files.locks import FileLock
from ..secrets import mask

AUTHOR = ("benchlab", "lab@benchlab.invalid")
LEDGER = ".lab/commits"
_LOCK_ERRORS = ("index.lock", "Unable to create", "cannot lock ref", "shallow.lock")
_NO_BLOB = "0" * 40


def repo(root: Path) -> git.Repo:
    try:
        return git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise LabError("not a git repository (a lab lives in git: run `lab init`)", str(root)) from None


def _identity_env(root: Path) -> dict:
    """Use the user's identity when configured; fall back to the lab's own."""
    env = {}
    reader = repo(root).config_reader()
    if not reader.has_option("user", "name") and "GIT_AUTHOR_NAME" not in os.environ:
        env.update(GIT_AUTHOR_NAME=AUTHOR[0], GIT_COMMITTER_NAME=AUTHOR[0])
    if not reader.has_option("user", "email") and "GIT_AUTHOR_EMAIL" not in os.environ:
        env.update(GIT_AUTHOR_EMAIL=AUTHOR[1], GIT_COMMITTER_EMAIL=AUTHOR[1])
    return env


def run_git(root: Path, *args: str, retries: int = 40, stdin: bytes | None = None,
            env: dict | None = None, check_ok: tuple[int, ...] = (0,)) -> str:
    """`git args` in root (stripped text), retrying while another process holds a git lock.
    Raises git.GitCommandError on an exit status not in `check_ok`."""
    full_env = {**os.environ, **_identity_env(root), **(env or {})}
    for attempt in range(retries):
        # its own session: a Ctrl-C sent to the runner's process group must not kill git
        # halfway through a commit; the runner finishes its pass and stops cleanly
        done = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True, env=full_env,
                              start_new_session=True)
        if done.returncode in check_ok:
            return done.stdout.decode("utf-8", "surrogateescape").rstrip("\n")
        text = done.stderr.decode("utf-8", "replace")
        if attempt + 1 < retries and any(marker in text for marker in _LOCK_ERRORS):
            time.sleep(0.05 + random.random() * 0.1 * (attempt + 1))
            continue
        raise git.GitCommandError(["git", *args], done.returncode, text, done.stdout.decode("utf-8", "replace"))
    raise AssertionError("unreachable")


def git_bytes(root: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    """`git args` in root as raw bytes (blobs, -z listings), with optional stdin; no lock retries."""
    done = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True, start_new_session=True)
    if check and done.returncode != 0:
        raise LabError(f"git {args[0]} failed: {done.stderr.decode(errors='replace').strip()}", str(root))
    return done.stdout


def head(root: Path, ref: str = "HEAD") -> str:
    return run_git(root, "rev-parse", ref)


def run_git_init(directory: Path) -> None:
    git.Repo.init(directory, initial_branch="main")


# -- commits --------------------------------------------------------------------------------
def commit_paths(root: Path, paths: list[str], message: str) -> str | None:
    """Commit exactly these lab-relative paths (files or directories; added, changed or
    deleted). Returns the new commit, or None when nothing changed."""
    root = Path(root)
    with FileLock(root / ".lab" / "locks" / "git.lock"):
        for _ in range(40):
            parent = head(root)
            lines = _index_lines(root, parent, paths)
            stale = _staged_but_gone(root, paths)   # staged by a killed process, then removed: never was
            if stale:
                run_git(root, "update-index", "--index-info", stdin=stale)
            if not lines:
                return None
            tree = _tree(root, parent, lines)
            if tree == run_git(root, "rev-parse", f"{parent}^{{tree}}"):
                return None
            commit = run_git(root, "commit-tree", tree, "-p", parent, stdin=mask(message).encode())
            try:
                run_git(root, "update-ref", "-m", "lab: commit", "HEAD", commit, parent)
            except git.GitCommandError:
                continue  # someone committed meanwhile: build again on their commit
            run_git(root, "update-index", "--index-info", stdin=lines)  # the checkout's index agrees
            remember(root, commit)
            return commit
    raise LabError("HEAD kept moving while committing; gave up after 40 tries", str(root))


def _index_lines(root: Path, parent: str, paths: list[str]) -> bytes:
    """`git update-index --index-info` lines: each file's blob (what the lab wrote, else the
    disk's), and removals of what HEAD has under a path that is gone from disk."""
    store = repo(root).odb
    in_head = set(run_git(root, "ls-tree", "-r", "-z", "--name-only", parent, "--", *paths).split("\0")) - {""}
    lines = []
    for rel in _files_under(root, paths):
        data = written.content(root / rel)
        if data is None:
            data = (root / rel).read_bytes()
        sha = store.store(IStream(b"blob", len(data), BytesIO(data))).hexsha.decode()
        mode = "100755" if os.access(root / rel, os.X_OK) else "100644"
        lines.append(f"{mode} {sha}\t{rel}")
        in_head.discard(rel)
    lines += [f"0 {_NO_BLOB}\t{rel}" for rel in sorted(in_head) if not (root / rel).is_file()]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _staged_but_gone(root: Path, paths: list[str]) -> bytes:
    """Index removals of entries under `paths` whose file is gone from disk."""
    listed = run_git(root, "ls-files", "-z", "--", *paths).split("\0")
    gone = [rel for rel in listed if rel and not (root / rel).is_file()]
    return "".join(f"0 {_NO_BLOB}\t{rel}\n" for rel in gone).encode()


def _files_under(root: Path, paths: list[str]) -> list[str]:
    files = []
    for rel in dict.fromkeys(paths):
        path = root / rel
        if path.is_dir():
            files += sorted(p.relative_to(root).as_posix() for p in path.rglob("*")
                            if p.is_file() and not p.name.endswith(".tmp"))
        elif path.is_file():
            files.append(rel)
    return files


def _tree(root: Path, parent: str, lines: bytes) -> str:
    """The tree of `parent` with these index lines applied, built in a private index."""
    index = root / ".lab" / "locks" / "commit.index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        run_git(root, "read-tree", parent, env=env)
        run_git(root, "update-index", "--index-info", stdin=lines, env=env)
        return run_git(root, "write-tree", env=env)
    finally:
        index.unlink(missing_ok=True)


def dirty(root: Path, *paths: str) -> list[str]:
    """Files under `paths` that differ from HEAD (changed, new or deleted), by path."""
    out = git_bytes(root, "status", "--porcelain=v1", "-z", "--no-renames", "-uall", "--", *paths)
    return [item[3:].decode("utf-8", "surrogateescape") for item in out.split(b"\0") if len(item) > 3]


def restore_committed(root: Path, rel: str) -> None:
    """Put a file back as HEAD has it (removing it if HEAD has none), index included."""
    if run_git(root, "ls-tree", "HEAD", "--", rel):
        run_git(root, "checkout", "HEAD", "--", rel)
    else:
        (root / rel).unlink(missing_ok=True)
        run_git(root, "rm", "-q", "--cached", "--ignore-unmatch", "--", rel)


def remember(root: Path, commit: str) -> None:
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
