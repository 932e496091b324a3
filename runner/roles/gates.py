"""Gates in code: duplicate, near-duplicate, do-not-repeat, broke-constraint, single-change,
protected and editable checks on a proposed change or on a worker's diff.

The planner (builtin or agent) and the runner call these before an experiment is
queued or launched; prompts may repeat the rules, but only this module enforces
them. Every rejection names its rule and, where there is one, the earlier
experiment or hypothesis it collides with.

What was tried is looked up in `History` (history.py): each check is a
dictionary look-up plus a bisection among the entries of the same shape.

Configuration (all optional) lives in lab.yaml `gates:`:

    gates:
      tolerance: 0.05        # near-duplicate: relative distance of every numeric value
      max_params: 1          # single-change: parameters per change (0 disables the rule)
      declared_only: true    # single-change: parameters must be listed in target.params
      max_regions: 1         # instruction changes: changed regions of the diff (0 disables)
      region_gap: 10         # lines between two changed lines that still count as one region
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..state import machine
from ..state.params import is_number
from .history import History, Key, base_key, derive, is_change, same_base

# "stale" is a planner's verdict on an idea written against a best main no longer holds (the runner
# itself re-queues an experiment whose base main moved past); the others are also checked in code
RULES = ("duplicate", "near-duplicate", "do-not-repeat", "broke-constraint", "stale", "single-change", "protected",
         "not-editable", "empty")
DEFAULTS = {"tolerance": 0.05, "max_params": 1, "declared_only": True, "max_regions": 1, "region_gap": 10}


@dataclass(frozen=True)
class Rejection:
    rule: str
    message: str
    collides_with: str | None = None

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


def settings(lab) -> dict:
    """The lab's gate settings (lab.yaml `gates:` over DEFAULTS)."""
    given = lab.config.get("gates") or {}
    return {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}


# -- reviewing a proposed change ------------------------------------------------
def review_change(lab, history: History, change: dict, *, base: str | None, exclude_id=None,
                  hypothesis_id: str | None = None, tolerance: float | None = None) -> Rejection | None:
    """The first gate a proposed change fails, or None if it may be queued.

    `exclude_id` (an id or a collection of ids) skips entries that are the change
    itself (its own queue entry, the experiment it re-runs); `hypothesis_id` is the
    hypothesis the change comes from, which never collides with itself.
    """
    cfg = settings(lab)
    tolerance = cfg["tolerance"] if tolerance is None else tolerance
    excluded = {exclude_id} if isinstance(exclude_id, str) else set(exclude_id or ())
    if hypothesis_id:
        excluded.add(hypothesis_id)
    if not is_change(change):
        return Rejection("empty", "the change has neither params nor instructions")
    key = derive(change)
    return (_single_change(lab, change, cfg)
            or _broke_constraint(history, key, excluded, tolerance)
            or _exact(history, key, excluded, hypothesis_id)
            or _near(history, key, base, excluded, tolerance))


def _single_change(lab, change: dict, cfg: dict) -> Rejection | None:
    params = change.get("params") or {}
    if cfg["max_params"] and len(params) > cfg["max_params"]:
        return Rejection("single-change", f"the change sets {len(params)} parameters ({', '.join(params)}); "
                         f"one experiment changes at most {cfg['max_params']} (gates.max_params)")
    declared = lab.params
    if cfg["declared_only"] and declared:
        unknown = [p for p in params if p not in declared]
        if unknown:
            return Rejection("single-change", f"{', '.join(unknown)} is not a declared parameter "
                             f"(target.params: {', '.join(declared)})")
    for name, value in params.items():
        outside = out_of_range(declared.get(name) or {}, value)
        if outside:
            return Rejection("single-change", f"{name} = {value!r} is {outside} (target.params.{name})")
    return None


def out_of_range(spec: dict, value) -> str | None:
    """Why a value is outside its declared range or choices, None when it is inside."""
    if "choices" in spec and value not in spec["choices"]:
        return f"not one of {spec['choices']}"
    if "low" in spec and is_number(value) and not spec["low"] <= value <= spec["high"]:
        return f"outside [{spec['low']}, {spec['high']}]"
    return None


def _broke_constraint(history: History, key: Key, excluded: set, tolerance: float) -> Rejection | None:
    """A change whose result broke an objective.constraints rule (or one within tolerance of it),
    on any base: a constraint is a property of the change, not of the score it was compared with."""
    found = history.violated.get(key.fingerprint)
    if found is None and key.shape is not None and tolerance > 0 and key.shape in history.near_violated:
        found = next((e for e in history.near_violated[key.shape].near(key.numbers, tolerance)
                      if e.id not in excluded), None)
    if found is None or found.id in excluded:
        return None
    return Rejection("broke-constraint", f"{found.id} made this change and broke the constraint "
                     f"{found.constraint}", found.id)


def _exact(history: History, key: Key, excluded: set, hypothesis_id: str | None) -> Rejection | None:
    for entry in history.by_fingerprint.get(key.fingerprint, ()):
        if entry.id in excluded:
            continue
        if entry.kind == "hypothesis" and entry.status == "proposed" and not history.precedes(entry, hypothesis_id):
            continue
        if entry.kind == "hypothesis" and entry.status in machine.DO_NOT_REPEAT:
            return Rejection("do-not-repeat", f"same change as {entry.describe()}, which is on the "
                             "do-not-repeat list", entry.id)
        if entry.kind == "experiment" and entry.status in machine.UNMEASURED:
            continue
        return Rejection("duplicate", f"duplicate of {entry.describe()}", entry.id)
    return None


def _near(history: History, key: Key, base: str | None, excluded: set, tolerance: float) -> Rejection | None:
    if key.shape is None or tolerance <= 0:
        return None
    rejected = history.near_rejected.get(key.shape)
    for entry in rejected.near(key.numbers, tolerance) if rejected else ():
        if entry.id not in excluded:
            return Rejection("do-not-repeat", f"within {tolerance:.0%} of {entry.describe()}, which is on "
                             "the do-not-repeat list", entry.id)
    tried = history.near_experiments.get((base_key(base), key.shape))
    for entry in tried.near(key.numbers, tolerance) if tried else ():
        if entry.id not in excluded and entry.status not in machine.UNMEASURED and same_base(entry.base, base):
            return Rejection("near-duplicate", f"every value within {tolerance:.0%} of {entry.describe()} "
                             f"on the same base {base[:12]}", entry.id)
    return None


# -- a worker's diff ----------------------------------------------------------------
def _matches(path: str, pattern: str) -> bool:
    pattern = pattern.removeprefix("./")      # not lstrip: "./.env" names .env, not env
    if pattern.endswith("/"):
        return path.startswith(pattern)
    return path == pattern or path.startswith(pattern + "/")


def is_protected(lab, path: str) -> bool:
    return any(_matches(path, p) for p in lab.config["target"].get("protected") or [])


def is_editable(lab, path: str) -> bool:
    return any(_matches(path, p) for p in lab.config["target"]["editable"])


def check_diff(lab, changed_files: list[str], diff_text: str, change: dict) -> Rejection | None:
    """Refuse an empty diff, a protected or non-editable file, or a diff that does
    more than the one change the experiment declares."""
    files = [f for f in changed_files if f]
    if not files or not diff_text.strip():
        return Rejection("empty", "the worker's diff changes nothing")
    for path in files:
        if is_protected(lab, path):
            return Rejection("protected", f"{path} is protected (target.protected) and may not be changed")
    for path in files:
        if not is_editable(lab, path):
            editable = ", ".join(lab.config["target"]["editable"])
            return Rejection("not-editable", f"{path} is not an editable file (target.editable: {editable})")
    hunks = parse_diff(diff_text)
    return _frozen(lab, hunks) or _single_change_diff(lab, hunks, change or {})


_ASSIGN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]*)?=")


def _frozen(lab, hunks: list["Hunk"]) -> Rejection | None:
    """A frozen constant (the budget, the evaluation) is part of the evaluator: no change may touch it."""
    frozen = set(lab.config["target"].get("frozen") or [])
    for hunk in hunks:
        for line in hunk.removed + hunk.added:
            match = _ASSIGN.match(line)
            if match and match.group(1) in frozen:
                return Rejection("protected", f"{hunk.path}: {match.group(1)} is frozen (target.frozen): "
                                              "it defines the budget or the evaluation")
    return None


@dataclass
class Hunk:
    path: str
    new_start: int
    removed: list[str]
    added: list[str]
    changed_lines: list[int]     # new-file line numbers of added lines (old position for pure removals)


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_diff(diff_text: str) -> list[Hunk]:
    """Hunks of a unified diff (git diff output), with the changed lines.

    Hunk bodies are read by the line counts of their headers, so content lines
    that look like headers (`+++ x`, `--- y`) are never mistaken for them.
    """
    hunks: list[Hunk] = []
    path, hunk = "?", None
    old_left = new_left = new_line = 0
    for line in diff_text.splitlines():
        if hunk is not None and (old_left > 0 or new_left > 0):
            tag, text = line[:1], line[1:]
            if tag == "+":
                hunk.added.append(text)
                hunk.changed_lines.append(new_line)
                new_line, new_left = new_line + 1, new_left - 1
            elif tag == "-":
                hunk.removed.append(text)
                hunk.changed_lines.append(new_line)
                old_left -= 1
            elif tag == " " or line == "":
                new_line, old_left, new_left = new_line + 1, old_left - 1, new_left - 1
            continue  # "\\ No newline at end of file" and the like
        if line.startswith("diff --git ") and " b/" in line:
            path = line.split(" b/", 1)[1]
        elif line.startswith("+++ ") and not line.startswith("+++ /dev/null"):
            target = line[4:].strip()
            path = target[2:] if target.startswith("b/") else target
        elif (found := _HUNK.match(line)):
            old_left = int(found.group(2)) if found.group(2) is not None else 1
            new_left = int(found.group(4)) if found.group(4) is not None else 1
            new_line = int(found.group(3))
            hunk = Hunk(path, new_line, [], [], [])
            hunks.append(hunk)
    return hunks


def _assigns(line: str, names) -> str | None:
    """The parameter a top-level line assigns (`NAME = ...` / `NAME: T = ...`), if any."""
    found = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]*)?=(?!=)", line)
    return found.group(1) if found and found.group(1) in names else None


def _neutral(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _single_change_diff(lab, hunks: list[Hunk], change: dict) -> Rejection | None:
    cfg = settings(lab)
    params = set((change.get("params") or {}))
    instructions = (change.get("instructions") or "").strip()
    stray = []
    for hunk in hunks:
        for line in hunk.removed + hunk.added:
            if not _neutral(line) and not _assigns(line, params):
                stray.append((hunk, line))
    if params and not instructions:
        if stray:
            hunk, line = stray[0]
            return Rejection("single-change", f"{hunk.path}: the diff changes `{line.strip()[:80]}`, but the "
                             f"experiment declares only {', '.join(sorted(params))}")
        return None
    if not cfg["max_regions"]:
        return None
    regions = _regions([h for h, _ in stray] if params else hunks, cfg["region_gap"])
    if len(regions) > cfg["max_regions"]:
        where = ", ".join(f"{p}:{start}" for p, start in regions)
        return Rejection("single-change", f"the diff changes {len(regions)} separate regions ({where}); "
                         f"an instruction change may touch at most {cfg['max_regions']} (gates.max_regions)")
    return None


def _regions(hunks: list[Hunk], gap: int) -> list[tuple[str, int]]:
    """(path, first line) of each cluster of changed lines no more than `gap` apart."""
    regions: list[tuple[str, int]] = []
    last: dict[str, int] = {}
    for path, line in sorted({(h.path, n) for h in hunks for n in h.changed_lines}):
        if path not in last or line - last[path] > gap:
            regions.append((path, line))
        last[path] = line
    return regions
