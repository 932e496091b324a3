#!/usr/bin/env python3
"""Hand an experiment back to the runner: set `status: ready` (or `cancelled`).

usage: mark.py ready EXPERIMENT_ID
       mark.py cancelled EXPERIMENT_ID --reason "why"

Run it from the experiment's worktree (.lab/worktrees/<id>) or anywhere with
LAB_ROOT set to the lab root. It checks, before touching anything, that the
entry is still `assigned` and (for ready) that the worktree changes something
and only editable, unprotected files; then it rewrites only the `status:` line
of queue/<id>.yaml in the lab root, atomically (in place when a sandbox
leaves only the entry file writable). Exit 0 done, 2 usage, 3 stop
(the entry moved on, or the change would be refused).
"""
from __future__ import annotations

import argparse
import errno
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def lab_root(worktree: Path) -> Path:
    if os.environ.get("LAB_ROOT"):
        return Path(os.environ["LAB_ROOT"]).resolve()
    first = git(worktree, "worktree", "list", "--porcelain").splitlines()[0]
    return Path(first.split(" ", 1)[1]).resolve()  # the main checkout comes first


def changed_files(worktree: Path, base: str) -> list[str]:
    committed = git(worktree, "diff", "--name-only", base, "HEAD").split()
    pending = git(worktree, "status", "--porcelain", "--untracked-files=all").splitlines()
    return sorted(set(committed) | {line[3:].split(" -> ")[-1] for line in pending})


def refusal(files: list[str], config: dict) -> str | None:
    target = config.get("target") or {}
    editable = target.get("editable") or []
    protected = target.get("protected") or []
    if not files:
        return "the worktree changes nothing: make the change first"
    for name in files:
        if any(name == p.rstrip("/") or (p.endswith("/") and name.startswith(p)) for p in protected):
            return f"{name} is protected (lab.yaml target.protected): revert it"
        if name not in editable:
            return f"{name} is not editable (lab.yaml target.editable: {', '.join(editable)}): revert it"
    return None


def set_status(path: Path, status: str) -> None:
    text = path.read_text(encoding="utf-8")
    new, count = re.subn(r"(?m)^status:[ \t]*['\"]?assigned['\"]?[ \t]*$", f"status: {status}", text)
    if count != 1:
        sys.exit(f"stop: {path} has no single 'status: assigned' line")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno != errno.EROFS or not os.access(path, os.W_OK):
            raise
        # sandboxed: only the entry itself is writable, so no temp file beside it
        path.write_text(new, encoding="utf-8")
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(new)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("status", choices=["ready", "cancelled"])
    parser.add_argument("experiment")
    parser.add_argument("--reason", default="")
    parser.add_argument("--worktree", default=".", help="the experiment's worktree (default: here)")
    args = parser.parse_args()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.experiment) or ".." in args.experiment:
        print(f"error: {args.experiment!r} is not an experiment id", file=sys.stderr)
        return 2
    worktree = Path(args.worktree).resolve()
    root = lab_root(worktree)
    entry_path = root / "queue" / f"{args.experiment}.yaml"
    if not entry_path.is_file():
        print(f"stop: {entry_path} is gone (finished, cancelled or never queued)")
        return 3
    entry = yaml.safe_load(entry_path.read_text(encoding="utf-8")) or {}
    if entry.get("status") != "assigned":
        print(f"stop: {args.experiment} is {entry.get('status')!r}, not 'assigned'; leave it alone")
        return 3
    if args.status == "ready":
        config = yaml.safe_load((root / "lab.yaml").read_text(encoding="utf-8")) or {}
        why = refusal(changed_files(worktree, entry.get("base") or "HEAD"), config)
        if why:
            print(f"stop: {why}")
            return 3
    set_status(entry_path, args.status)
    note = f" ({args.reason})" if args.reason else ""
    print(f"{args.experiment}: assigned -> {args.status}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
