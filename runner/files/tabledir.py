"""Reading a table kept in many files (one per experiment or runner pass, compacted parts, an
earlier version's single file) as one table: each row once, in the table's order.

Files are written once, so a file whose inode, size and modification time are unchanged is not
read again: in this process's memory, and, in a process that shows the tables to a person or an
agent (status, query, report; never the runner, which decides from the files themselves), in a
snapshot under .lab/cache/tables/ that the next such process reads as one file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .tables import Table, parquet_bytes
from .yamlio import atomic_write

_FILES: dict[str, tuple[tuple, pa.Table]] = {}    # path -> (its key, its rows)
_TABLES: dict[str, tuple[tuple, pa.Table]] = {}   # table directory -> (its files' keys, the table)
_SNAPSHOTS: dict[str, Path] = {}                  # lab root -> where this process keeps snapshots
_LISTED = b"benchlab.files"                       # a snapshot's files: [path, inode, size, mtime]


class UnreadableTable(Exception):
    """A file of a table that pyarrow cannot read as that table."""

    def __init__(self, path: Path, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = path, detail


def keep_snapshots(root: Path) -> None:
    """This process only shows the tables: keep snapshots of them in the lab's runtime cache."""
    _SNAPSHOTS[str(root)] = Path(root) / ".lab" / "cache" / "tables"


def forget() -> None:
    """Drop what this process keeps in memory (a bench timing a new process's read)."""
    _FILES.clear()
    _TABLES.clear()


def table_files(root: Path, table: Table) -> list[Path]:
    """The table's files in read order: the legacy file, then the directory's by name."""
    files = [root / table.legacy] if table.legacy and (root / table.legacy).is_file() else []
    try:
        with os.scandir(root / table.directory) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(".parquet") and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        names = []
    return files + [root / table.directory / name for name in names]


def read_many(root: Path, table: Table, skipped: list[str] | None = None) -> pa.Table:
    """Every file of a table as one table, each row once. An unreadable file raises
    UnreadableTable, or with `skipped` is listed there ("path: why") and left out."""
    current = []
    for path in table_files(root, table):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # compacted away while we listed
        current.append((path, (path.relative_to(root).as_posix(), st.st_ino, st.st_size, st.st_mtime_ns)))
    keys = tuple(key for _, key in current)
    whole = _TABLES.get(str(root / table.directory))
    if whole is not None and whole[0] == keys:
        return whole[1]
    snapshot = _SNAPSHOTS[str(root)] / f"{table.name}.parquet" if str(root) in _SNAPSHOTS else None
    kept, covered = _read_snapshot(snapshot, table, set(keys)) if snapshot else (None, set())
    parts, read = ([kept] if kept is not None else []), set(covered)
    for path, key in current:
        if key in covered:
            continue
        cached = _FILES.get(str(path))
        if cached is None or cached[0] != key:
            try:
                cached = (key, pq.read_table(path, schema=table.schema))
            except Exception as exc:  # pyarrow raises several types for a bad file
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if skipped is None:
                    raise UnreadableTable(path, detail) from None
                skipped.append(f"{key[0]}: {detail}")
                continue
            _FILES[str(path)] = cached
        parts.append(cached[1])
        read.add(key)
    result = kept if len(parts) == 1 and kept is not None else _one_table(parts, table)
    if snapshot and read != covered:
        _write_snapshot(snapshot, result, sorted(read))
    _TABLES[str(root / table.directory)] = (keys, result)
    return result


def _one_table(parts: list[pa.Table], table: Table) -> pa.Table:
    result = unique_rows(pa.concat_tables(parts) if parts else table.schema.empty_table(), table.key)
    if table.order and result.num_rows > 1:
        result = result.take(pc.sort_indices(result, sort_keys=[(c, "ascending") for c in table.order]))
    return result


def unique_rows(table: pa.Table, key: tuple[str, ...] | None) -> pa.Table:
    """Each row once (the first of equal keys): rows are immutable, so a row found in two
    files (two labs compacted the same rows into different parts) is the same row."""
    if table.num_rows < 2:
        return table
    keys = _row_keys(table, list(key or table.column_names))
    if pc.count_distinct(keys).as_py() == table.num_rows:
        return table
    seen, keep = set(), []
    for index, value in enumerate(keys.to_pylist()):
        if value not in seen:
            seen.add(value)
            keep.append(index)
    return table.take(pa.array(keep, pa.int64()))


def _row_keys(table: pa.Table, columns: list[str]):
    """One text per row that differs when any of the columns does (nulls included)."""
    if len(columns) == 1:
        return table[columns[0]]
    texts = [pc.cast(table[c], pa.string()) for c in columns]
    return pc.binary_join_element_wise(*texts, "\x1f", null_handling="replace", null_replacement="\x00")


def _read_snapshot(path: Path, table: Table, present: set[tuple]) -> tuple[pa.Table | None, set[tuple]]:
    """(the table as the snapshot holds it, the file keys it covers) when every file it covers is
    still there unchanged; (None, set()) otherwise (a compaction or merge removed some)."""
    try:
        rows = pq.read_table(path)
        covered = {tuple(key) for key in json.loads(rows.schema.metadata[_LISTED])}
        rows = rows.replace_schema_metadata(None)
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException):
        return None, set()
    if not rows.schema.equals(table.schema) or not covered <= present:
        return None, set()
    return rows, covered


def _write_snapshot(path: Path, rows: pa.Table, covered: list) -> None:
    try:
        atomic_write(path, parquet_bytes(rows.replace_schema_metadata({_LISTED: json.dumps(covered)})))
    except OSError:
        pass  # a read-only lab still answers, just slower
