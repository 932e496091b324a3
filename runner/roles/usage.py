"""Tokens and cost an agent CLI reported in its output, for experiments/agent_runs/.

Read from the JSON the CLIs print (nothing is estimated; what a CLI does not report is None):
- Claude Code (`claude -p --output-format json`, or `stream-json`): the `result` object with
  `usage` {input_tokens, cache_creation_input_tokens, cache_read_input_tokens, output_tokens}
  and `total_cost_usd`;
- Codex (`codex exec --json`): `turn.completed` events with `usage` {input_tokens (cache reads
  included), cached_input_tokens, output_tokens}; no cost;
- OpenCode (`opencode run --format json`): `step_finish` events whose `part` has `tokens`
  {input, output, reasoning, cache: {read, write}} and `cost`.
tokens_in counts every input token, cache reads included; tokens_cached is the cached share.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..state.accounting import record_agent_run


@dataclass
class Usage:
    tokens_in: int | None = None
    tokens_cached: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None

    def add(self, tokens_in: int, cached: int, out: int, cost: float | None) -> None:
        self.tokens_in = (self.tokens_in or 0) + tokens_in
        self.tokens_cached = (self.tokens_cached or 0) + cached
        self.tokens_out = (self.tokens_out or 0) + out
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost


def parse_usage(text: str) -> Usage:
    """Usage summed over every report found in an agent's output (a Claude Code result wins alone:
    it already totals the run)."""
    usage, claude = Usage(), None
    for event in _json_objects(text):
        kind = event.get("type")
        if kind == "result" and isinstance(event.get("usage"), dict):
            claude = event
        elif kind == "turn.completed" and isinstance(event.get("usage"), dict):
            u = event["usage"]
            usage.add(_int(u.get("input_tokens")), _int(u.get("cached_input_tokens")), _int(u.get("output_tokens")),
                      None)
        elif kind == "step_finish" and isinstance(event.get("part"), dict):
            part = event["part"]
            tokens = part.get("tokens") if isinstance(part.get("tokens"), dict) else {}
            cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
            read, write = _int(cache.get("read")), _int(cache.get("write"))
            usage.add(_int(tokens.get("input")) + read + write, read,
                      _int(tokens.get("output")) + _int(tokens.get("reasoning")), _num(part.get("cost")))
    if claude is not None:
        u = claude["usage"]
        read = _int(u.get("cache_read_input_tokens"))
        usage = Usage()
        usage.add(_int(u.get("input_tokens")) + _int(u.get("cache_creation_input_tokens")) + read, read,
                  _int(u.get("output_tokens")), _num(claude.get("total_cost_usd")))
    return usage


def _json_objects(text: str):
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _int(value) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else 0


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def account(lab, role: str, task: str, agent: str | None, state: str, exit_code: int | None, log: Path,
            offset: int, started: float) -> Path:
    """The file of one row in experiments/agent_runs/ for an agent run that ended: its usage is read
    from what it printed since `offset` of its log."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    return record_agent_run(lab, {"role": role, "task": task, "agent": agent, "state": state, "exit_code": exit_code,
                           "started": datetime.fromtimestamp(started, timezone.utc),
                           "duration_s": max(0.0, time.time() - started), **asdict(parse_usage(text))})
