"""Bringing another line of the lab (the remote's main) into this checkout's branch.

git merges the files. A state document both sides changed (a queue entry two runners claimed,
a hypothesis both planners judged) is never merged line by line: the remote's version is kept,
except a queue entry this side recorded (its record wins). Editable target files that conflict
keep the remote's version too; the caller judges this side's promotions again. Anything else
that conflicts stops the merge: a person resolves it. The merge commit is built in a private
index like every lab commit, the checkout follows (`git read-tree -m -u`, which refuses to
overwrite local changes), then HEAD moves by compare-and-swap; a marker left by a process killed
in between lets `resume` finish the move.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import git

from ..errors import LabError
from ..files.locks import FileLock
from .gitops import head, remember, run_git

STATE_DIRS = ("queue/", "hypotheses/", "experiments/")
_NO_BLOB = "0" * 40


@dataclass
class Merge:
    before: str                                             # HEAD before
    after: str                                              # HEAD after
    base: str = ""                                          # the merge base ('' when no merge)
    incoming: list[str] = field(default_factory=list)       # the remote's commits brought in
    theirs_won: list[str] = field(default_factory=list)     # state files both changed: the remote's kept
    target_lost: list[str] = field(default_factory=list)    # editable files in conflict: the remote's kept

    @property
    def moved(self) -> bool:
        return self.after != self.before


def integrate(root: Path, theirs: str, editable: list[str], message: str) -> Merge:
    """Merge commit `theirs` into HEAD (fast-forward when HEAD has nothing of its own)."""
    with FileLock(Path(root) / ".lab" / "locks" / "git.lock"):
        ours = head(root)
        if _is_ancestor(root, theirs, ours):
            return Merge(ours, ours)
        incoming = run_git(root, "rev-list", f"{ours}..{theirs}").split()
        for made in incoming:
            remember(root, made)  # another runner's commits: not an agent's doing (gitops.changed_by_others)
        if _is_ancestor(root, ours, theirs):
            _move(root, ours, theirs)
            return Merge(ours, theirs, ours, incoming)
        base = run_git(root, "merge-base", ours, theirs)
        both = _changed(root, base, ours) & _changed(root, base, theirs)
        tree, conflicted = _merge_tree(root, ours, theirs)
        merge = Merge(ours, ours, base, incoming)
        picks, unresolved = {}, []
        for path in sorted(both | conflicted):
            if path.startswith(STATE_DIRS):
                recorded_here = path.startswith("queue/") and not _blob(root, ours, path)
                picks[path] = ours if recorded_here else theirs
                if not recorded_here:
                    merge.theirs_won.append(path)
            elif path in conflicted and any(fnmatch.fnmatchcase(path, p) for p in editable):
                picks[path] = theirs
                merge.target_lost.append(path)
            elif path in conflicted:
                unresolved.append(path)
        if unresolved:
            raise LabError(f"changed on both sides: {', '.join(unresolved)}; merge {theirs[:12]} by hand "
                           "(git merge), then sync again", unresolved[0])
        commit = run_git(root, "commit-tree", _with(root, tree, picks), "-p", ours, "-p", theirs,
                         stdin=message.encode())
        remember(root, commit)
        _move(root, ours, commit)
        merge.after = commit
        return merge


def _move(root: Path, old: str, new: str) -> None:
    """The checkout and its index from `old` to `new`, then HEAD (compare-and-swap)."""
    run_git(root, "update-index", "-q", "--refresh", check_ok=(0, 1))
    marker = _marker(root)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{old} {new}\n")  # read by `resume` only once the move may have begun
    try:
        run_git(root, "read-tree", "-m", "-u", old, new)
    except git.GitCommandError as exc:
        marker.unlink()
        raise LabError(f"local changes would be overwritten by the merge: {exc.stderr.strip()}; "
                       "commit or remove them, then sync again", str(root)) from None
    try:
        run_git(root, "update-ref", "-m", "lab: sync", "HEAD", new, old)
    except git.GitCommandError:
        run_git(root, "read-tree", "-m", "-u", new, old)
        raise LabError("HEAD moved while syncing; sync again", str(root)) from None
    finally:
        marker.unlink(missing_ok=True)


def resume(root: Path) -> None:
    """Finish a move of the checkout that a killed process left half done: the merged files
    are written out and HEAD moved, so that no half-merged file is ever taken for a change."""
    try:
        old, new = _marker(root).read_text().split()
    except FileNotFoundError:
        return
    except ValueError:  # killed while writing the marker: nothing was moved yet
        _marker(root).unlink()
        return
    changed = sorted(_changed(root, old, new))
    kept = set(run_git(root, "ls-tree", "-r", "-z", "--name-only", new, "--", *changed).split("\0")) - {""} \
        if changed else set()
    if kept:
        run_git(root, "checkout", new, "--", *sorted(kept))
    for path in set(changed) - kept:
        (Path(root) / path).unlink(missing_ok=True)
        run_git(root, "rm", "-q", "--cached", "--ignore-unmatch", "--", path)
    if head(root) == old:
        run_git(root, "update-ref", "-m", "lab: sync (resumed)", "HEAD", new, old)
    _marker(root).unlink(missing_ok=True)


def _marker(root: Path) -> Path:
    return Path(root) / ".lab" / "locks" / "sync-move"


def _is_ancestor(root: Path, older: str, newer: str) -> bool:
    try:
        run_git(root, "merge-base", "--is-ancestor", older, newer)
        return True
    except git.GitCommandError:
        return False


def _changed(root: Path, since: str, until: str) -> set[str]:
    return set(run_git(root, "diff", "--name-only", "--no-renames", "-z", since, until).split("\0")) - {""}


def _merge_tree(root: Path, ours: str, theirs: str) -> tuple[str, set[str]]:
    """git's merge of the two commits as a tree (conflicted files hold markers) and the conflicted paths."""
    try:
        out = run_git(root, "merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs,
                      check_ok=(0, 1)).split("\0")
    except git.GitCommandError as exc:
        if "write-tree" in exc.stderr or "usage:" in exc.stderr:
            raise LabError("merging needs git 2.38 or newer (git merge-tree --write-tree)", str(root)) from None
        raise
    return out[0], set(out[1:]) - {""}


def _blob(root: Path, commit: str, path: str) -> str:
    """`mode sha` of a path at a commit, or '' when the commit does not have it."""
    listed = run_git(root, "ls-tree", commit, "--", path)
    return " ".join(listed.split()[:3:2]) if listed else ""


def _with(root: Path, tree: str, picks: dict[str, str]) -> str:
    """`tree` with each picked path as the picked commit has it (absent: removed)."""
    if not picks:
        return tree
    lines = []
    for path, commit in picks.items():
        blob = _blob(root, commit, path)
        lines.append(f"{blob}\t{path}" if blob else f"0 {_NO_BLOB}\t{path}")
    index = Path(root) / ".lab" / "locks" / "merge.index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        run_git(root, "read-tree", tree, env=env)
        run_git(root, "update-index", "--index-info", stdin=("\n".join(lines) + "\n").encode(), env=env)
        return run_git(root, "write-tree", env=env)
    finally:
        index.unlink(missing_ok=True)
