"""An agent run's row in experiments/agent_runs/: its tokens and cost as its CLI printed them
(read by runner/files/agent_usage.py; nothing is estimated, what a CLI does not report is None)."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from ..files.agent_usage import parse
from ..state.accounting import record_agent_run


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
                           "duration_s": max(0.0, time.time() - started), **_tokens(parse(text))})


def _tokens(usage) -> dict:
    return {"tokens_in": usage.tokens_in, "tokens_cached": usage.tokens_cached, "tokens_out": usage.tokens_out,
            "cost_usd": usage.cost_usd}
