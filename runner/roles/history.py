"""Everything tried so far, indexed for the gates: hypotheses of every status, live
queue entries and every row of the scores table.

Building the index is O(history) per reconcile pass (parsed files and changes are
cached between passes); an exact look-up is a dictionary hit, a near-duplicate
look-up a bisection among the entries that share the same parameter names on
the same base.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import LabError
from ..files.yamlio import parse_data, read_text
from ..state import machine
from ..state.fingerprint import normalise_change
from ..state.params import is_number
from ..state.scores import scores
from ..state.timeutil import iso


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
    numeric = tuple(k for k, v in params.items() if is_number(v))
    if not numeric:
        return Key(fp, None, ())
    fixed = tuple((k, v) for k, v in params.items() if not is_number(v))
    return Key(fp, (numeric, fixed, norm.get("file"), norm.get("instructions")),
               tuple(float(params[k]) for k in numeric))


@lru_cache(maxsize=1 << 16)
def _derive_json(raw: str) -> Key | None:
    """Key of a change stored as JSON (the scores table); cached across passes."""
    try:
        change = json.loads(raw)
    except ValueError:
        return None
    return derive(change) if is_change(change) else None


def is_change(change) -> bool:
    return isinstance(change, dict) and bool(change.get("params") or str(change.get("instructions") or "").strip())



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


def base_key(base: str | None) -> str:
    return (base or "")[:7].lower()


def same_base(a: str | None, b: str | None) -> bool:
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
    constraint: str | None = None  # the objective.constraints rule its result broke

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
        data = parse_data(read_text(Path(path)), path)
    except LabError:
        data = None
    if isinstance(data, dict):  # a file without a change (a baseline) gets key None
        change = data.get("change")
        data = {k: data.get(k) for k in ("id", "status", "base", "title", "created")} | {
            "key": derive(change) if is_change(change) else None}
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
    violated: dict[str, Entry] = field(default_factory=dict)                 # fingerprint -> broke a constraint
    near_violated: dict[tuple, NearIndex] = field(default_factory=dict)      # shape, broke a constraint
    hypotheses: dict[str, Entry] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, lab) -> "History":
        history = cls()
        history._load_scores(lab)
        history._load_yaml_dir(Path(lab.queue), "experiment")
        history._load_yaml_dir(Path(lab.hypotheses), "hypothesis")
        return history

    # -- loading ----------------------------------------------------------------
    def _load_scores(self, lab) -> None:
        skipped: list[str] = []
        table = scores(lab, skipped)  # a corrupt file is reported by `lab validate`, not here
        self.unreadable += skipped
        cols = {c: table[c].to_pylist()
                for c in ("id", "status", "change", "base", "value", "metric", "title", "constraint")}
        for i, raw in enumerate(cols["change"]):
            key = _derive_json(raw) if raw else None
            if key is not None:
                self._index(Entry(cols["id"][i], "experiment", cols["status"][i] or "", cols["base"][i], key,
                                  cols["value"][i], cols["metric"][i], cols["title"][i],
                                  constraint=cols["constraint"][i]))

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
        if is_change(change):
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
        if entry.constraint:  # on any base: a change that broke a rule is not proposed again
            self.violated.setdefault(entry.key.fingerprint, entry)
            if shape is not None:
                self.near_violated.setdefault(shape, NearIndex()).add(entry)
        if shape is None:
            return
        if entry.kind == "experiment":
            table, key = self.near_experiments, (base_key(entry.base), shape)
        elif entry.status in machine.DO_NOT_REPEAT:
            table, key = self.near_rejected, shape
        else:
            return
        index = table.get(key)
        if index is None:
            index = table[key] = NearIndex()
        index.add(entry)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_fingerprint.values())


