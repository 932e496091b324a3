"""Judging a hypothesis: the planner's verdict, checked against the state machine and the
gates, written with its review block in one atomic write. The builtin planner and
`lab hypothesis review` (an agent or a person) both judge through here.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import LabError
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..state import machine
from ..state.create import hypothesis_path, write_checked
from ..state.entries import quick_status
from ..state.timeutil import iso
from .gates import RULES, Rejection, review_change
from .history import History


def write_review(lab: Lab, path: Path, hyp: dict, status: str, *, by: str = "planner",
                 rejection: Rejection | None = None, note: str = "", agent: str | None = None) -> None:
    """Set the status and the review block (who, when, why, which rule, which original)."""
    review = {"by": by, "at": iso()}
    if agent:
        review["agent"] = agent
    if rejection:
        review.update(rule=rejection.rule, reason=rejection.message)
        if rejection.collides_with:
            review["collides_with"] = rejection.collides_with
    if note:
        review["reason"] = f"{review['reason']}; {note}" if review.get("reason") else note
    hyp["status"], hyp["review"] = status, review
    write_checked(path, "hypothesis", hyp, lab)


def judge(lab: Lab, hyp_id: str, verdict: str, *, by: str, rule: str | None = None, note: str = "",
          duplicate_of: str | None = None, agent: str | None = None) -> dict:
    """`accept`, `reject` or `duplicate` a proposed hypothesis; returns it as written.

    Acceptance goes through the gates (a duplicate, a do-not-repeat idea or two changes in
    one are refused with the rule); a rejection names a rule; a duplicate names its original."""
    path = hypothesis_path(lab, hyp_id)
    if not path.is_file():
        raise LabError(f"unknown hypothesis {hyp_id!r}", lab.rel(path), "id")
    hyp = load_yaml(path)[0]
    status = {"accept": machine.ACCEPTED, "reject": machine.REJECTED, "duplicate": machine.DUPLICATE}[verdict]
    if not machine.may_set(by, "hypothesis", hyp.get("status"), status):
        raise LabError(f"{hyp.get('status')} -> {status} is not a move the {by} may make (only proposed "
                       "hypotheses are judged)", lab.rel(path), "status")
    rejection = _verdict_reason(lab, hyp, verdict, rule, duplicate_of)
    write_review(lab, path, hyp, status, by=by, rejection=rejection, note=note, agent=agent)
    return hyp


def _verdict_reason(lab: Lab, hyp: dict, verdict: str, rule: str | None, duplicate_of: str | None):
    if verdict == "accept":
        history = History.load(lab)
        refused = review_change(lab, history, hyp.get("change") or {}, base=None, hypothesis_id=hyp["id"])
        if refused:
            raise LabError(f"the gates refuse it: {refused}", lab.rel(hypothesis_path(lab, hyp["id"])), "change")
        return None
    if verdict == "duplicate":
        if not duplicate_of or not hypothesis_path(lab, duplicate_of).is_file():
            raise LabError(f"--duplicate-of names no hypothesis ({duplicate_of!r})", field="duplicate_of")
        return Rejection("duplicate", f"duplicate of hypothesis {duplicate_of}", duplicate_of)
    if rule not in RULES:
        raise LabError(f"a rejection names its rule: one of {', '.join(RULES)}", field="rule")
    return Rejection(rule, "rejected by the planner")


def self_reviewed(lab: Lab) -> list[str]:
    """Hypotheses accepted by the very agent that wrote them: no second look was taken."""
    found = []
    for path in sorted(lab.hypotheses.glob("*.yaml")) if lab.hypotheses.is_dir() else ():
        raw = path.read_bytes()
        if b"agent:" not in raw or quick_status(path) != machine.ACCEPTED:
            continue
        try:
            data = load_yaml(path)[0]
        except LabError:
            continue
        agent = data.get("agent")
        if agent and agent == (data.get("review") or {}).get("agent"):
            found.append(data["id"])
    return found
