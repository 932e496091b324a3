"""Reading TOML (kernel-builder's build.toml) with a field -> line map for problems."""
from __future__ import annotations

import re
import tomllib

from ..errors import LabError


def parse_toml(text: str, shown: str) -> tuple[dict, dict[str, int]]:
    """(data, {dotted.field: line}); LabError naming the line for malformed TOML."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise LabError(f"malformed TOML: {exc}", shown, line=int(found.group(1)) if found else None) from None
    return data, toml_lines(text)


def toml_lines(text: str) -> dict[str, int]:
    """Approximate field->line map for TOML: table headers and their keys."""
    lines, table = {}, ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = re.match(r"^\[+([^\]]+)\]+", line)
        if header:
            table = header.group(1).strip().replace('"', "")
            lines.setdefault(table, number)
            continue
        key = re.match(r"^([A-Za-z0-9_\-\"]+)\s*=", line)
        if key:
            name = key.group(1).replace('"', "")
            lines.setdefault(f"{table}.{name}" if table else name, number)
    return lines
