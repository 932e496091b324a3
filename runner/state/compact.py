"""Compaction: a table's small files folded into one part named by its content, and an older
lab's layout (experiments/scores.parquet, events.parquet, a committed LEADERBOARD.md) updated.

Deterministic: the rows of the folded files, each once, in a fixed order, written with fixed
options, in a file named by a hash of its bytes. Two labs that compact the same files write the
same file under the same name (git sees one file); compactions of different files still merge,
since each only deletes small files and adds a part, and readers read a row found in two
parts once. Only committed files are folded, so what a compaction removes is in git already.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..files.tabledir import table_files, unique_rows
from ..files.tables import PART_PREFIX, TABLES, Table, write_part
from ..lab import Lab
from ..repo import gitops
from ..scaffold import merge_gitignore

SMALL_FILES = 32    # the owner's runner compacts a table once it holds this many small files
MAX_PARTS = 8       # ... and folds its parts into one once this many piled up
FOLDED = tuple(name for name, table in TABLES.items() if table.directory)
LEADERBOARD = "experiments/LEADERBOARD.md"


def migrate(lab: Lab) -> list[str]:
    """An earlier version's layout brought up to date: each committed single-file table moved into
    its directory as one part, and a committed LEADERBOARD.md (a view the runner regenerates: in
    git it would make every merge conflict) removed from git and ignored. The paths to commit."""
    changed = []
    for name in FOLDED:
        table = TABLES[name]
        legacy = lab.root / table.legacy
        if legacy.is_file() and table.legacy in _committed(lab, [table.legacy]):
            changed += _fold(lab, table, [legacy])
    if gitops.run_git(lab.root, "ls-files", "--", LEADERBOARD):
        (lab.root / LEADERBOARD).unlink(missing_ok=True)
        changed += [LEADERBOARD, merge_gitignore(lab.root / ".gitignore")]
    return changed


def compact(lab: Lab, full: bool = False) -> list[str]:
    """Fold small files into a part once a table holds SMALL_FILES of them (with `full`: every
    committed file of the table into one part). Returns the lab-relative paths it changed."""
    changed = []
    for name in FOLDED:
        table = TABLES[name]
        files = table_files(lab.root, table)
        small = [p for p in files if not _is_part(p)]
        if not full and len(small) < SMALL_FILES:
            continue
        committed = _committed(lab, [table.directory, table.legacy])
        files = [p for p in files if lab.rel(p) in committed]
        small = [p for p in files if not _is_part(p)]
        parts = [p for p in files if _is_part(p)]
        if full:
            fold = files
        elif len(small) >= SMALL_FILES:
            fold = files if len(parts) >= MAX_PARTS else small
        else:
            fold = []
        if len(fold) > 1 or any(not _is_part(p) for p in fold):
            changed += _fold(lab, table, fold)
    return changed


def _fold(lab: Lab, table: Table, files: list[Path]) -> list[str]:
    """Write the files' rows as one part, then delete them; the paths changed."""
    rows = unique_rows(pa.concat_tables([pq.read_table(p, schema=table.schema) for p in files]), table.key)
    order = table.key or tuple(rows.column_names)
    rows = rows.take(pc.sort_indices(rows, sort_keys=[(c, "ascending") for c in order]))
    directory = lab.root / table.directory
    directory.mkdir(parents=True, exist_ok=True)
    part = write_part(directory, rows)
    for path in files:
        if path != part:
            path.unlink()
    return list(dict.fromkeys([lab.rel(part), *(lab.rel(p) for p in files)]))


def _is_part(path: Path) -> bool:
    return path.name.startswith(PART_PREFIX)


def _committed(lab: Lab, paths: list[str]) -> set[str]:
    """Of the files under `paths`, those HEAD holds as they are on disk."""
    listed = gitops.git_bytes(lab.root, "ls-files", "-z", "--", *paths).decode().split("\0")
    return set(listed) - {""} - set(gitops.dirty(lab.root, *paths))
