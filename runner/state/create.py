"""Creating and reading the YAML state files (hypotheses, queue entries)."""
from __future__ import annotations

import math
from pathlib import Path

import yaml

from ..errors import LabError
from ..files.yamlio import create_new, dump_yaml, load_yaml, write_yaml
from ..lab import Lab
from ..validation import schema
from .fingerprint import fingerprint
from .ids import is_safe_id, new_file_id
from .timeutil import iso


def parse_params(pairs: tuple[str, ...] | list[str]) -> dict:
    """['LR=0.002', 'ACT=gelu'] -> {'LR': 0.002, 'ACT': 'gelu'} (values typed as YAML scalars)."""
    params = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise LabError(f"--param wants NAME=VALUE, got {pair!r}", field="params")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 3e-3 as a string; a user means the number
            except ValueError:
                pass
        if isinstance(value, float) and not math.isfinite(value):
            raise LabError(f"--param {name}: {raw!r} is not a finite number", field=f"params.{name}")
        if not isinstance(value, (int, float, str, bool)):
            raise LabError(f"--param {name}: value must be a number, string or bool", field=f"params.{name}")
        params[name.strip()] = value
    return params


def write_checked(path: Path, kind: str, data: dict, lab: Lab) -> Path:
    """Validate, then write atomically: an invalid document never reaches disk."""
    problems = schema.check(kind, data, lab.rel(path))
    if problems:
        raise _problem_error(problems)
    write_yaml(path, data)
    return path


def _problem_error(problems) -> LabError:
    p = problems[0]
    return LabError(p.message, p.path, p.field)


def create_checked(lab: Lab, prefix: str, directory: Path, kind: str, build, also: tuple[Path, ...] = ()
                   ) -> tuple[str, Path]:
    """Validate `build(new_id)` and create directory/<id>.yaml; never overwrites.

    The id is fresh (ids.new_file_id); should another writer take the same
    name between the check and the write, a new id is drawn.
    """
    while True:
        new = new_file_id(prefix, directory, *also)
        path = directory / f"{new}.yaml"
        data = build(new)
        problems = schema.check(kind, data, lab.rel(path))
        if problems:
            raise _problem_error(problems)
        if create_new(path, dump_yaml(data)):
            return new, path


def hypothesis_path(lab: Lab, hyp_id: str) -> Path:
    if not is_safe_id(hyp_id):
        raise LabError(f"{hyp_id!r} is not a safe id (letters, digits, '-', '_' and single dots; "
                       "no '/', '..' or spaces)", field="hypothesis")
    return lab.hypotheses / f"{hyp_id}.yaml"


def load_hypothesis(lab: Lab, hyp_id: str) -> dict:
    path = hypothesis_path(lab, hyp_id)
    if not path.exists():
        raise LabError(f"unknown hypothesis {hyp_id!r}: no such file (`lab hypothesis new` creates one)",
                       lab.rel(path), "hypothesis")
    return load_yaml(path)[0]


def title_of(lab: Lab, hyp_id: str | None) -> str:
    """A hypothesis's title, '' when it has none or cannot be read (the record still gets written)."""
    try:
        data = load_yaml(hypothesis_path(lab, hyp_id))[0] if hyp_id else None
    except LabError:
        return ""
    return str(data.get("title", "")) if isinstance(data, dict) else ""


def new_hypothesis(lab: Lab, title: str, change: dict, *, author: str = "human", rationale: str = "",
                   source: dict | None = None, expected: str = "", status: str = "proposed",
                   tags: list[str] | None = None, agent: str | None = None) -> tuple[str, Path]:
    """Create hypotheses/<new id>.yaml (validated; raises LabError naming the bad field)."""
    created = iso()
    optional = {"rationale": rationale, "source": source, "expected": expected, "tags": tags, "agent": agent}

    def build(hyp_id: str) -> dict:
        data = {"id": hyp_id, "title": title, "status": status, "author": author, "created": created,
                "change": change}
        return data | {k: v for k, v in optional.items() if v}
    return create_checked(lab, "h", lab.hypotheses, "hypothesis", build)


def new_experiment(lab: Lab, hypothesis: str | None, change: dict, base: str, *, priority: int = 0,
                   wave: int = 0, kind: str = "experiment", by: str = "planner",
                   backend: str | None = None, flavor: str | None = None,
                   requeued_from: str | None = None) -> tuple[str, Path]:
    """Create queue/<new id>.yaml, an id used neither in queue/ nor in experiments/; `backend` and
    `flavor` say where it runs when not where lab.yaml sends it; `requeued_from`: the experiment
    whose change this measures again on a newer base."""
    created = iso()
    placement = {k: v for k, v in (("backend", backend), ("flavor", flavor)) if v}

    def build(exp_id: str) -> dict:
        data = {"id": exp_id} | ({"hypothesis": hypothesis} if hypothesis else {})
        data |= {"kind": kind, "status": "queued", "base": base, "priority": priority, "wave": wave,
                 "change": change, "fingerprint": fingerprint(change) if change else "", **placement,
                 "created": created, "history": [{"status": "queued", "at": created, "by": by}]}
        return data | ({"requeued_from": requeued_from} if requeued_from else {})
    return create_checked(lab, "e", lab.queue, "experiment", build, also=(lab.experiments,))
