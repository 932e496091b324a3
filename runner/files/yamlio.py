"""Safe YAML reading with line numbers, and atomic writes.

Lab files are written by agents, so reading is defensive: a size cap, strict
UTF-8, no anchors/aliases (YAML bombs), and a map from each field path to its
line so that every problem names file, line and field.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..errors import LabError
from ..secrets import mask_data
from . import written
from .yaml_events import MAX_DEPTH, AliasFound, NotPlain, TooDeep, parse_plain

ALIASES_REFUSED = "YAML anchors/aliases are not allowed in lab files"
TOO_DEEP = f"YAML nests too deeply (more than {MAX_DEPTH} levels)"
MAX_FILE_BYTES = 1 << 20  # lab state files are small; a larger one is a mistake or an attack

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):
    """SafeLoader that keeps timestamps as strings (schemas say string, ISO 8601)."""


_Loader.yaml_implicit_resolvers = {
    ch: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in _Base.yaml_implicit_resolvers.items()
}

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def read_text(path: Path, max_bytes: int = MAX_FILE_BYTES, shown: str | None = None) -> str:
    """Read a lab file as UTF-8, refusing oversize or undecodable content.

    Errors name the file as `shown` (e.g. a lab-relative path) when given. An
    oversize file is refused after reading at most `max_bytes` + 1 bytes.
    """
    shown = shown or str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
            size = os.fstat(handle.fileno()).st_size if len(data) > max_bytes else len(data)
    except OSError as exc:
        raise LabError(f"cannot read: {exc.strerror or exc}", shown) from None
    if size > max_bytes:
        raise LabError(f"file is {size / 1e6:.1f} MB, over the {max_bytes // 1024} KiB limit for lab files",
                       shown)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LabError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                       shown, line=line) from None


def parse_yaml(text: str, path: str) -> tuple[Any, dict[str, int]]:
    """Parse one YAML document; return (data, {dotted.field.path: line})."""
    lines: dict[str, int] = {}
    try:
        return parse_plain(text, _Loader, lines), lines
    except AliasFound as alias:
        raise LabError(ALIASES_REFUSED, path, field=alias.field or "-", line=alias.line) from None
    except TooDeep as deep:
        raise LabError(TOO_DEEP, path, line=deep.line) from None
    except NotPlain:
        return _parse_checked(text, path)


def parse_data(text: str, path: str) -> Any:
    """Parse one YAML document without the line map (the fast path of `lab validate`)."""
    try:
        return parse_plain(text, _Loader)
    except TooDeep as deep:
        raise LabError(TOO_DEEP, path, line=deep.line) from None
    except NotPlain:
        return parse_yaml(text, path)[0]


def _parse_checked(text: str, path: str) -> tuple[Any, dict[str, int]]:
    """The full loader: composes nodes, refuses aliases and merge keys, words errors."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, {}
            lines: dict[str, int] = {}
            _walk(node, "", lines, set(), path)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        deep = nesting_over(text, MAX_DEPTH)  # the parser may refuse deep nesting first, in its own words
        if deep:
            raise LabError(TOO_DEEP, path, line=deep) from None
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise LabError(f"malformed YAML: {exc.problem or exc.context}", path, line=line) from None
    except yaml.YAMLError as exc:
        raise LabError(f"malformed YAML: {exc}", path) from None
    except RecursionError:
        raise LabError(TOO_DEEP, path) from None
    return data, lines


def _walk(node: yaml.Node, prefix: str, lines: dict[str, int], seen: set[int], path: str,
          depth: int = 0) -> None:
    if depth >= MAX_DEPTH and isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        raise LabError(TOO_DEEP, path, line=node.start_mark.line + 1)
    if id(node) in seen:
        raise LabError(ALIASES_REFUSED, path,
                       field=prefix or "-", line=lines.get(prefix, node.start_mark.line + 1))
    seen.add(id(node))
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag == "tag:yaml.org,2002:merge":
                raise LabError("YAML merge keys ('<<') are not allowed in lab files", path,
                               field=prefix or "-", line=key.start_mark.line + 1)
            name = f"{prefix}.{key.value}" if prefix else str(key.value)
            line = key.start_mark.line + 1
            if name in first:  # YAML would let the last one win silently
                raise LabError(f"duplicate key (first at line {first[name]})", path, field=name, line=line)
            first[name] = lines[name] = line
            _walk(value, name, lines, seen, path, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, f"{prefix}[{index}]", lines, seen, path, depth + 1)


def nesting_over(text: str, limit: int) -> int | None:
    """The line where flow brackets or block indentation first nest deeper than `limit`, else None.

    A cheap structural scan (quotes and comments skipped), used only to word a parse error."""
    depth, quote, indents = 0, "", [-1]
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.lstrip(" ")
        if depth == 0 and not quote and stripped and not stripped.startswith("#"):
            indent = len(raw) - len(stripped)
            while indents[-1] >= indent:
                indents.pop()
            indents.append(indent)
            dashes = len(stripped) - len(stripped.lstrip("- "))  # "- - x" nests per dash
            if len(indents) - 1 + stripped[:dashes].count("-") > limit:
                return number
        for position, char in enumerate(raw):
            if quote:
                quote = "" if char == quote and (quote == "'" or raw[position - 1:position] != "\\") else quote
            elif char in "'\"" and raw[:position].rstrip()[-1:] in ("", ":", "[", "{", ",", "-"):
                quote = char  # a quote opens a scalar only where a value starts (not in "don't")
            elif char == "#" and (position == 0 or raw[position - 1] in " \t"):
                break
            elif char in "[{":
                depth += 1
                if depth > limit:
                    return number
            elif char in "]}":
                depth = max(0, depth - 1)
    return None


def load_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    return parse_yaml(read_text(path), str(path))


def dump_yaml(data: Any) -> str:
    """YAML text of `data`, secrets masked (every lab document is written through here)."""
    return yaml.dump(mask_data(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=100)


def atomic_write(path: Path, content: str | bytes) -> None:
    """Write via a temp file in the same directory, fsync, then rename over.

    One exception: a sandboxed agent is given its own entry file bind-mounted
    writable inside a read-only directory, where no temp file can be made and
    nothing can be renamed over the mount. There, and only for an existing,
    writable, regular file, the file is rewritten in place (not atomic: the lab
    re-reads a file younger than a second rather than report it half-written).
    """
    try:
        _publish(path, content, os.replace)
    except OSError as exc:
        if exc.errno not in _NO_RENAME or not _writable_in_place(Path(path)):
            raise
        _overwrite(Path(path), content.encode("utf-8") if isinstance(content, str) else content)


_NO_RENAME = (errno.EROFS, errno.EBUSY)  # a read-only directory; a rename over a mount point


def _writable_in_place(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and os.access(path, os.W_OK)


def _overwrite(path: Path, payload: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    with os.fdopen(fd, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def create_new(path: Path, content: str | bytes) -> bool:
    """Atomically create `path`; False (and nothing written) if it already exists.

    A hard link publishes the complete temp file under the new name and fails
    if the name is taken, so two writers can never overwrite each other.
    """
    try:
        _publish(path, content, os.link)
    except FileExistsError:
        return False
    return True


def _publish(path: Path, content: str | bytes, place) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        place(tmp, path)
    finally:
        try:
            os.unlink(tmp)  # after os.link; after os.replace it is already gone
        except FileNotFoundError:
            pass
    _fsync_dir(path.parent)
    written.remember(path, payload)  # a commit takes these bytes, whatever the disk says by then


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_yaml(path: Path, data: Any) -> None:
    atomic_write(path, dump_yaml(data))
