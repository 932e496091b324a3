"""Creating and reading the YAML state files (hypotheses, queue entries)."""
from __future__ import annotations

from pathlib import Path

import yaml

from . import schema
from .fingerprint import fingerprint
from .ids import is_safe_id, new_file_id
from .lab import Lab
from .problems import LabError
from .timeutil import iso
from .yamlio import load_yaml, write_yaml


def parse_params(pairs: tuple[str, ...] | list[str]) -> dict:
    """['LR=0.002', 'ACT=gelu'] -> {'LR': 0.002, 'ACT': 'gelu'} (values typed as YAML scalars)."""
    params = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise LabError(f"--param wants NAME=VALUE, got {pair!r}", field="params")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if not isinstance(value, (int, float, str, bool)):
            raise LabError(f"--param {name}: value must be a number, string or bool", field=f"params.{name}")
        params[name.strip()] = value
    return params


def write_checked(path: Path, kind: str, data: dict, lab: Lab) -> Path:
    """Validate, then write atomically: an invalid document never reaches disk."""
    problems = schema.check(kind, data, lab.rel(path))
    if problems:
        p = problems[0]
        raise LabError(p.message, p.path, p.field)
    write_yaml(path, data)
    return path


def hypothesis_path(lab: Lab, hyp_id: str) -> Path:
    if not is_safe_id(hyp_id):
        raise LabError(f"{hyp_id!r} is not a safe id", field="hypothesis")
    return lab.hypotheses / f"{hyp_id}.yaml"


def load_hypothesis(lab: Lab, hyp_id: str) -> dict:
    path = hypothesis_path(lab, hyp_id)
    if not path.exists():
        raise LabError(f"unknown hypothesis {hyp_id!r}", lab.rel(path), "hypothesis")
    return load_yaml(path)[0]


def new_hypothesis(lab: Lab, title: str, change: dict, *, author: str = "human", rationale: str = "",
                   source: dict | None = None, expected: str = "", status: str = "proposed",
                   tags: list[str] | None = None) -> tuple[str, Path]:
    hyp_id = new_file_id("h", lab.hypotheses)
    data = {"id": hyp_id, "title": title, "status": status, "author": author, "created": iso(),
            "change": change}
    if rationale:
        data["rationale"] = rationale
    if source:
        data["source"] = source
    if expected:
        data["expected"] = expected
    if tags:
        data["tags"] = tags
    return hyp_id, write_checked(lab.hypotheses / f"{hyp_id}.yaml", "hypothesis", data, lab)


def new_experiment(lab: Lab, hypothesis: str | None, change: dict, base: str, *, priority: int = 0,
                   wave: int = 0, kind: str = "experiment", by: str = "planner") -> tuple[str, Path]:
    exp_id = new_file_id("e", lab.queue, lab.experiments)
    created = iso()
    data = {"id": exp_id}
    if hypothesis:
        data["hypothesis"] = hypothesis
    data.update({"kind": kind, "status": "queued", "base": base, "priority": priority, "wave": wave,
                 "change": change, "fingerprint": fingerprint(change) if change else "",
                 "created": created, "history": [{"status": "queued", "at": created, "by": by}]})
    return exp_id, write_checked(lab.queue / f"{exp_id}.yaml", "experiment", data, lab)
