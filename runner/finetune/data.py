"""The data set of a fine-tune plan: where it lives, its columns, its format and its size.

Local files are read directly (a sample of rows, never the whole set into memory); a Hub
data set is described by its card's `dataset_info` (columns, rows, bytes), asked only when
the Hub may be reached.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

BUILTIN = "tiny-tasks"
KINDS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
ROLES = {"system", "user", "assistant", "tool", "developer"}
SAMPLE = 200  # rows read to check values and measure lengths


@dataclass
class DataInfo:
    source: str                      # builtin | local | hub
    status: str = "ok"               # ok | error | unknown
    message: str = ""
    columns: list[str] = field(default_factory=list)
    format: str | None = None        # messages | prompt-completion | text
    mapping: dict[str, str] = field(default_factory=dict)  # data set column -> trainer field
    rows: int | None = None
    chars_per_example: float | None = None
    sample: dict | None = None       # the first example, mapped fields only

    def to_dict(self) -> dict:
        return asdict(self)


def inspect(plan: dict) -> DataInfo:
    """Describe plan["DATASET"]; status 'error' when it cannot be trained on as configured."""
    name = str(plan.get("DATASET"))
    if name == BUILTIN:
        return _builtin(plan)
    if os.path.exists(name):
        return _local(Path(name), plan)
    return _hub(name, plan)


# -- format --------------------------------------------------------------------------------------------
def detect_format(columns: list[str], plan: dict) -> tuple[str | None, dict[str, str]]:
    """The format finetune.py will use for these columns (same precedence), and the column mapping."""
    messages, prompt, completion, text = (plan.get(k) for k in (
        "MESSAGES_COLUMN", "PROMPT_COLUMN", "COMPLETION_COLUMN", "TEXT_COLUMN"))
    if messages in columns:
        return "messages", {messages: "messages"}
    if prompt in columns and completion in columns:
        return "prompt-completion", {prompt: "prompt", completion: "completion"}
    if text in columns:
        return "text", {text: "text"}
    return None, {}


def _mismatch(columns: list[str], plan: dict) -> str:
    wanted = (f"MESSAGES_COLUMN={plan.get('MESSAGES_COLUMN')!r}, PROMPT_COLUMN/COMPLETION_COLUMN="
              f"{plan.get('PROMPT_COLUMN')!r}/{plan.get('COMPLETION_COLUMN')!r} "
              f"or TEXT_COLUMN={plan.get('TEXT_COLUMN')!r}")
    hint = ""
    if len(columns) == 2:
        hint = (f"; if these are a prompt and its answer, set PROMPT_COLUMN = {columns[0]!r} and "
                f"COMPLETION_COLUMN = {columns[1]!r}")
    return f"columns {columns} match none of {wanted}{hint}"


def check_values(rows: list[dict], fmt: str, mapping: dict[str, str]) -> str | None:
    """The first malformed value in the sample, described; None when all look trainable."""
    by_field = {new: old for old, new in mapping.items()}
    for index, row in enumerate(rows):
        for name, column in by_field.items():
            problem = _bad_value(row.get(column), name, fmt)
            if problem:
                return f"row {index}: column {column!r} ({name}): {problem}"
    return None


def _bad_value(value, name: str, fmt: str) -> str | None:
    if name == "messages" or (fmt == "prompt-completion" and isinstance(value, list)):
        return _bad_messages(value, need_assistant=name in ("messages", "completion"))
    if not isinstance(value, str) or not value.strip():
        return f"expected non-empty text, got {type(value).__name__} {str(value)[:40]!r}"
    return None


def _bad_messages(value, need_assistant: bool) -> str | None:
    if not isinstance(value, list) or not value:
        return f"expected a non-empty list of {{role, content}} messages, got {type(value).__name__}"
    for message in value:
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            return f"each message needs 'role' and 'content', got {str(message)[:60]!r}"
        if message["role"] not in ROLES:
            return f"unknown role {message['role']!r} (use {', '.join(sorted(ROLES))})"
    if need_assistant and not any(m["role"] == "assistant" for m in value):
        return "no assistant message: nothing to learn from"
    return None


def _finish(info: DataInfo, rows: list[dict], plan: dict) -> DataInfo:
    """Format, mapping, value checks and lengths from the columns and a sample of rows."""
    info.format, info.mapping = detect_format(info.columns, plan)
    if info.format is None:
        info.status, info.message = "error", _mismatch(info.columns, plan)
        return info
    if rows:
        problem = check_values(rows, info.format, info.mapping)
        if problem:
            info.status, info.message = "error", problem
            return info
        mapped = [{new: row.get(old) for old, new in info.mapping.items()} for row in rows]
        info.sample = mapped[0]
        info.chars_per_example = sum(len(_text_of(r)) for r in mapped) / len(mapped)
    return info


def _text_of(row: dict) -> str:
    parts = []
    for value in row.values():
        if isinstance(value, list):
            parts += [str(m.get("content", "")) for m in value if isinstance(m, dict)]
        else:
            parts.append(str(value))
    return "".join(parts)


# -- sources ----------------------------------------------------------------------------------------
def _builtin(plan: dict) -> DataInfo:
    info = DataInfo("builtin", columns=["messages"], rows=int(plan.get("TINY_TRAIN_EXAMPLES") or 4000))
    sample = {"messages": [{"role": "user", "content": "reverse abcd"}, {"role": "assistant", "content": "dcba"}]}
    info = _finish(info, [sample], plan)
    info.chars_per_example = 20.0  # prompts of 8-13 characters, answers of 1-6
    return info


def _local(path: Path, plan: dict) -> DataInfo:
    files = _data_files(path)
    if not files:
        return DataInfo("local", "error", f"{path}: no .jsonl, .json, .parquet or .csv file here")
    kinds = {KINDS[f.suffix.lower()] for f in files}
    if len(kinds) > 1:
        return DataInfo("local", "error", f"{path}: mixes file kinds ({', '.join(sorted(kinds))}); keep one")
    try:
        columns, rows, count = _read_files(files, kinds.pop())
    except (OSError, ValueError, csv.Error) as exc:
        return DataInfo("local", "error", f"{path}: cannot be read: {exc}")
    return _finish(DataInfo("local", columns=columns, rows=count), rows, plan)


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix.lower() in KINDS else []
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in KINDS)


def _read_files(files: list[Path], kind: str) -> tuple[list[str], list[dict], int]:
    reader = {"json": _read_json, "parquet": _read_parquet, "csv": _read_csv}[kind]
    columns: list[str] = []
    rows: list[dict] = []
    count = 0
    for path in files:
        cols, sample, n = reader(path)
        columns = columns or cols
        rows += sample[: SAMPLE - len(rows)]
        count += n
    return columns, rows, count


def _read_json(path: Path) -> tuple[list[str], list[dict], int]:
    with open(path, encoding="utf-8") as handle:
        first = handle.read(1)
        handle.seek(0)
        if first == "[":
            records = json.load(handle)
            return _columns(records), records[:SAMPLE], len(records)
        rows, count = [], 0
        for line in handle:
            if line.strip():
                count += 1
                if len(rows) < SAMPLE:
                    rows.append(json.loads(line))
    return _columns(rows), rows, count


def _columns(records: list) -> list[str]:
    if not all(isinstance(r, dict) for r in records):
        raise ValueError("expected one JSON object per row")
    return list(dict.fromkeys(k for r in records[:SAMPLE] for k in r))


def _read_parquet(path: Path) -> tuple[list[str], list[dict], int]:
    import pyarrow.parquet as pq
    table = pq.ParquetFile(path)
    batch = next(table.iter_batches(batch_size=SAMPLE), None)
    return table.schema_arrow.names, batch.to_pylist() if batch is not None else [], table.metadata.num_rows


def _read_csv(path: Path) -> tuple[list[str], list[dict], int]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(itertools.islice(reader, SAMPLE))
        count = len(rows) + sum(1 for _ in reader)
    return list(reader.fieldnames or []), rows, count


# -- the Hub ----------------------------------------------------------------------------------------
def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub(name: str, plan: dict) -> DataInfo:
    if hub_offline():
        return DataInfo("hub", "unknown", f"offline (HF_HUB_OFFLINE is set): the columns of {name} were not "
                                          "checked; run the check where the Hub is reachable, or point DATASET "
                                          "at a local copy")
    try:
        from huggingface_hub import HfApi
        card = HfApi().dataset_info(name, timeout=10).card_data
    except Exception as exc:  # network errors, a missing or gated repo: one line, never a traceback
        return DataInfo("hub", "unknown", f"could not read {name} from the Hub ({type(exc).__name__}); "
                                          "its columns were not checked")
    return _from_card(name, (card.to_dict() if card else {}).get("dataset_info"), plan)


def _from_card(name: str, declared, plan: dict) -> DataInfo:
    """Columns and sizes from a card's `dataset_info` (one mapping, or a list with one per config)."""
    configs = declared if isinstance(declared, list) else [declared] if isinstance(declared, dict) else []
    if not configs:
        return DataInfo("hub", "unknown", f"{name}'s card declares no features; its columns were not checked")
    wanted = plan.get("DATASET_CONFIG")
    chosen = [c for c in configs if c.get("config_name", "default") == (wanted or "default")]
    if not chosen:
        names = ", ".join(str(c.get("config_name")) for c in configs)
        return DataInfo("hub", "error", f"{name} has configs {names}: set DATASET_CONFIG to one of them"
                        + (f" (not {wanted!r})" if wanted else ""))
    config = chosen[0]
    split = next((s for s in config.get("splits", []) if s.get("name") == plan.get("TRAIN_SPLIT")), None)
    if split is None:
        splits = ", ".join(s.get("name", "?") for s in config.get("splits", []))
        return DataInfo("hub", "error", f"{name} has no split {plan.get('TRAIN_SPLIT')!r} (it has {splits}): "
                                        "set TRAIN_SPLIT")
    info = DataInfo("hub", columns=[f.get("name") for f in config.get("features", [])], rows=split.get("num_examples"))
    info = _finish(info, [], plan)
    if info.rows and split.get("num_bytes"):  # every column counts here, so this is an upper bound
        info.chars_per_example = split["num_bytes"] / info.rows
    return info
