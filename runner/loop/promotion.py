"""Promotion: the verdict on a finished result, and merging a winner into main.

A result is promoted only if it keeps every constraint, beats the score of its
base by more than the noise margin, and main still holds that base; a winner
measured on a base main has moved past is re-queued on the new main instead of
merged blindly. A winner whose gain is below `objective.confirm_below` stdevs of
the difference is first re-run on another seed (CONFIRM) and promoted only if
the mean of both runs still wins. `judge` only decides; `finish.py` carries the
verdict out.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..lab import Lab
from ..repo.gitops import run_git
from .noise import EVIDENCE_Z
from .scoring import Noise

PROMOTE, REQUEUE, KEEP, CONFIRM = "promote", "requeue", "keep", "confirm"
STRONG, SINGLE_RUN, CONFIRMED = "strong", "single-run", "confirmed"   # a promotion's evidence


@dataclass(frozen=True)
class Verdict:
    action: str                  # promote | requeue | keep | confirm
    reason: str
    margin: float | None = None
    z: float | None = None       # the gain in stdevs of the difference (None: σ not measured)
    evidence: str | None = None  # of a promotion: strong (z >= 3), single-run, confirmed
    constraint: str | None = None  # the rule the result broke


def judge(lab: Lab, value: float, base_value: float | None, noise: Noise, base_is_main: bool, *,
          broken: str | None = None, base_broken: str | None = None, confirming: bool = False) -> Verdict:
    """What to do with a finished experiment's value (the mean of its runs) measured against its base.

    broken: the constraint the result breaks; base_broken: the absolute one its base breaks;
    confirming: the value already averages a confirmation run."""
    if base_value is None:
        return Verdict(KEEP, "no score for the base yet (run `lab baseline`): not promoted")
    if broken:
        return Verdict(KEEP, f"violates the constraint {broken}: never promoted", noise.margin, constraint=broken)
    margin = noise.margin
    z = noise.z(base_value - value if lab.minimize else value - base_value)
    shown = f" (z {z:.2f})" if z is not None else ""
    if base_broken:
        why = f"keeps every constraint where its base breaks {base_broken}"
    elif lab.better(value, base_value, margin):
        why = f"{lab.metric} {base_value:.6g} -> {value:.6g}, margin {margin:.4g}{shown}"
    else:
        return Verdict(KEEP, f"not better than its base {base_value:.6g} by more than the margin {margin:.4g}"
                       f"{shown}", margin, z)
    if not base_is_main:
        return Verdict(REQUEUE, f"beat its base ({why}) but main moved", margin, z)
    threshold = lab.config["objective"].get("confirm_below")
    if threshold and not confirming and not base_broken and (z is None or z < threshold):
        return Verdict(CONFIRM, f"beat its base ({why}) below z {threshold:g}: confirming on another seed",
                       margin, z)
    evidence = CONFIRMED if confirming else STRONG if z is not None and z >= EVIDENCE_Z else SINGLE_RUN
    return Verdict(PROMOTE, f"promoted ({evidence}): {why}", margin, z, evidence)


def merge_into_main(lab: Lab, exp_branch: str) -> list[str]:
    """Bring the editable files of the winning branch into main's checkout."""
    editable = lab.config["target"]["editable"]
    changed = run_git(lab.root, "diff", "--name-only", "HEAD", exp_branch, "--", *editable).splitlines()
    if changed:
        run_git(lab.root, "checkout", exp_branch, "--", *changed)
    return changed
