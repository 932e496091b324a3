"""JSON Schema validation of lab documents, with problems that name line and field.

Each schema is loaded once per process and compiled to a fast gate
(runner.validation.schema_compile); jsonschema is imported and run only on documents the
gate rejects, to word the problems.
"""
from __future__ import annotations

import difflib
import json
import re
from datetime import datetime
from functools import lru_cache

from ..assets import asset_path
from ..errors import Problem
from .schema_compile import Unsupported, compile_schema, pattern_search

KINDS = ("lab", "hypothesis", "experiment", "skill", "build-toml", "skill-evals")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.I)


def _is_date_time(value) -> bool:
    """RFC 3339 date-time, e.g. 2026-11-21T08:30:00Z (checked here: jsonschema would need an extra)."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


# The formats our schemas use, checked here whatever optional packages are installed
# (jsonschema checks date-time only with an extra package).
FORMATS = {"date-time": _is_date_time}


@lru_cache(maxsize=None)
def format_checker():
    from jsonschema import FormatChecker
    checker = FormatChecker(formats=())
    for name, check in FORMATS.items():
        checker.checks(name)(check)
    return checker


@lru_cache(maxsize=None)
def load(kind: str) -> dict:
    return json.loads((asset_path("schemas") / f"{kind}.schema.json").read_text())


@lru_cache(maxsize=None)
def validator(kind: str):
    """jsonschema's Draft 2020-12 validator, imported only to word problems (the schemas
    themselves are checked by tests/test_validate.py)."""
    from jsonschema import Draft202012Validator, validators
    ecma = validators.extend(Draft202012Validator, {"pattern": _pattern})  # the gate's `pattern`, exactly
    return ecma(load(kind), format_checker=format_checker())


def _pattern(validator, pattern, instance, _schema):
    from jsonschema.exceptions import ValidationError
    if validator.is_type(instance, "string") and pattern_search(pattern)(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=None)
def gate(kind: str):
    """data -> bool, jsonschema's verdict without its cost (None if the schema cannot be compiled)."""
    try:
        return compile_schema(load(kind), FORMATS)
    except Unsupported:
        return None


def is_valid(kind: str, data) -> bool:
    fast = gate(kind)
    return fast(data) if fast is not None else validator(kind).is_valid(data)


def check(kind: str, data, shown: str, lines: dict[str, int] | None = None) -> list[Problem]:
    """Problems of `data` against the `kind` schema, one per field, ordered by line."""
    if is_valid(kind, data):
        return []
    lines = lines or {}
    problems: list[Problem] = []
    for error in validator(kind).iter_errors(data):
        for problem in _describe(error, shown, lines):
            if problem not in problems:
                problems.append(problem)
    return sorted(problems, key=lambda p: (p.line or 0, p.field))


def _dotted(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _describe(error, shown: str, lines: dict[str, int]) -> list[Problem]:
    field = _dotted(error.absolute_path)
    instance, keyword = error.instance, error.validator
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extras = [k for k in instance if k not in allowed]
        return [Problem(shown, _unknown_field(k, allowed), field=_join(field, k),
                        line=lines.get(_join(field, k), lines.get(field))) for k in extras]
    if keyword == "required" and isinstance(instance, dict):
        return [Problem(shown, "required field is missing", field=_join(field, k), line=lines.get(field) or 1)
                for k in error.validator_value if k not in instance]
    if keyword == "anyOf" and error.context and all(e.validator == "required" for e in error.context):
        options = " or ".join(k for e in error.context for k in e.validator_value)
        return [Problem(shown, f"needs at least one of: {options}", field=field or "-", line=lines.get(field))]
    if keyword in ("oneOf", "anyOf") and error.context:
        from jsonschema.exceptions import best_match
        return _describe(best_match(error.context), shown, lines)
    return [Problem(shown, _message(error), field=field or "-", line=lines.get(field))]


def _unknown_field(key, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field ({hint}allowed: {', '.join(allowed)})"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:50] + "..." + text[-6:]


def _message(error) -> str:
    """jsonschema's message, with long values abbreviated and our descriptions used as hints."""
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    keyword, value, limit = error.validator, error.instance, error.validator_value
    if keyword == "pattern" and description and description.startswith("the NAME of"):
        return f"expected {description}: this is not such a name (a value? it is not repeated here)"
    if keyword == "pattern" and description:
        article = description.startswith(("a ", "an "))
        return (f"{_short(value)} is not {description}" if article
                else f"{_short(value)} does not have the expected form ({description})")
    if keyword == "format":
        example = f", e.g. {description.split('e.g. ')[-1]}" if description and "e.g. " in description else ""
        return f"{_short(value)} is not a valid {limit}{example}"
    if keyword in ("maxLength", "minLength") and isinstance(value, str):
        bound = "at most" if keyword == "maxLength" else "at least"
        return f"{_short(value)} is too {'long' if keyword == 'maxLength' else 'short'} " \
               f"({len(value)} characters; {bound} {limit})"
    if keyword == "type":
        return f"{_short(value)} is not of type {', '.join(map(repr, [limit] if isinstance(limit, str) else limit))}"
    if keyword == "enum":
        return f"{_short(value)} is not one of {', '.join(map(repr, limit))}"
    if keyword in ("minProperties", "maxProperties") and description and isinstance(value, dict):
        return f"{description} (given: {', '.join(map(str, value)) or 'nothing'})"
    if keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") and description:
        return f"{_short(value)} is out of range: {description}"
    message = error.message
    return message if len(message) <= 200 else message[:200] + "..."
