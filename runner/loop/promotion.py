"""Promotion: the verdict on a finished result, and merging a winner into main.

A result is promoted only if it beats the score of its base by more than the
noise margin, and only if main still holds that base; a winner measured on a
base main has moved past is re-queued on the new main instead of merged blindly.
`judge` only decides; `finish.py` carries the verdict out.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..lab import Lab
from ..repo.gitops import run_git

PROMOTE, REQUEUE, KEEP = "promote", "requeue", "keep"


@dataclass(frozen=True)
class Verdict:
    action: str          # promote | requeue | keep
    reason: str
    margin: float | None = None


def judge(lab: Lab, value: float, base_value: float | None, margin: float, base_is_main: bool) -> Verdict:
    """What to do with a finished experiment's value measured against its base."""
    if base_value is None:
        return Verdict(KEEP, "no score for the base yet (run `lab baseline`): not promoted")
    if not lab.better(value, base_value, margin):
        return Verdict(KEEP, f"not better than its base {base_value:.6g} by more than the margin {margin:.4g}",
                       margin)
    if not base_is_main:
        return Verdict(REQUEUE, f"beat its base by more than {margin:.4g} but main moved", margin)
    return Verdict(PROMOTE, f"promoted: {lab.metric} {base_value:.6g} -> {value:.6g} (margin {margin:.4g})", margin)


def merge_into_main(lab: Lab, exp_branch: str) -> list[str]:
    """Bring the editable files of the winning branch into main's checkout."""
    editable = lab.config["target"]["editable"]
    changed = run_git(lab.root, "diff", "--name-only", "HEAD", exp_branch, "--", *editable).splitlines()
    if changed:
        run_git(lab.root, "checkout", exp_branch, "--", *changed)
    return changed
