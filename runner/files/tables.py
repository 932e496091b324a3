"""The Arrow schemas of every Parquet table, defined once.

`schemas/tables.md` is generated from this module (`lab schema tables`) and a
test checks that it matches, so the documentation cannot drift from the code.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import Problem
from ..secrets import mask_data
from .yamlio import atomic_write

_TS = pa.timestamp("us", tz="UTC")

SCORES = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("hypothesis", pa.string()),
    pa.field("kind", pa.string(), nullable=False),          # experiment | baseline
    pa.field("status", pa.string(), nullable=False),        # terminal experiment status
    pa.field("title", pa.string()),
    pa.field("change", pa.string()),                        # JSON of the change
    pa.field("fingerprint", pa.string()),
    pa.field("base", pa.string()),                          # commit measured against
    pa.field("commit", pa.string()),                        # head of exp/<id>
    pa.field("target", pa.string()),                        # content key of the editable files measured
    pa.field("metric", pa.string()),
    pa.field("value", pa.float64()),                        # null when no valid metric
    pa.field("base_value", pa.float64()),
    pa.field("delta", pa.float64()),                        # value - base_value
    pa.field("promoted", pa.bool_(), nullable=False),
    pa.field("slot", pa.string()),
    pa.field("worker", pa.string()),
    pa.field("wave", pa.int64()),
    pa.field("started", _TS),
    pa.field("finished", _TS),
    pa.field("duration_s", pa.float64()),
    pa.field("reason", pa.string()),
    pa.field("seed", pa.int64()),                           # LAB_SEED of the run
    pa.field("cost", pa.float64()),                         # the objective.cost metric it printed
    pa.field("constraint", pa.string()),                    # the objective.constraints rule it broke
    pa.field("z", pa.float64()),                            # gain / stdev of the difference
    pa.field("margin", pa.float64()),                       # the noise margin it was judged with
    pa.field("evidence", pa.string()),                      # promotions: strong | single-run | confirmed
])

# scores columns added after the first release: an older table lacks them and reads them as null
LATER_SCORES = {"seed", "cost", "constraint", "z", "margin", "evidence"}

METRICS = pa.schema([
    pa.field("step", pa.int64()),
    pa.field("time_s", pa.float64()),
    pa.field("name", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("summary", pa.bool_(), nullable=False),        # a final `name: value` line
])

EVENTS = pa.schema([
    pa.field("at", _TS, nullable=False),
    pa.field("level", pa.string(), nullable=False),         # info | warn | error
    pa.field("kind", pa.string(), nullable=False),          # e.g. refused, nan, timeout, promoted
    pa.field("experiment", pa.string()),
    pa.field("hypothesis", pa.string()),
    pa.field("path", pa.string()),
    pa.field("message", pa.string(), nullable=False),
])

SKILL_EVALS = pa.schema([
    pa.field("skill", pa.string(), nullable=False),
    pa.field("case", pa.string(), nullable=False),           # the case id in evals/evals.json
    pa.field("agent", pa.string(), nullable=False),          # the --agent given (a role or a command)
    pa.field("with_skill", pa.bool_(), nullable=False),      # false: the baseline, skill absent
    pa.field("run", pa.int64(), nullable=False),             # 1..N within the batch
    pa.field("passed", pa.bool_(), nullable=False),          # state finished and every assertion held
    pa.field("state", pa.string(), nullable=False),          # finished | failed | timed_out | refused | error
    pa.field("assertions", pa.int64(), nullable=False),
    pa.field("failed", pa.list_(pa.string())),               # the assertions that did not hold
    pa.field("exit_code", pa.int64()),
    pa.field("duration_s", pa.float64()),
    pa.field("tokens_in", pa.int64()),                       # from the agent's JSON output; null if none
    pa.field("tokens_out", pa.int64()),
    pa.field("turns", pa.int64()),
    pa.field("cost_usd", pa.float64()),
    pa.field("outside", pa.list_(pa.string())),              # paths outside its lab the agent changed
    pa.field("skill_version", pa.string()),                  # hash of the skill's files
    pa.field("batch", pa.string(), nullable=False),          # one `lab skills eval` invocation
    pa.field("started", _TS, nullable=False),
    pa.field("log", pa.string()),                            # the agent's output, lab-relative
])

TABLES = {
    "experiments/scores.parquet": ("scores", SCORES, "one row per finished experiment or baseline"),
    "experiments/<id>/metrics.parquet": ("metrics", METRICS, "step metrics and summary lines of one run"),
    "experiments/events.parquet": ("events", EVENTS, "anomalies, refusals, failures, promotions"),
    "skills/<name>/evals/results.parquet": ("skill_evals", SKILL_EVALS,
                                            "one row per agent run of a skill eval case (`lab skills eval`)"),
}


def schema_for(relpath: str) -> pa.Schema | None:
    """The Arrow schema a Parquet file at this lab-relative path must have."""
    parts = relpath.split("/")
    if relpath == "experiments/scores.parquet":
        return SCORES
    if relpath == "experiments/events.parquet":
        return EVENTS
    if len(parts) == 3 and parts[0] == "experiments" and parts[2] == "metrics.parquet":
        return METRICS
    if len(parts) == 4 and parts[0] == "skills" and parts[2:] == ["evals", "results.parquet"]:
        return SKILL_EVALS
    return None


def check_parquet(path: Path, expected: pa.Schema, shown: str) -> list[Problem]:
    """Compare a file's schema with the expected one (reads the footer only)."""
    try:
        actual = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        return [Problem(shown, f"not a readable Parquet file: {exc}")]
    problems = []
    for field in expected:
        idx = actual.get_field_index(field.name)
        if idx < 0:
            if not (expected is SCORES and field.name in LATER_SCORES):
                problems.append(Problem(shown, "missing column", field=field.name))
        elif not actual.field(idx).type.equals(field.type):
            problems.append(Problem(shown, f"type {actual.field(idx).type}, expected {field.type}",
                                    field=field.name))
    for field in actual:
        if expected.get_field_index(field.name) < 0:
            problems.append(Problem(shown, "unknown column", field=field.name))
    return problems


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    if not path.exists():
        return schema.empty_table()
    return pq.read_table(path, schema=schema)


def write_table(path: Path, table: pa.Table) -> None:
    """Atomic write: a reader never sees a half-written Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write(path, sink.getvalue().to_pybytes())


def append_rows(path: Path, schema: pa.Schema, rows: list[dict], existing: pa.Table | None = None) -> pa.Table:
    """Rewrite the table with `rows` appended; pass `existing` if the caller has just read it."""
    new = pa.Table.from_pylist(mask_data(rows), schema=schema)
    if existing is None:
        existing = read_table(path, schema)
    table = pa.concat_tables([existing, new]) if existing.num_rows else new
    write_table(path, table)
    return table


def tables_markdown() -> str:
    lines = ["# Parquet tables", "",
             "Generated by `lab schema tables` from `runner/files/tables.py`; do not edit by hand.", ""]
    for relpath, (name, schema, purpose) in TABLES.items():
        lines += [f"## {name}: `{relpath}`", "", purpose + ".", "",
                  "| column | Arrow type | nullable |", "| --- | --- | --- |"]
        lines += [f"| {f.name} | {f.type} | {'yes' if f.nullable else 'no'} |" for f in schema]
        lines.append("")
    return "\n".join(lines)
