"""Tokens, turns, cost and final messages from an agent CLI's own machine-readable output: the one
reader of it, for skill evals and for experiments/agent_runs/.

Every line of the output that is a JSON object is read (and the whole output, for a JSON
document spread over lines); anything else is ignored, and what no event gives stays None.

- Claude Code (`claude -p ... --output-format json`, or `stream-json`): the event with
  `"type": "result"`. tokens_in = usage.input_tokens + usage.cache_creation_input_tokens
  + usage.cache_read_input_tokens; tokens_out = usage.output_tokens; turns = num_turns;
  cost = total_cost_usd (older releases: cost_usd); message = result.
  tokens_cached = usage.cache_read_input_tokens.
- Codex (`codex exec --json`): every `turn.completed` event adds usage.input_tokens (cached
  ones included) and usage.output_tokens; turns = the number of those events; the text of
  `item.completed` items of type `agent_message` (older releases: `item_type`) are the
  messages; tokens_cached sums usage.cached_input_tokens. A cumulative `token_count` event (info.total_token_usage) is used when there
  is no `turn.completed`.
- OpenCode (`opencode run --format json`): every `step_finish` event adds part.tokens.input
  + cache.read + cache.write and part.tokens.output + reasoning, and part.cost; turns = the
  number of those events; `text` events' part.text are the messages; tokens_cached sums
  cache.read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Usage:
    tokens_in: int | None = None        # every input token, cache reads included
    tokens_out: int | None = None
    turns: int | None = None
    cost_usd: float | None = None
    messages: list[str] = field(default_factory=list)
    tokens_cached: int | None = None    # the cached share of tokens_in

    def add(self, tokens_in=None, tokens_out=None, cost=None, cached=None) -> None:
        for name, value in (("tokens_in", tokens_in), ("tokens_out", tokens_out), ("cost_usd", cost),
                            ("tokens_cached", cached)):
            if value is not None:
                setattr(self, name, (getattr(self, name) or 0) + value)


def parse(output: str) -> Usage:
    events = list(_objects(output))
    claude = [e for e in events if e.get("type") == "result" and ("usage" in e or "num_turns" in e)]
    if claude:
        return _claude(claude[-1])
    usage = Usage()
    codex_turns = [e for e in events if e.get("type") == "turn.completed"]
    for event in codex_turns:
        data = _dict(event.get("usage"))
        usage.add(_int(data.get("input_tokens")), _int(data.get("output_tokens")),
                  cached=_int(data.get("cached_input_tokens")))
    if not codex_turns:
        counts = [_dict(_dict(e.get("info")).get("total_token_usage")) for e in events if e.get("type") == "token_count"]
        if counts:
            usage.add(_int(counts[-1].get("input_tokens")), _int(counts[-1].get("output_tokens")))
    steps = [_dict(e.get("part")) for e in events if e.get("type") == "step_finish"]
    for part in steps:
        tokens = _dict(part.get("tokens"))
        cache = _dict(tokens.get("cache"))
        usage.add(_sum(tokens.get("input"), cache.get("read"), cache.get("write")),
                  _sum(tokens.get("output"), tokens.get("reasoning")), _float(part.get("cost")),
                  _int(cache.get("read")))
    if codex_turns or steps:
        usage.turns = len(codex_turns) + len(steps)
    for event in events:
        item = _dict(event.get("item"))
        if event.get("type") == "item.completed" and (item.get("type") or item.get("item_type")) == "agent_message":
            usage.messages.append(str(item.get("text") or ""))
        elif event.get("type") == "text" and isinstance(_dict(event.get("part")).get("text"), str):
            usage.messages.append(event["part"]["text"])
    return usage


def _claude(event: dict) -> Usage:
    usage = _dict(event.get("usage"))
    tokens_in = _sum(usage.get("input_tokens"), usage.get("cache_creation_input_tokens"),
                     usage.get("cache_read_input_tokens"))
    cost = _float(event.get("total_cost_usd", event.get("cost_usd")))
    text = event.get("result")
    return Usage(tokens_in, _int(usage.get("output_tokens")), _int(event.get("num_turns")), cost,
                 [text] if isinstance(text, str) else [], _int(usage.get("cache_read_input_tokens")))


def _objects(output: str):
    """Each JSON object of the output: one per line, or the whole output as one document."""
    found = False
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found = True
                yield value
    if not found and output.strip().startswith("{"):
        try:
            value = json.loads(output)
        except ValueError:
            return
        if isinstance(value, dict):
            yield value


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _int(value) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return int(value)


def _float(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def _sum(*values) -> int | None:
    numbers = [n for n in map(_int, values) if n is not None]
    return sum(numbers) if numbers else None
