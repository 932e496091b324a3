"""The eval cases of a skill: skills/<name>/evals/evals.json, read and checked.

The Agent Skills format (`{skill_name, evals: [{id, prompt, expected_output, files,
assertions}]}`) with assertions the lab checks by code (schemas/skill-evals.schema.json),
plus where a case runs (its `template`, `role`, `task` and `setup` commands) and a `solution`
(shell commands that pass it: `--agent reference` runs them, to show the case can pass).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError, Problem
from ..files.yamlio import parse_yaml, read_text
from ..validation import schema

EVALS = "evals/evals.json"
RESULTS = "evals/results"         # one <batch>.parquet per `lab skills eval`
FILES = "evals/files/"


@dataclass(frozen=True)
class Case:
    skill: str
    id: str
    prompt: str
    assertions: tuple[dict, ...]
    files: tuple = ()
    setup: tuple[str, ...] = ()
    template: str = "tiny-gpt"
    role: str | None = None
    task: str | None = None
    solution: tuple[str, ...] = ()


def skills_with_evals(source: Path) -> list[str]:
    """The skills under `source` that have eval cases."""
    if not source.is_dir():
        return []
    return [p.name for p in sorted(source.iterdir()) if (p / "SKILL.md").is_file() and (p / EVALS).is_file()]


def skill_version(skill_dir: Path) -> str:
    """A short hash of the skill's files (evals excluded): which version a result measured."""
    from ..roles.skills import file_hashes
    digest = hashlib.sha256(json.dumps(file_hashes(skill_dir), sort_keys=True).encode())
    return digest.hexdigest()[:12]


def load_cases(skill_dir: Path, shown: str | None = None) -> list[Case]:
    """The cases of one skill; LabError (file, line, field) if its evals.json has a problem."""
    path = skill_dir / EVALS
    shown = shown or str(path)
    if not path.is_file():
        raise LabError(f"no eval cases: {EVALS} is missing", shown)
    problems = check_evals(path, shown, skill_dir)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more: lab validate)" if len(problems) > 1 else ""
        raise LabError(first.message + more, first.path, first.field, first.line)
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Case(skill_dir.name, str(c["id"]), c["prompt"], tuple(c["assertions"]), tuple(c.get("files", ())),
                 tuple(c.get("setup", ())), c.get("template", "tiny-gpt"), c.get("role"), c.get("task"),
                 tuple(c.get("solution", ())))
            for c in data["evals"]]


def check_evals(path: Path, shown: str, skill_dir: Path | None = None) -> list[Problem]:
    """Problems of one evals.json: JSON, the schema, skill_name, unique ids, input files, patterns."""
    skill_dir = skill_dir or path.parent.parent
    try:
        text = read_text(path, shown=shown)
    except LabError as exc:
        return [exc.problem]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [Problem(shown, f"not valid JSON: {exc.msg}", line=exc.lineno)]
    lines = _lines(text, shown)
    problems = schema.check("skill-evals", data, shown, lines)
    if problems:
        return problems
    if data["skill_name"] != skill_dir.name:
        problems.append(Problem(shown, f"skill_name {data['skill_name']!r} must equal the skill's directory "
                                       f"name {skill_dir.name!r}", "skill_name", lines.get("skill_name")))
    seen: set[str] = set()
    for i, case in enumerate(data["evals"]):
        where = f"evals[{i}]"
        if str(case["id"]) in seen:
            problems.append(Problem(shown, f"duplicate case id {case['id']!r}", f"{where}.id",
                                    lines.get(f"{where}.id")))
        seen.add(str(case["id"]))
        problems += _check_files(case.get("files", []), skill_dir, shown, where, lines)
        problems += _check_patterns(case["assertions"], shown, where, lines)
    return problems


def _check_files(files: list, skill_dir: Path, shown: str, where: str, lines: dict) -> list[Problem]:
    from ..files.tables import TABLES, schema_for
    problems = []
    base = (skill_dir / FILES).resolve()
    for j, item in enumerate(files):
        field = f"{where}.files[{j}]"
        if isinstance(item, str):
            source = (skill_dir / item).resolve()
            if not (source == base or base in source.parents) or not source.exists():
                problems.append(Problem(shown, f"{item!r} is not a file or directory under the skill's {FILES}",
                                        field, lines.get(field)))
        elif "rows" in item and schema_for(item["path"]) is None:
            tables = ", ".join(t.layout for t in TABLES.values())
            problems.append(Problem(shown, f"rows can only fill a table of the lab ({tables}), not "
                                           f"{item['path']!r}", f"{field}.path", lines.get(f"{field}.path")))
    return problems


def _check_patterns(assertions: list[dict], shown: str, where: str, lines: dict) -> list[Problem]:
    problems = []
    for k, assertion in enumerate(assertions):
        field = f"{where}.assertions[{k}].pattern"
        if "pattern" in assertion:
            try:
                re.compile(assertion["pattern"])
            except re.error as exc:
                problems.append(Problem(shown, f"not a regular expression: {exc}", field, lines.get(field)))
    return problems


def _lines(text: str, shown: str) -> dict[str, int]:
    """{dotted field: line}: JSON is YAML for this purpose (the data itself comes from json)."""
    try:
        return parse_yaml(text, shown)[1]
    except LabError:
        return {}
