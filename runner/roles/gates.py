"""Gates in code: duplicate, near-duplicate, do-not-repeat, stale, single-change,
protected and editable checks on a proposed change or on a worker's diff.

The planner (builtin or agent) and the runner call these before an experiment is
queued or launched; prompts may repeat the rules, but only this module enforces
them. Every rejection names its rule and, where there is one, the earlier
experiment or hypothesis it collides with.

`History` indexes everything tried so far (hypotheses of every status, live queue
entries, every row of experiments/scores.parquet) once per reconcile pass:
building it is O(history) (parsed files and changes are cached between passes);
each check is a dictionary look-up plus a bisection among the entries that share
the same parameter names on the same base.

Configuration (all optional) lives in lab.yaml `gates:`:

    gates:
      tolerance: 0.05        # near-duplicate: relative distance of every numeric value
      max_params: 1          # single-change: parameters per change (0 disables the rule)
      declared_only: true    # single-change: parameters must be listed in target.params
      max_regions: 1         # instruction changes: changed regions of the diff (0 disables)
      region_gap: 10         # lines between two changed lines that still count as one region
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from ..repo import gitops
from ..state.fingerprint import normalise_change
from ..state.timeutil import iso

RULES = ("duplicate", "near-duplicate", "do-not-repeat", "stale", "single-change", "protected",
         "not-editable", "empty")
DEFAULTS = {"tolerance": 0.05, "max_params": 1, "declared_only": True, "max_regions": 1, "region_gap": 10}
# Statuses that never measured the change: repeating such a change is legitimate.
UNMEASURED = {"cancelled", "stale"}
DO_NOT_REPEAT = {"rejected", "duplicate"}
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


# -- the history index --------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """What the gates compare, derived once per change."""
    fingerprint: str
    shape: tuple | None       # see _shape; None when nothing numeric could be near
    numbers: tuple            # the numeric values, in the order of shape's names


def derive(change: dict) -> Key:
    norm = normalise_change(change)
    # the same canonical form as runner.state.fingerprint.fingerprint, without normalising twice
    canonical = json.dumps(norm, sort_keys=True, separators=(",", ":"))
    fp = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
    params = norm.get("params") or {}
    numeric = tuple(k for k, v in params.items() if _is_number(v))
    if not numeric:
        return Key(fp, None, ())
    fixed = tuple((k, v) for k, v in params.items() if not _is_number(v))
    return Key(fp, (numeric, fixed, norm.get("file"), norm.get("instructions")),
               tuple(float(params[k]) for k in numeric))


@lru_cache(maxsize=1 << 16)
def _derive_json(raw: str) -> Key | None:
    """Key of a change stored as JSON (scores.parquet); cached across passes."""
    try:
        change = json.loads(raw)
    except ValueError:
        return None
    return derive(change) if _is_change(change) else None


def _is_change(change) -> bool:
    return isinstance(change, dict) and bool(change.get("params") or str(change.get("instructions") or "").strip())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _close(a: tuple, b: tuple, tolerance: float) -> bool:
    for x, y in zip(a, b):
        if x == y:
            continue
        if not (math.isfinite(x) and math.isfinite(y)) or abs(x - y) > tolerance * max(abs(x), abs(y)):
            return False
    return True


def _window(x: float, tolerance: float) -> tuple[float, float]:
    """Every y with |x - y| <= tolerance * max(|x|, |y|) lies in this interval."""
    if tolerance >= 1 or not math.isfinite(x):
        return -math.inf, math.inf
    reach = tolerance * abs(x) / (1 - tolerance)
    return x - reach, x + reach


def _base_key(base: str | None) -> str:
    return (base or "")[:7].lower()


def _same_base(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    a, b = a.lower(), b.lower()
    return a.startswith(b) or b.startswith(a)


@dataclass
class Entry:
    id: str
    kind: str                # "experiment" | "hypothesis"
    status: str
    base: str | None
    key: Key
    value: float | None = None
    metric: str | None = None
    title: str | None = None
    created: str = ""
    mtime_ns: int = 0        # tie-break for two files created in the same second

    def describe(self) -> str:
        what = "hypothesis " if self.kind == "hypothesis" else ""
        detail = self.status
        if self.value is not None and self.metric:
            detail += f", {self.metric} {self.value:.6g}"
        elif self.title:
            detail += f": {self.title}"
        return f"{what}{self.id} ({detail})"


class NearIndex:
    """Entries of one shape, sorted by their first numeric value: a near-duplicate
    look-up bisects to the values that can be within tolerance, then checks them."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.entries: list[Entry] = []

    def add(self, entry: Entry) -> None:
        first = entry.key.numbers[0]
        if math.isnan(first):
            return
        at = bisect.bisect_right(self.values, first)
        self.values.insert(at, first)
        self.entries.insert(at, entry)

    def near(self, numbers: tuple, tolerance: float):
        low, high = _window(numbers[0], tolerance)
        start, stop = bisect.bisect_left(self.values, low), bisect.bisect_right(self.values, high)
        for entry in self.entries[start:stop]:
            if _close(numbers, entry.key.numbers, tolerance):
                yield entry


# Parsed YAML state files, by path and (mtime, size, inode): unchanged files are not re-read.
_YAML_CACHE: dict[str, tuple[tuple, dict | None]] = {}


def _read_yaml(path: str, st: os.stat_result) -> dict | None:
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _YAML_CACHE.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        with open(path, "rb") as handle:
            data = yaml.load(handle.read(), Loader=_Loader)
    except (OSError, yaml.YAMLError, RecursionError):
        data = None
    if isinstance(data, dict):  # a file without a change (a baseline) gets key None
        change = data.get("change")
        data = {k: data.get(k) for k in ("id", "status", "base", "title", "created")} | {
            "key": derive(change) if _is_change(change) else None}
    else:
        data = None
    _YAML_CACHE[path] = (stamp, data)
    return data


@dataclass
class History:
    """Everything tried so far, indexed for O(1) exact and O(log n + k) near-duplicate checks."""
    by_fingerprint: dict[str, list[Entry]] = field(default_factory=dict)
    near_experiments: dict[tuple, NearIndex] = field(default_factory=dict)   # (base[:7], shape)
    near_rejected: dict[tuple, NearIndex] = field(default_factory=dict)      # shape, do-not-repeat only
    hypotheses: dict[str, Entry] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, lab) -> "History":
        history = cls()
        history._load_scores(Path(lab.scores_path))
        history._load_yaml_dir(Path(lab.queue), "experiment")
        history._load_yaml_dir(Path(lab.hypotheses), "hypothesis")
        return history

    # -- loading ----------------------------------------------------------------
    def _load_scores(self, path: Path) -> None:
        if not path.exists():
            return
        wanted = ["id", "status", "change", "base", "value", "metric", "title"]
        try:
            present = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[c for c in wanted if c in present])
        except Exception:  # a corrupt table is reported by `lab validate`, not here
            self.unreadable.append(str(path))
            return
        cols = {c: (table[c].to_pylist() if c in table.column_names else [None] * table.num_rows)
                for c in wanted}
        for i, raw in enumerate(cols["change"]):
            key = _derive_json(raw) if raw else None
            if key is not None:
                self._index(Entry(cols["id"][i], "experiment", cols["status"][i] or "", cols["base"][i], key,
                                  cols["value"][i], cols["metric"][i], cols["title"][i]))

    def _load_yaml_dir(self, directory: Path, kind: str) -> None:
        if not directory.is_dir():
            return
        for item in os.scandir(directory):
            if not item.name.endswith(".yaml") or item.name.startswith("."):
                continue
            path = Path(item.path)
            data = _read_yaml(item.path, item.stat())
            if data is None:
                self.unreadable.append(item.path)
                continue
            if data["key"] is None:
                continue
            text = lambda name: data[name] if isinstance(data[name], str) else None  # noqa: E731
            self._index(Entry(text("id") or path.stem, kind, str(data["status"] or ""),
                              text("base") if kind == "experiment" else None, data["key"],
                              title=text("title"), created=str(data["created"] or ""),
                              mtime_ns=item.stat().st_mtime_ns))

    # -- the index --------------------------------------------------------------
    def add(self, exp_id: str, change: dict, base: str | None, status: str, *, kind: str = "experiment",
            value: float | None = None, metric: str | None = None, title: str | None = None) -> None:
        """Record an experiment (or, with kind="hypothesis", a hypothesis) made during this pass."""
        if _is_change(change):
            self._index(Entry(exp_id, kind, status, base, derive(change), value, metric, title, created=iso()))

    def precedes(self, entry: Entry, hypothesis_id: str | None) -> bool:
        """Whether a proposed hypothesis came before the one under review (the first of
        two identical proposals is the original; the later one is the duplicate)."""
        own = self.hypotheses.get(hypothesis_id) if hypothesis_id else None
        return own is None or (entry.created, entry.mtime_ns, entry.id) < (own.created, own.mtime_ns, own.id)

    def _index(self, entry: Entry) -> None:
        if entry.kind == "hypothesis":
            self.hypotheses[entry.id] = entry
        self.by_fingerprint.setdefault(entry.key.fingerprint, []).append(entry)
        shape = entry.key.shape
        if shape is None:
            return
        if entry.kind == "experiment":
            table, key = self.near_experiments, (_base_key(entry.base), shape)
        elif entry.status in DO_NOT_REPEAT:
            table, key = self.near_rejected, shape
        else:
            return
        index = table.get(key)
        if index is None:
            index = table[key] = NearIndex()
        index.add(entry)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_fingerprint.values())


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
    if not _is_change(change):
        return Rejection("empty", "the change has neither params nor instructions")
    key = derive(change)
    return (_single_change(lab, change, cfg)
            or _exact(history, key, excluded, hypothesis_id)
            or _near(history, key, base, excluded, tolerance))


def _single_change(lab, change: dict, cfg: dict) -> Rejection | None:
    params = change.get("params") or {}
    if cfg["max_params"] and len(params) > cfg["max_params"]:
        return Rejection("single-change", f"the change sets {len(params)} parameters ({', '.join(params)}); "
                         f"one experiment changes at most {cfg['max_params']} (gates.max_params)")
    declared = lab.config["target"].get("params") or []
    if cfg["declared_only"] and declared:
        unknown = [p for p in params if p not in declared]
        if unknown:
            return Rejection("single-change", f"{', '.join(unknown)} is not a declared parameter "
                             f"(target.params: {', '.join(declared)})")
    return None


def _exact(history: History, key: Key, excluded: set, hypothesis_id: str | None) -> Rejection | None:
    for entry in history.by_fingerprint.get(key.fingerprint, ()):
        if entry.id in excluded:
            continue
        if entry.kind == "hypothesis" and entry.status == "proposed" and not history.precedes(entry, hypothesis_id):
            continue
        if entry.kind == "hypothesis" and entry.status in DO_NOT_REPEAT:
            return Rejection("do-not-repeat", f"same change as {entry.describe()}, which is on the "
                             "do-not-repeat list", entry.id)
        if entry.kind == "experiment" and entry.status in UNMEASURED:
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
    tried = history.near_experiments.get((_base_key(base), key.shape))
    for entry in tried.near(key.numbers, tolerance) if tried else ():
        if entry.id not in excluded and entry.status not in UNMEASURED and _same_base(entry.base, base):
            return Rejection("near-duplicate", f"every value within {tolerance:.0%} of {entry.describe()} "
                             f"on the same base {base[:12]}", entry.id)
    return None


# -- stale bases ----------------------------------------------------------------
def check_stale(lab, base: str, main_head: str, main_score_commit: str | None) -> Rejection | None:
    """Stale when the editable target files at `base` differ from main's head (a
    promotion landed since), or when `base` is not a commit main descends from.

    State-only commits (YAML, Parquet) move main's head without making a base
    stale. `main_score_commit` is the commit where main's best score was measured;
    it is named in the message.
    """
    root = Path(lab.root)
    editable = list(lab.config["target"]["editable"])
    try:
        gitops.run_git(root, "merge-base", "--is-ancestor", base, main_head)
    except Exception:
        return Rejection("stale", f"base {base[:12]} is not an ancestor of main ({main_head[:12]})",
                         main_score_commit)
    changed = gitops.run_git(root, "diff", "--name-only", base, main_head, "--", *editable)
    if not changed.strip():
        return None
    files = ", ".join(changed.split())
    best = f"; main's best was measured at {main_score_commit[:12]}" if main_score_commit else ""
    return Rejection("stale", f"base {base[:12]} is no longer main: {files} changed by "
                     f"{main_head[:12]}{best}", main_score_commit)


# -- a worker's diff ----------------------------------------------------------------
def _matches(path: str, pattern: str) -> bool:
    pattern = pattern.lstrip("./") if pattern.startswith("./") else pattern
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


def worktree_changes(worktree: Path, base: str) -> tuple[list[str], str]:
    """(changed files, unified diff) of a worktree, committed or not, against `base`.
    Untracked files are added to the worktree's index so that they count."""
    worktree = Path(worktree)
    gitops.run_git(worktree, "add", "-A")
    files = gitops.run_git(worktree, "diff", "--cached", "--name-only", base).splitlines()
    diff = gitops.run_git(worktree, "diff", "--cached", base) if files else ""
    return files, diff + ("\n" if diff else "")


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
