"""The Arrow schemas of every Parquet table and where its files live, defined once;
reading and writing one Parquet file (files/tabledir.py reads a table of many files).

`schemas/tables.md` is generated from this module (`lab schema tables`) and a
test checks that it matches, so the documentation cannot drift from the code.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
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
    pa.field("env_class", pa.string()),                     # environment class (backends/envclass.py)
    pa.field("holdout", pa.float64()),                      # objective.holdout's value: recorded, never judged
    pa.field("base_holdout", pa.float64()),                 # the base's holdout in the same class
])

# scores columns added after the first release: an older table lacks them and reads them as null
LATER_SCORES = {"seed", "cost", "constraint", "z", "margin", "evidence", "env_class", "holdout", "base_holdout"}

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

JOBS = pa.schema([
    pa.field("experiment", pa.string(), nullable=False),
    pa.field("attempt", pa.int64(), nullable=False),
    pa.field("kind", pa.string()),                          # experiment | baseline | reproduction
    pa.field("status", pa.string()),                        # how the attempt ended (lost: retried)
    pa.field("backend", pa.string(), nullable=False),
    pa.field("slot", pa.string()),
    pa.field("flavor", pa.string()),                        # HF Jobs flavor, Slurm partition
    pa.field("gpus", pa.int64()),
    pa.field("gpu_model", pa.string()),
    pa.field("env_class", pa.string()),
    pa.field("started", _TS),                               # when it began running (queue wait excluded)
    pa.field("finished", _TS),
    pa.field("seconds", pa.float64()),                      # run time: what is billed
    pa.field("usd", pa.float64()),                          # seconds x the flavor's price; null: no price
])

AGENT_RUNS = pa.schema([
    pa.field("role", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("agent", pa.string()),                         # $LAB_AGENT_ID
    pa.field("state", pa.string(), nullable=False),         # finished | failed | timed_out | stopped
    pa.field("exit_code", pa.int64()),
    pa.field("started", _TS, nullable=False),
    pa.field("duration_s", pa.float64()),
    pa.field("tokens_in", pa.int64()),                      # every input token, cache reads included
    pa.field("tokens_cached", pa.int64()),                  # of tokens_in, read from the prompt cache
    pa.field("tokens_out", pa.int64()),
    pa.field("cost_usd", pa.float64()),                     # as the agent CLI reported it; null: it did not
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


@dataclass(frozen=True)
class Table:
    """Where a table's files live and what a row is. A table read from many files (one per
    experiment or runner pass, each written once by one writer, so labs merge as files) is
    one table to every reader; `key` names the columns that identify a row (None: all of them)."""
    name: str
    schema: pa.Schema
    layout: str                       # lab-relative pattern of its files
    purpose: str
    directory: str | None = None      # a table of many files: every *.parquet in it
    key: tuple[str, ...] | None = None
    order: tuple[str, ...] = ()       # rows read in this order (files merge in any order)
    legacy: str | None = None         # the single file an older lab kept the table in


TABLES = {
    "scores": Table("scores", SCORES, "experiments/scores/<id>.parquet",
                    "one row per finished experiment or baseline, in a file of its own written once when "
                    "the experiment is recorded; `lab compact` folds them into `part-<hash>.parquet` files",
                    directory="experiments/scores", key=("id",), order=("finished", "id"),
                    legacy="experiments/scores.parquet"),
    "metrics": Table("metrics", METRICS, "experiments/<id>/metrics.parquet",
                     "step metrics and summary lines of one run"),
    "events": Table("events", EVENTS, "experiments/events/<utc>-<random>.parquet",
                    "anomalies, refusals, failures, promotions: one file per runner pass that recorded any, "
                    "written by that runner alone; `lab compact` folds them into `part-<hash>.parquet` files",
                    directory="experiments/events", order=("at",), legacy="experiments/events.parquet"),
    "skill_evals": Table("skill_evals", SKILL_EVALS, "skills/<name>/evals/results/<batch>.parquet",
                         "one row per agent run of a skill eval case: one file per `lab skills eval` batch "
                         "and skill, written by that invocation alone, so evaluations run in two clones of a "
                         "lab merge as files",
                         directory=None, key=("batch", "case", "agent", "with_skill", "run"),
                         legacy="skills/<name>/evals/results.parquet"),
    "jobs": Table("jobs", JOBS, "experiments/jobs/<id>-<attempt>.parquet",
                  "one row per job attempt that ran (where, how long, what it cost), in a file of its own "
                  "written once when the attempt ends", directory="experiments/jobs",
                  key=("experiment", "attempt"), order=("started", "experiment", "attempt"),
                  legacy="experiments/jobs.parquet"),
    "agent_runs": Table("agent_runs", AGENT_RUNS, "experiments/agent_runs/<utc>-<role>-<random>.parquet",
                        "one row per agent run (role, task, tokens and cost its CLI reported), in a file of "
                        "its own written once when the run ends", directory="experiments/agent_runs",
                        order=("started",), legacy="experiments/agent_runs.parquet"),
}
PART_PREFIX = "part-"               # a compacted file: named by its content


def schema_for(relpath: str) -> pa.Schema | None:
    """The Arrow schema a Parquet file at this lab-relative path must have."""
    parts = relpath.split("/")
    for table in TABLES.values():
        if relpath == table.legacy or (table.directory and len(parts) == 3 and parts[-1].endswith(".parquet")
                                       and "/".join(parts[:2]) == table.directory):
            return table.schema
    if len(parts) == 3 and parts[0] == "experiments" and parts[2] == "metrics.parquet":
        return METRICS
    if parts[0] == "skills" and (parts[2:] == ["evals", "results.parquet"] or len(parts) == 5
                                 and parts[2:4] == ["evals", "results"] and parts[4].endswith(".parquet")):
        return SKILL_EVALS
    return None


def skill_evals_table(skill: str) -> Table:
    """One skill's eval results as a table of many files: its batches' files, and the single file
    an earlier version appended every batch to."""
    return replace(TABLES["skill_evals"], name=f"skill_evals-{skill}", directory=f"skills/{skill}/evals/results",
                   legacy=f"skills/{skill}/evals/results.parquet")


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


def parquet_bytes(table: pa.Table) -> bytes:
    """The file's bytes; the same rows always give the same bytes (for one pyarrow version)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_table(path: Path, table: pa.Table) -> None:
    """Atomic write: a reader never sees a half-written Parquet file."""
    atomic_write(path, parquet_bytes(table))


def rows_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows as a table of `schema`, secret values masked."""
    return pa.Table.from_pylist(mask_data(rows), schema=schema)


def write_part(directory: Path, table: pa.Table) -> Path:
    """Write rows as `part-<hash of the bytes>.parquet`: two labs that write the same rows write
    the same file under the same name, so git sees one file, never a conflict."""
    data = parquet_bytes(table)
    path = directory / f"{PART_PREFIX}{hashlib.sha256(data).hexdigest()[:20]}.parquet"
    if not path.exists():
        atomic_write(path, data)
    return path


def tables_markdown() -> str:
    lines = ["# Parquet tables", "",
             "Generated by `lab schema tables` from `runner/files/tables.py`; do not edit by hand.", "",
             "A table of many files is one table to every reader (`lab query`, the report, DuckDB's",
             "`read_parquet('experiments/scores/*.parquet', union_by_name=true)`, `pyarrow.dataset`): each",
             "file is written once by one writer, so two labs' results merge as new files. A file written",
             "before a column was added lacks it (`union_by_name` reads it as null). A row may appear in two",
             "compacted parts after two labs compacted the same rows: rows are immutable, so read each once",
             "(by `id` for scores, by (experiment, attempt) for jobs, by the whole row for events and",
             "agent runs).", ""]
    for table in TABLES.values():
        lines += [f"## {table.name}: `{table.layout}`", "", table.purpose + ".", ""]
        if table.legacy:
            folded = ", and folded into the directory by `lab run` and `lab compact`" if table.directory else ""
            lines += [f"A lab made by an earlier version kept it in `{table.legacy}`: still read{folded}.", ""]
        lines += ["| column | Arrow type | nullable |", "| --- | --- | --- |"]
        lines += [f"| {f.name} | {f.type} | {'yes' if f.nullable else 'no'} |" for f in table.schema]
        lines.append("")
    return "\n".join(lines)
