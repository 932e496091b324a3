"""What lab.yaml promises about other files: declared ranges that can hold, every constant of
the editable files declared, and the builtin researcher's own idea library loading."""
from __future__ import annotations

from pathlib import Path

from ..errors import LabError, Problem
from ..files.yamlio import parse_data, parse_yaml, read_text
from ..lab import CONFIG
from ..state.params import constant_lines, is_number, read_params
from . import schema


def idea_library_problems(root: Path) -> list[Problem]:
    """roles.researcher.ideas, loaded and checked as the builtin researcher would load it."""
    try:
        data, lines = parse_yaml(read_text(root / CONFIG, shown=CONFIG), CONFIG)
    except LabError:
        return []
    if not schema.is_valid("lab", data):
        return []  # lab.yaml's own problems (a path leaving the lab, ...) are reported as problems
    rel = ((data.get("roles") or {}).get("researcher") or {}).get("ideas")
    if not rel:
        return []
    if not (root / rel).is_file():
        field = "roles.researcher.ideas"
        return [Problem(CONFIG, f"the idea library {rel} does not exist", field, lines.get(field))]
    from ..roles.ideas import load_ideas
    try:
        load_ideas(root / rel, rel)
    except LabError as exc:
        return [exc.problem]
    return []


def undeclared_constants(root: Path) -> list[Problem]:
    """Top-level constants of the editable Python files that lab.yaml neither declares tunable
    (target.params), frozen (target.frozen) nor free (target.free): an agent cannot tell
    whether changing one is allowed, so each is named."""
    try:
        target = (parse_data(read_text(root / CONFIG, shown=CONFIG), CONFIG) or {}).get("target") or {}
    except LabError:
        return []  # lab.yaml's own problems are reported as problems
    declared = {name for key in ("params", "frozen", "free") for name in target.get(key) or []}
    warnings = []
    for rel in target.get("editable") or []:
        path = root / rel
        if not rel.endswith(".py") or not path.is_file():
            continue
        try:
            constants = constant_lines(read_text(path, shown=rel), rel)
        except LabError as exc:
            warnings.append(exc.problem)
            continue
        warnings += [Problem(rel, "a top-level constant neither tuned (target.params), frozen (target.frozen) "
                                  "nor free (target.free) in lab.yaml", field=name, line=line)
                     for name, line in sorted(constants.items(), key=lambda kv: kv[1]) if name not in declared]
    return warnings


def param_spec_problems(root: Path) -> list[Problem]:
    """Declared ranges that cannot hold: low above high, a log scale reaching 0, a range on a
    constant whose value in the editable file is not a number."""
    try:
        data, lines = parse_yaml(read_text(root / CONFIG, shown=CONFIG), CONFIG)
    except LabError:
        return []
    target = (data or {}).get("target") or {}
    specs = target.get("params")
    if not isinstance(specs, dict):
        return []
    values = _editable_values(root, target)
    problems = []
    for name, spec in specs.items():
        field, spec = f"target.params.{name}", spec or {}
        line = lines.get(field)
        if "low" in spec and "high" in spec and spec["low"] > spec["high"]:
            problems.append(Problem(CONFIG, f"low {spec['low']} is above high {spec['high']}", field, line))
        if spec.get("log") and "low" in spec and spec["low"] <= 0:
            problems.append(Problem(CONFIG, f"a log scale needs low > 0 (low is {spec['low']})", field, line))
        if "low" in spec and name in values and not is_number(values[name]):
            problems.append(Problem(CONFIG, f"a range on {name}, whose value {values[name]!r} is not a number "
                                            "(give choices instead)", field, line))
    return problems


def _editable_values(root: Path, target: dict) -> dict:
    values = {}
    for rel in target.get("editable") or []:
        if rel.endswith(".py") and (root / rel).is_file():
            try:
                values.update(read_params(read_text(root / rel, shown=rel), rel))
            except LabError:
                continue
    return values
