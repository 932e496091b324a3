"""objective.constraints: the guard metrics a result must satisfy to be promoted.

A rule names a printed metric and one comparison, absolute (`eq`, `le`, `ge`, `lt`, `gt`: a
number) or relative to its base's own value (`le_base`, `ge_base`: a ratio). A result that
breaks a rule, or does not print the metric a rule names, is recorded with that rule and never
promoted. A base that breaks an absolute rule is no result to protect: a candidate that keeps
every rule replaces it whatever the score (e.g. a correct kernel replaces an incorrect one).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

_OPS = {"eq": ("==", operator.eq), "le": ("<=", operator.le), "ge": (">=", operator.ge),
        "lt": ("<", operator.lt), "gt": (">", operator.gt),
        "le_base": ("<=", operator.le), "ge_base": (">=", operator.ge)}
NOT_PRINTED = "constraint metric not printed"


@dataclass(frozen=True)
class Rule:
    metric: str
    op: str          # a key of _OPS
    bound: float     # a number, or a ratio of the base's value for *_base

    @property
    def relative(self) -> bool:
        return self.op.endswith("_base")

    def __str__(self) -> str:
        bound = f"{self.bound:g} x base" if self.relative else f"{self.bound:g}"
        return f"{self.metric} {_OPS[self.op][0]} {bound}"


def rules(objective: dict) -> list[Rule]:
    """The rules of lab.yaml's objective (the schema has checked their form)."""
    found = []
    for item in objective.get("constraints") or []:
        op = next(k for k in item if k != "metric")
        found.append(Rule(item["metric"], op, float(item[op])))
    return found


def broken(rules_: list[Rule], metrics: dict, base: dict | None = None) -> str | None:
    """The first rule `metrics` breaks, as 'rule: why', or None when it keeps them all.

    `base` holds the base's metrics for relative rules (None: relative rules are skipped)."""
    for rule in rules_:
        if rule.relative and base is None:
            continue
        value = metrics.get(rule.metric)
        if value is None or value != value:
            return f"{rule}: {NOT_PRINTED} ({rule.metric})"
        bound = rule.bound
        if rule.relative:
            base_value = base.get(rule.metric)
            if base_value is None or base_value != base_value:
                return f"{rule}: {NOT_PRINTED} by the base ({rule.metric})"
            bound = rule.bound * base_value
        if not _OPS[rule.op][1](value, bound):
            return f"{rule}: got {value:g}" + (f" ({value / base_value:.3g} x base)" if rule.relative and base_value
                                               else "")
    return None


def absolute(rules_: list[Rule]) -> list[Rule]:
    return [rule for rule in rules_ if not rule.relative]
