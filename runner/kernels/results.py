"""The benchmark results table: kernels/<name>/results/<gpu>.parquet."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..files.tables import write_table

RESULTS = pa.schema([
    ("gpu", pa.string()), ("op", pa.string()), ("impl", pa.string()), ("dtype", pa.string()),
    ("tokens", pa.int64()), ("hidden", pa.int64()), ("us_median", pa.float64()), ("us_p10", pa.float64()),
    ("us_p90", pa.float64()), ("bytes", pa.int64()), ("tb_s", pa.float64()), ("copy_tb_s", pa.float64()),
    ("copy_same_us", pa.float64()), ("graph", pa.bool_()), ("repeats", pa.int64()), ("torch", pa.string()),
    ("ok", pa.bool_()), ("note", pa.string()),
])
REQUIRED = ("gpu", "op", "impl", "dtype", "tokens", "hidden", "us_median", "tb_s", "copy_tb_s")


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def write_results(path: Path, rows: list[dict]) -> None:
    write_table(path, pa.Table.from_pylist([{k: row.get(k) for k in RESULTS.names} for row in rows], schema=RESULTS))


def read_results(path: Path) -> list[dict]:
    table = pq.read_table(path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    return table.to_pylist()

