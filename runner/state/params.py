"""Read and edit the top-level constants of a Python file (a training script's hyper-parameters).

Parsing is done with `ast`, never with patterns on code. An edit replaces only the
source span of the assigned value, so everything else in the file (other lines,
the name, an annotation, a trailing comment, line endings) is kept byte for byte.

A name is editable when it is assigned exactly once at module level, as
`NAME = <literal>` or `NAME: type = <literal>`, where the literal is a number,
string, bool or None (a negative number counts).
"""
from __future__ import annotations

import ast
import json
import math

from ..errors import LabError

Scalar = int | float | str | bool | None
_SCALARS = (bool, int, float, str, type(None))


def is_number(value) -> bool:
    """An int or float, not a bool (YAML and JSON read `true` as a bool, Python counts it as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse(text: str, path: str) -> ast.Module:
    try:
        return ast.parse(text, filename=path)
    except SyntaxError as exc:
        raise LabError(f"not valid Python: {exc.msg}", path, line=exc.lineno) from None
    except ValueError as exc:  # e.g. NUL bytes
        raise LabError(f"not valid Python: {exc}", path) from None


def _assignments(tree: ast.Module) -> dict[str, list[ast.AST]]:
    """Module-level assignments by name: the value node of `NAME = v`, else the statement."""
    found: dict[str, list[ast.AST]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found.setdefault(node.targets[0].id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            found.setdefault(node.target.id, []).append(node.value)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:  # tuple targets, augmented assignments: not editable
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        found.setdefault(name.id, []).append(node)  # not a literal: refused on edit
    return found


def _literal(node: ast.AST) -> tuple[bool, Scalar]:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None
    return isinstance(value, _SCALARS), value


def read_params(text: str, path: str = "<text>") -> dict[str, Scalar]:
    """{NAME: value} for every editable top-level constant (literal, assigned once)."""
    params = {}
    for name, nodes in _assignments(_parse(text, path)).items():
        ok, value = _literal(nodes[0]) if len(nodes) == 1 else (False, None)
        if ok:
            params[name] = value
    return params


def constant_lines(text: str, path: str = "<text>") -> dict[str, int]:
    """{NAME: line} of the top-level constants (UPPER_CASE, a literal, assigned once)."""
    lines = {}
    for name, nodes in _assignments(_parse(text, path)).items():
        if len(nodes) == 1 and name.isupper() and _literal(nodes[0])[0]:
            lines[name] = nodes[0].lineno
    return lines


def _family(value: Scalar) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "str" if isinstance(value, str) else "none"


def _coerce(name: str, old: Scalar, new: Scalar, path: str) -> Scalar:
    """The new value in the old value's type, or a LabError when the families differ."""
    field = f"params.{name}"
    if not isinstance(new, _SCALARS):
        raise LabError(f"{name}: value must be a number, string, bool or null, got {type(new).__name__}",
                       path, field)
    if isinstance(new, float) and not math.isfinite(new):
        raise LabError(f"{name}: {new!r} is not a finite number", path, field)
    if old is None:
        return new
    if _family(old) != _family(new):
        raise LabError(f"{name} is a {type(old).__name__} ({old!r}); refusing {type(new).__name__} {new!r}",
                       path, field)
    if isinstance(old, float):
        return float(new)
    if isinstance(old, int) and isinstance(new, float):
        if not new.is_integer():
            raise LabError(f"{name} is an int ({old!r}); refusing non-integral {new!r}", path, field)
        return int(new)
    return new


def _source_literal(value: Scalar, old_source: bytes) -> str:
    if isinstance(value, str) and old_source.lstrip(b"rRuU").startswith(b'"'):
        return json.dumps(value, ensure_ascii=False)  # keep the file's double quotes
    return repr(value)


def apply_params(text: str, params: dict, path: str = "<text>") -> str:
    """Return `text` with each NAME's assigned value replaced; nothing else changes."""
    data = text.encode("utf-8")
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    found = _assignments(_parse(text, path))
    edits = []
    for name, new in params.items():
        nodes = found.get(name)
        if not nodes:
            raise LabError(f"{name} is not a top-level constant of this file", path, f"params.{name}")
        if len(nodes) > 1:
            raise LabError(f"{name} is assigned more than once at top level; edit it by hand", path,
                           f"params.{name}")
        node = nodes[0]
        ok, old = _literal(node)
        if not ok:
            raise LabError(f"{name} is not a literal constant (line {node.lineno}); edit it by hand", path,
                           f"params.{name}", node.lineno)
        begin = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset
        edits.append((begin, end, _source_literal(_coerce(name, old, new, path), data[begin:end])))
    for begin, end, literal in sorted(edits, reverse=True):
        data = data[:begin] + literal.encode("utf-8") + data[end:]
    return data.decode("utf-8")
