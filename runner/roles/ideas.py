"""The offline idea library that the builtin researcher draws from.

`runner/data/ideas.yaml` lists ideas that apply to the embedded default target
(train.py): each is a change of one or a few top-level constants, with the paper
it comes from. A lab names its own library in lab.yaml (`roles.researcher.ideas`,
e.g. the finetune template's recipe ideas). The file is validated on load; a bad
entry is a LabError naming the file, the line and the field (e.g. `ideas[3].source.ref`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError
from ..files.yamlio import parse_yaml, read_text
from ..state.ids import is_safe_id

IDEAS_PATH = Path(__file__).resolve().parents[1] / "data" / "ideas.yaml"
_ARXIV = re.compile(r"^arXiv:(\d{4}\.\d{4,5})$")
_PARAM = re.compile(r"^[A-Z][A-Z0-9_]*$")
_FIELDS = {"id", "title", "params", "rationale", "expected", "source"}
_SOURCE_FIELDS = {"kind", "ref", "url", "title"}


@dataclass(frozen=True)
class Idea:
    id: str
    title: str
    params: dict
    rationale: str
    expected: str
    source: dict = field(default_factory=dict)


def load_ideas(path: Path | None = None, shown: str | None = None) -> list[Idea]:
    """Every idea in the library, in file order (the order the researcher proposes them)."""
    path = Path(path) if path else IDEAS_PATH
    shown = shown or str(path)
    data, lines = parse_yaml(read_text(path, shown=shown), shown)
    if not isinstance(data, dict) or not isinstance(data.get("ideas"), list):
        raise LabError("expected a mapping with a list under 'ideas'", shown, "ideas", lines.get("ideas"))
    ideas, seen = [], set()
    for index, entry in enumerate(data["ideas"]):
        idea = _check_entry(entry, f"ideas[{index}]", shown, lines)
        if idea.id in seen:
            raise LabError(f"duplicate idea id {idea.id!r}", shown, f"ideas[{index}].id",
                           lines.get(f"ideas[{index}].id"))
        seen.add(idea.id)
        ideas.append(idea)
    return ideas


def lab_ideas(lab) -> list[Idea]:
    """The library a lab's builtin researcher uses: its own (roles.researcher.ideas) or the package's."""
    rel = lab.config["roles"]["researcher"].get("ideas")
    return load_ideas(lab.root / rel, rel) if rel else load_ideas()


def applicable(ideas: list[Idea], current: dict) -> list[Idea]:
    """Ideas whose every param exists in `current` and that would change at least one value."""
    return [idea for idea in ideas
            if all(name in current for name in idea.params)
            and any(current[name] != value for name, value in idea.params.items())]


def _fail(message: str, shown: str, where: str, lines: dict) -> LabError:
    """A LabError at the field's line, or its closest enclosing field's line when it is missing."""
    path = where
    while path not in lines and "." in path:
        path = path.rsplit(".", 1)[0]
    return LabError(message, shown, where, lines.get(path))


def _check_entry(entry, where: str, shown: str, lines: dict) -> Idea:
    if not isinstance(entry, dict):
        raise _fail("each idea must be a mapping", shown, where, lines)
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise _fail(f"unknown field {unknown[0]!r}", shown, f"{where}.{unknown[0]}", lines)
    for name in ("id", "title", "rationale", "expected"):
        value = entry.get(name)
        if not isinstance(value, str) or not value.strip():
            raise _fail(f"{name} is required and must be a non-empty string", shown, f"{where}.{name}", lines)
    if not is_safe_id(entry["id"]):
        raise _fail(f"{entry['id']!r} is not a safe id", shown, f"{where}.id", lines)
    _check_params(entry.get("params"), f"{where}.params", shown, lines)
    _check_source(entry.get("source"), f"{where}.source", shown, lines)
    return Idea(id=entry["id"], title=entry["title"].strip(), params=dict(entry["params"]),
                rationale=entry["rationale"].strip(), expected=entry["expected"].strip(),
                source=dict(entry["source"]))


def _check_params(params, where: str, shown: str, lines: dict) -> None:
    if not isinstance(params, dict) or not params:
        raise _fail("params must be a non-empty mapping NAME: value", shown, where, lines)
    for name, value in params.items():
        if not isinstance(name, str) or not _PARAM.match(name):
            raise _fail(f"{name!r} is not an UPPER_CASE constant name", shown, f"{where}.{name}", lines)
        if not isinstance(value, (bool, int, float, str)):
            raise _fail("value must be a number, string or bool", shown, f"{where}.{name}", lines)


def _check_source(source, where: str, shown: str, lines: dict) -> None:
    if not isinstance(source, dict):
        raise _fail("source is required: {kind: paper, ref: 'arXiv:NNNN.NNNNN', url, title}", shown, where, lines)
    unknown = sorted(set(source) - _SOURCE_FIELDS)
    if unknown:
        raise _fail(f"unknown field {unknown[0]!r}", shown, f"{where}.{unknown[0]}", lines)
    if source.get("kind") != "paper":
        raise _fail("kind must be 'paper'", shown, f"{where}.kind", lines)
    for name in ("ref", "url", "title"):
        if not isinstance(source.get(name), str) or not source[name].strip():
            raise _fail(f"{name} is required and must be a non-empty string", shown, f"{where}.{name}", lines)
    match = _ARXIV.match(source["ref"])
    if not match:
        raise _fail(f"ref must look like 'arXiv:1711.05101', got {source['ref']!r}", shown, f"{where}.ref", lines)
    expected_url = f"https://arxiv.org/abs/{match.group(1)}"
    if source["url"] != expected_url:
        raise _fail(f"url must be {expected_url} (it must match ref)", shown, f"{where}.url", lines)
