"""JSON Schema validation of lab documents, with problems that name line and field."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker

from .assets import asset_path
from .problems import Problem

KINDS = ("lab", "hypothesis", "experiment", "skill", "build-toml")


@lru_cache(maxsize=None)
def validator(kind: str) -> Draft202012Validator:
    schema = json.loads((asset_path("schemas") / f"{kind}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def check(kind: str, data, shown: str, lines: dict[str, int] | None = None) -> list[Problem]:
    lines = lines or {}
    v = validator(kind)
    problems = []
    for error in sorted(v.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        problems.extend(_describe(error, shown, lines))
    return problems


def _dotted(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error, shown: str, lines: dict[str, int]) -> list[Problem]:
    field = _dotted(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extras = [k for k in instance if k not in allowed] or ["?"]
        return [Problem(shown, "unknown field (allowed: " + ", ".join(sorted(allowed)) + ")",
                        field=_join(field, k), line=lines.get(_join(field, k), lines.get(field)))
                for k in extras]
    if error.validator == "required" and isinstance(instance, dict):
        missing = [k for k in error.validator_value if k not in instance]
        return [Problem(shown, "required field is missing", field=_join(field, k), line=lines.get(field) or 1)
                for k in missing]
    if error.validator in ("oneOf", "anyOf") and error.context:
        best = min(error.context, key=lambda e: len(list(e.absolute_path)) * -1)
        return _describe(best, shown, lines)
    message = error.message
    if len(message) > 200:
        message = message[:200] + "..."
    return [Problem(shown, message, field=field or "-", line=lines.get(field))]


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
