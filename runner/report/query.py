"""`lab query SQL`: read-only SQL (DuckDB) over the lab's Parquet and YAML state.

Views (each built only when the SQL names it, so a query on `scores` never
parses ten thousand YAML files):

- scores       experiments/scores/*.parquet, each experiment once (state/scores.py; env_class:
               group results by environment class)
- events       experiments/events/*.parquet, each event once (state/events.py)
- jobs         experiments/jobs/*.parquet (every job attempt: backend, flavor, GPUs, seconds, usd)
- agent_runs   experiments/agent_runs/*.parquet (every agent run: role, tokens, cost)
- metrics      every experiments/<id>/metrics.parquet, plus an `experiment` column
- hypotheses   hypotheses/*.yaml, flattened (change/params as JSON text)
- queue        queue/*.yaml, flattened
- experiments  experiments/*/experiment.yaml, flattened (same columns as queue)
- skill_evals  every skills/<name>/evals/results/*.parquet (`lab skills eval`), each run once

A missing table is an empty view with the right columns. Everything is loaded
into memory first, then DuckDB's file access is switched off and locked, so a
query cannot read or write any file: agents may run it freely.
"""
from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import LabError
from ..files.tabledir import read_many
from ..files.tables import METRICS, SKILL_EVALS, TABLES, skill_evals_table
from ..files.yamlio import atomic_write, load_yaml
from ..lab import Lab
from ..state.events import read_events
from ..state.fingerprint import fingerprint
from ..state.scores import scores
from ..state.params import is_number
from .skills import evaluated_skills

_S, _F, _I, _B = pa.string(), pa.float64(), pa.int64(), pa.bool_()

HYPOTHESES = pa.schema([
    ("id", _S), ("title", _S), ("status", _S), ("author", _S), ("created", _S),
    ("source_kind", _S), ("source_ref", _S), ("source_url", _S), ("source_title", _S),
    ("change", _S), ("params", _S), ("instructions", _S), ("file", _S), ("fingerprint", _S),
    ("rationale", _S), ("expected", _S), ("tags", pa.list_(_S)),
    ("review_by", _S), ("review_at", _S), ("review_rule", _S), ("review_reason", _S),
    ("review_collides_with", _S), ("path", _S),
])

EXPERIMENTS = pa.schema([
    ("id", _S), ("hypothesis", _S), ("kind", _S), ("status", _S), ("base", _S), ("priority", _I),
    ("wave", _I), ("change", _S), ("params", _S), ("instructions", _S), ("file", _S),
    ("fingerprint", _S), ("created", _S), ("updated", _S), ("worker", _S), ("branch", _S),
    ("requeued_from", _S), ("confirms", _S), ("reproduces", _S), ("env_class", _S), ("environment", _S),
    ("job", _S), ("history", _S),
    ("metric", _S), ("value", _F), ("base_value", _F), ("delta", _F), ("promoted", _B),
    ("commit", _S), ("duration_s", _F), ("reason", _S), ("seed", _I), ("z", _F), ("margin", _F),
    ("evidence", _S), ("constraint", _S), ("holdout", _F), ("metrics", _S), ("path", _S),
])

METRICS_VIEW = pa.schema([pa.field("experiment", _S), *METRICS])

VIEWS = ("scores", "events", "metrics", "hypotheses", "queue", "experiments", "jobs", "agent_runs",
         "skill_evals")
CACHE_VERSION = 4  # bump when the row builders change


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple]
    skipped: list[str] = field(default_factory=list)  # "path: why" for unreadable files

    def records(self) -> list[dict]:
        return [{c: jsonable(v) for c, v in zip(self.columns, row)} for row in self.rows]


def run_query(lab: Lab, sql: str) -> Result:
    """Run one read-only SQL statement over the lab's views."""
    try:
        import duckdb  # optional dependency: the `query` extra
    except ImportError:
        raise LabError("lab query needs DuckDB: pip install 'benchlab[query]'", "query") from None

    if not sql.strip():
        raise LabError("empty SQL statement", "query", "sql")
    skipped: list[str] = []
    con = duckdb.connect(":memory:")
    try:
        for name in referenced_views(sql):
            con.register(name, build_view(lab, name, skipped))
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            relation = con.sql(sql)
            table = _arrow(relation) if relation is not None else pa.table({})
        except duckdb.Error as exc:
            raise LabError(one_line(str(exc)), "query", "sql") from None
    finally:
        con.close()
    columns = [c.to_pylist() for c in table.columns]
    return Result(list(table.column_names), list(zip(*columns)), skipped)


def _arrow(relation) -> pa.Table:
    """The result as Arrow (no pytz needed for time zones; the name differs across DuckDB versions)."""
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        if hasattr(relation, name):
            return getattr(relation, name)()
    raise RuntimeError("this DuckDB cannot return Arrow tables")


def referenced_views(sql: str) -> list[str]:
    words = {w.lower() for w in re.findall(r"[A-Za-z_]+", sql)}
    return [name for name in VIEWS if name in words]


def one_line(message: str) -> str:
    """DuckDB's errors span lines (LINE 1: ... ^^^); keep the first, add the position hint."""
    lines = [l.strip() for l in message.splitlines() if l.strip()]
    head = lines[0] if lines else "SQL error"
    near = next((l for l in lines[1:] if l.startswith("LINE ")), "")
    return f"{head} ({near})" if near else head


def build_view(lab: Lab, name: str, skipped: list[str]) -> pa.Table:
    if name == "scores":
        return scores(lab, skipped)  # a corrupt file must not hide the others: it is skipped, named
    if name == "events":
        return read_events(lab, skipped)
    if name in ("jobs", "agent_runs"):
        return read_many(lab.root, TABLES[name], skipped)
    if name == "metrics":
        return metrics_table(lab, skipped)
    if name == "hypotheses":
        return _yaml_table(lab, name, _listing(lab, "hypotheses"), HYPOTHESES, hypothesis_row, skipped)
    if name == "queue":
        return _yaml_table(lab, name, _listing(lab, "queue"), EXPERIMENTS, experiment_row, skipped)
    if name == "experiments":
        files = _listing(lab, "experiments", "experiment.yaml")
        return _yaml_table(lab, name, files, EXPERIMENTS, experiment_row, skipped)
    if name == "skill_evals":
        parts = [read_many(lab.root, skill_evals_table(s), skipped) for s in evaluated_skills(lab)]
        return pa.concat_tables(parts) if parts else SKILL_EVALS.empty_table()
    raise KeyError(name)


def _listing(lab: Lab, sub: str, inner: str | None = None) -> list[str]:
    """Lab-relative paths of `sub/*.yaml` (or `sub/*/inner`), sorted, with plain strings (fast)."""
    try:
        names = sorted(e.name for e in os.scandir(lab.root / sub) if not e.name.startswith("."))
    except OSError:
        return []
    if inner is None:
        return [f"{sub}/{n}" for n in names if n.endswith(".yaml")]
    return [f"{sub}/{n}/{inner}" for n in names]


def metrics_table(lab: Lab, skipped: list[str]) -> pa.Table:
    parts = []
    paths = sorted(lab.experiments.glob("*/metrics.parquet")) if lab.experiments.is_dir() else []
    for path in paths:
        try:
            table = pq.read_table(path, schema=METRICS)
        except Exception as exc:
            skipped.append(f"{path.relative_to(lab.root).as_posix()}: {one_line(str(exc))}")
            continue
        experiment = pa.array([path.parent.name] * table.num_rows, _S)
        parts.append(table.add_column(0, pa.field("experiment", _S), experiment))
    return pa.concat_tables(parts) if parts else METRICS_VIEW.empty_table()


def _yaml_table(lab: Lab, view: str, paths: list[str], schema: pa.Schema, to_row, skipped: list[str]) -> pa.Table:
    """Rows of YAML files, reusing `.lab/cache/query/<view>.json` for files unchanged since
    (same inode, size and mtime): 10,000 files cost a stat each, not a parse each."""
    cache_path = lab.runtime / "cache" / "query" / f"{view}.json"
    version = hashlib.sha256(f"{CACHE_VERSION}:{schema}".encode()).hexdigest()[:16]
    cached = _read_json(cache_path)
    old = cached.get("files", {}) if cached.get("version") == version else {}
    new, rows, root = {}, [], str(lab.root)
    for rel in paths:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError:
            continue  # removed while we listed, or an experiment without experiment.yaml
        key = [st.st_ino, st.st_size, st.st_mtime_ns]
        hit = old.get(rel)
        item = hit if hit and hit[0] == key else [key, *_yaml_row(lab.root / rel, rel, schema, to_row)]
        new[rel] = item
        if item[2]:
            skipped.append(f"{rel}: {item[2]}")
        else:
            rows.append(item[1])
    if new != old:
        try:
            atomic_write(cache_path, json.dumps({"version": version, "files": new}))
        except OSError:
            pass  # a read-only lab still answers, just slower
    return pa.Table.from_pylist(rows, schema=schema)


def _yaml_row(path: Path, rel: str, schema: pa.Schema, to_row) -> tuple[dict | None, str | None]:
    """(row, None) or (None, why the file was skipped)."""
    try:
        data, _ = load_yaml(path)
        if not isinstance(data, dict):
            raise LabError("expected a mapping of fields")
        row = to_row(data)
    except LabError as exc:
        return None, exc.problem.message
    except (TypeError, ValueError, AttributeError) as exc:
        return None, f"unexpected field shape ({exc})"
    row["path"] = rel
    return _coerce(row, schema), None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _coerce(row: dict, schema: pa.Schema) -> dict:
    """Fit agent-written values to the column types (a bad value becomes null, not an error)."""
    out = {}
    for f in schema:
        value = row.get(f.name)
        if value is None:
            out[f.name] = None
        elif f.type == _S:
            out[f.name] = value if isinstance(value, str) else json.dumps(value, default=str)
        elif f.type == _F:
            out[f.name] = float(value) if is_number(value) else None
        elif f.type == _I:
            out[f.name] = int(value) if is_number(value) and float(value).is_integer() else None
        elif f.type == _B:
            out[f.name] = value if isinstance(value, bool) else None
        else:  # list<string>
            out[f.name] = [str(v) for v in value] if isinstance(value, list) else None
    return out



def _json(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _change_columns(change) -> dict:
    change = change if isinstance(change, dict) else {}
    params = change.get("params")
    return {"change": _json(change), "params": _json(params) if isinstance(params, dict) else None,
            "instructions": change.get("instructions"), "file": change.get("file")}


def hypothesis_row(data: dict) -> dict:
    source = data.get("source") if isinstance(data.get("source"), dict) else {}
    review = data.get("review") if isinstance(data.get("review"), dict) else {}
    change = data.get("change") if isinstance(data.get("change"), dict) else {}
    row = {k: data.get(k) for k in ("id", "title", "status", "author", "created", "rationale", "expected", "tags")}
    row.update(_change_columns(change))
    row["fingerprint"] = fingerprint(change) if change else None
    row.update({f"source_{k}": source.get(k) for k in ("kind", "ref", "url", "title")})
    row.update({f"review_{k}": review.get(k) for k in ("by", "at", "rule", "reason", "collides_with")})
    return row


def experiment_row(data: dict) -> dict:
    result = data.get("result") if isinstance(data.get("result"), dict) else {}
    row = {k: data.get(k) for k in ("id", "hypothesis", "kind", "status", "base", "priority", "wave",
                                    "fingerprint", "created", "updated", "worker", "branch", "requeued_from",
                                    "confirms", "reproduces")}
    row["kind"] = row["kind"] or "experiment"
    row.update(_change_columns(data.get("change")))
    environment = data.get("environment") if isinstance(data.get("environment"), dict) else {}
    row.update(env_class=environment.get("class"), environment=_json(environment or None))
    row["job"] = _json(data.get("job"))
    row["history"] = _json(data.get("history"))
    row.update({k: result.get(k) for k in ("metric", "value", "base_value", "delta", "promoted", "commit",
                                           "duration_s", "reason", "seed", "z", "margin", "evidence", "constraint",
                                           "holdout")})
    if row["seed"] is None:   # queued: the seed its job will get, when the entry names one
        row["seed"] = data.get("seed")
    row["metrics"] = _json(result.get("metrics"))
    return row


# -- output -------------------------------------------------------------------
def jsonable(value):
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and value != value:
        return None  # NaN is not JSON
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # intervals, UUIDs, ...


def render_table(result: Result, max_width: int = 60) -> str:
    """Aligned text table; a cell longer than `max_width` (0: no limit) is cut at a word
    boundary and ends with '…', so a cut is never silent."""
    def cell(value) -> str:
        text = "NULL" if value is None else str(jsonable(value))
        text = text.replace("\n", " ")
        if max_width <= 0 or len(text) <= max_width:
            return text
        cut = text[: max_width - 1]
        return (cut.rsplit(" ", 1)[0] if " " in cut[max_width // 2:] else cut) + "…"

    header = list(result.columns)
    body = [[cell(v) for v in row] for row in result.rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in body]
    lines.append(f"({len(body)} row{'s' if len(body) != 1 else ''})")
    return "\n".join(lines)
