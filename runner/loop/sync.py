"""`lab sync` and `lab run --sync-every`: several runners (or labs) sharing one remote.

A round: fetch the remote's branch, merge it into the lab's (repo/merge.py), judge again what
the merge moved, and push; a push that loses the race fetches and merges again after a growing
random pause. Judging again: a merged main whose target is new gets a baseline at once, and a
promotion of ours whose target the remote's replaced in a conflict is queued again on the merged
main: nothing measured on one base is trusted on another. Records of both sides stay.

Claims: the runner that dispatches an entry names itself in it (`job.runner`) and starts the job
only once that `queued -> assigned` commit is on the remote. The remote orders the pushes: when
two runners claimed the same entry, the second one's merge keeps the remote's entry, and it lets
go of its own claim and backs off.
"""
from __future__ import annotations

import random
import secrets
import socket
import time
from dataclasses import dataclass, field

import git

from ..errors import LabError
from ..files.yamlio import parse_data
from ..lab import Lab
from ..repo import merge as merging
from ..repo.gitops import git_bytes, head, run_git
from ..roles.planning import queue_baseline
from ..state import machine
from ..state.create import new_experiment
from ..state.entries import load as load_entry
from ..state.events import record_event
from .passlog import Committer, PassLog
from .scoring import base_commit, target_key

PUSH_TRIES = 8
PAUSE_S = 0.2        # the first pause after a lost push race; doubles, with jitter, up to MAX_PAUSE_S
MAX_PAUSE_S = 8.0
_REJECTED = ("[rejected]", "non-fast-forward", "fetch first", "stale info")
_QUIET = {"GIT_TERMINAL_PROMPT": "0"}   # a remote that asks for a password fails instead of waiting


def runner_id(lab: Lab) -> str:
    """This checkout's runner, named once (.lab/runner-id): how its claims are told apart."""
    path = lab.runtime / "runner-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname().split('.')[0]}-{secrets.token_hex(4)}"
        path.write_text(name + "\n")
        return name


@dataclass
class Round:
    """What one sync did (it always ends with a push that landed)."""
    merged: list[merging.Merge] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)           # claims of ours the remote gave to another runner
    requeued: list[str] = field(default_factory=list)       # promotions of ours queued again on the merged main
    baseline: str | None = None

    @property
    def moved(self) -> bool:
        return any(m.moved for m in self.merged)


class Sync:
    def __init__(self, lab: Lab, committer: Committer, remote: str = "origin"):
        self.lab, self.committer, self.remote = lab, committer, remote
        self.me = runner_id(lab)
        try:
            self.branch = run_git(lab.root, "symbolic-ref", "--short", "HEAD")
        except git.GitCommandError:
            raise LabError("the lab's checkout is on no branch: check out the branch to share, then sync",
                           str(lab.root)) from None

    def run(self) -> Round:
        """Fetch, merge, judge again, push; until a push lands (or PUSH_TRIES lost races)."""
        done = Round()
        merging.resume(self.lab.root)
        for attempt in range(PUSH_TRIES):
            theirs = self._fetch()
            if theirs:
                self._merge(theirs, done)
            if self._push():
                return done
            time.sleep(_pause(attempt))
        raise LabError(f"{self.remote} kept moving: {PUSH_TRIES} pushes lost the race; sync again later",
                       self.remote)

    def _fetch(self) -> str | None:
        tracking = f"refs/remotes/{self.remote}/{self.branch}"
        try:
            run_git(self.lab.root, "fetch", "--quiet", self.remote, f"+refs/heads/{self.branch}:{tracking}",
                    env=_QUIET)
        except git.GitCommandError as exc:
            if "couldn't find remote ref" in exc.stderr:
                return None  # an empty remote: the push creates the branch
            raise LabError(f"cannot fetch from {self.remote}: {_last_line(exc.stderr)}", self.remote) from None
        return head(self.lab.root, tracking)

    def _push(self) -> bool:
        try:
            run_git(self.lab.root, "push", "--quiet", self.remote, f"HEAD:refs/heads/{self.branch}", env=_QUIET)
            return True
        except git.GitCommandError as exc:
            if any(mark in exc.stderr for mark in _REJECTED):
                return False  # someone pushed first: fetch, merge, try again
            raise LabError(f"cannot push to {self.remote}: {_last_line(exc.stderr)}", self.remote) from None

    def _merge(self, theirs: str, done: Round) -> None:
        before = head(self.lab.root)
        merged = merging.integrate(self.lab.root, theirs, self.lab.config["target"]["editable"],
                                   f"lab: sync with {self.remote}/{self.branch}\n\n"
                                   f"merge {theirs[:12]} into {before[:12]}\n")
        if not merged.moved:
            return
        done.merged.append(merged)
        log = PassLog()
        if self.committer.on_commit:
            self.committer.on_commit(merged.after, sorted(_changed(self.lab, before, merged.after)))
        done.lost += self._lost_claims(merged)
        main = base_commit(self.lab)
        for record in self._promotions_replaced(merged):
            new_id, path = new_experiment(self.lab, record.get("hypothesis"), record.get("change") or {}, main,
                                          priority=int(record.get("priority", 0)) + 10,
                                          wave=int(record.get("wave", 0)), by="runner", requeued_from=record["id"])
            done.requeued.append(new_id)
            log.add(self.lab, path, line=f"{record['id']}: promoted on a target the remote replaced: "
                                         f"queued again on the merged main as {new_id}")
        if target_key(self.lab, main) != target_key(self.lab, base_commit(self.lab, before)):
            path = queue_baseline(self.lab, main)
            if path:
                done.baseline = path.stem
                log.add(self.lab, path, line=f"runner: the merge made a new main {main[:12]}: queued its baseline")
        self.committer.commit(log)

    def _lost_claims(self, merged: merging.Merge) -> list[str]:
        """Entries this runner had claimed whose claim the remote gave to another runner."""
        lost = []
        for path in merged.theirs_won:
            if not path.startswith("queue/"):
                continue
            ours = _document(self.lab, merged.before, path)
            mine = ours and (ours.get("job") or {}).get("runner") == self.me
            if mine and ours.get("status") in machine.ACTIVE:
                lost.append(ours["id"])
        return lost

    def _promotions_replaced(self, merged: merging.Merge) -> list[dict]:
        """Our promoted records since the merge base, when the remote's target won a conflict."""
        if not merged.target_lost:
            return []
        added = run_git(self.lab.root, "diff", "--name-only", "--diff-filter=A", "--no-renames",
                        merged.base, merged.before, "--", "experiments/*/experiment.yaml").splitlines()
        records = [_document(self.lab, merged.before, path) for path in added]
        return [r for r in records if r and r.get("kind", "experiment") == "experiment"
                and (r.get("result") or {}).get("promoted")]


class Sharing:
    """The runner's side of a shared remote: which entries are its own (it claimed them), which
    claims still wait for the remote, when to sync, and the pause after a lost claim."""

    def __init__(self, lab: Lab, committer: Committer, remote: str, every: float):
        self.lab, self.sync, self.every = lab, Sync(lab, committer, remote), every
        self.me = self.sync.me
        self.unconfirmed: set[str] = set()      # claimed here, not yet on the remote: nothing starts
        self.losses, self.pause_until, self.last, self.promoted = 0, 0.0, float("-inf"), 0
        self.error: str | None = None

    def mine(self, entry) -> bool:
        return entry.job.get("runner") in (None, self.me)

    def claimed(self, entry) -> None:
        self.unconfirmed.add(entry.id)

    def adopt(self) -> None:
        """After a restart: claims of ours not started yet wait for the next push."""
        for path in self.lab.queue.glob("*.yaml"):
            try:
                entry = load_entry(self.lab, path)
            except LabError:
                continue
            if entry.status == machine.ASSIGNED and self.mine(entry):
                self.unconfirmed.add(entry.id)

    def paused(self) -> bool:
        return time.monotonic() < self.pause_until

    def busy(self) -> bool:
        """Claims wait for a push that can still land, or a lost claim's pause runs."""
        return (bool(self.unconfirmed) and self.error is None) or self.paused()

    def due(self, promoted: int) -> bool:
        return bool(self.unconfirmed) or promoted != self.promoted or time.monotonic() - self.last >= self.every

    def round(self, promoted: int, on_lost) -> bool:
        """One sync; True if the merge moved the checkout. A failure (remote unreachable, a conflict
        only a person can resolve) is one event per distinct message; the runner goes on."""
        self.last = time.monotonic()
        try:
            done = self.sync.run()
        except (LabError, git.GitCommandError) as exc:
            message = str(exc.problem.message if isinstance(exc, LabError) else exc).strip()
            if message != self.error:
                record_event(self.lab, "warn", "sync-failed", f"{message} (running jobs go on; nothing new "
                             "starts until a push lands)")
                self.error = message
            return False
        self.error, self.promoted = None, promoted
        for exp_id in done.lost:
            self.unconfirmed.discard(exp_id)
            on_lost(exp_id)
            record_event(self.lab, "info", "claim-lost", "another runner's claim reached the remote first",
                         experiment=exp_id)
        self.losses = self.losses + 1 if done.lost else 0
        if done.lost:
            self.pause_until = time.monotonic() + _pause(self.losses)
        self.unconfirmed.clear()  # the rest are on the remote now: this runner starts them
        return done.moved


def _pause(times: int) -> float:
    """A growing random pause, so that runners that raced do not race again in step."""
    return min(MAX_PAUSE_S, PAUSE_S * 2 ** times) * (0.5 + random.random())


def _changed(lab: Lab, before: str, after: str) -> set[str]:
    return set(run_git(lab.root, "diff", "--name-only", "--no-renames", before, after).splitlines())


def _document(lab: Lab, commit: str, path: str) -> dict | None:
    try:
        data = parse_data(git_bytes(lab.root, "show", f"{commit}:{path}").decode("utf-8", "replace"), path)
    except (LabError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "git failed"
