#!/usr/bin/env python3
"""Hand an experiment back to the runner: `lab work done ID` or `lab work give-up ID`.

usage: mark.py ready EXPERIMENT_ID
       mark.py cancelled EXPERIMENT_ID --reason "why"

Kept for skills and scripts that call it by path; the checks (the entry is still
`assigned`, the change passes the runner's gates) and the write are `lab work`'s.
Run it from the experiment's worktree or anywhere with LAB_ROOT set. Exit 0 done,
2 usage, 3 stop (the entry moved on, or the change would be refused).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("status", choices=["ready", "cancelled"])
    parser.add_argument("experiment")
    parser.add_argument("--reason", default="")
    args = parser.parse_args()
    if args.status == "cancelled" and not args.reason:
        parser.error("cancelled needs --reason")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.experiment) or ".." in args.experiment:
        print(f"error: {args.experiment!r} is not an experiment id", file=sys.stderr)
        return 2
    # `lab` on PATH, else the runner importable from this Python (a venv not activated)
    lab = [shutil.which("lab")] if shutil.which("lab") else [sys.executable, "-m", "runner"]
    lab += ["-C", os.environ.get("LAB_ROOT", ".")]
    verb = ["work", "done", args.experiment] if args.status == "ready" else \
        ["work", "give-up", args.experiment, "--reason", args.reason]
    done = subprocess.run(lab + verb)
    return 0 if done.returncode == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
