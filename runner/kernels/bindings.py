"""The ops a torch binding registers and the ops its Python package calls."""
from __future__ import annotations

import ast
import re
from pathlib import Path

_DEF = re.compile(r"""\.def\(\s*"([A-Za-z_]\w*)\s*\(""")
_IMPL = re.compile(r"""\.impl\(\s*"([A-Za-z_]\w*)"\s*,""")


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def registered_ops(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """({op: line of its def}, {op: line of its impl}) in a binding source."""
    defs = {m.group(1): _line_of(text, m.start()) for m in _DEF.finditer(text)}
    impls = {m.group(1): _line_of(text, m.start()) for m in _IMPL.finditer(text)}
    return defs, impls


def called_ops(package: Path) -> dict[str, tuple[Path, int]]:
    """{op: (file, line)} for every `ops.<name>` in the package's Python files."""
    found: dict[str, tuple[Path, int]] = {}
    for path in sorted(package.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as exc:
            found.setdefault(f"<syntax error: {exc.msg}>", (path, exc.lineno or 1))
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ops":
                found.setdefault(node.attr, (path, node.lineno))
    return found
