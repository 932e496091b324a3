"""Results of `lab skills eval`: one row per run in skills/<name>/evals/results/<batch>.parquet
(the skill_evals table of runner/files/tables.py: a file per batch, so evaluations run in two
clones of a lab merge as files), and their summary per skill, agent and
case: pass rate with and without the skill, lift, token and time savings.

    lift           pass rate with the skill - pass rate without
    token savings  1 - mean tokens (in + out) per run with / without, where the agent reported them
    time savings   1 - mean duration per run with / without
    beneficial     lift > 0.05, or lift >= 0 with token savings > 20% (Hugging Face upskill's rule)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ..files import tables
from .cases import RESULTS

ALL = "(all)"


def batch_file(skill_dir: Path, batch: str) -> Path:
    return skill_dir / RESULTS / f"{batch}.parquet"


def append(skill_dir: Path, batch: str, rows: list[dict]) -> None:
    """The batch's rows so far plus these, rewritten atomically: only this batch writes its file."""
    path = batch_file(skill_dir, batch)
    existing = tables.read_table(path, tables.SKILL_EVALS)
    tables.write_table(path, pa.concat_tables([existing, tables.rows_table(rows, tables.SKILL_EVALS)]))


@dataclass
class Side:
    runs: int = 0
    passed: int = 0
    tokens: float | None = None       # mean per run, over the runs that reported tokens
    seconds: float | None = None
    cost: float | None = None

    @property
    def rate(self) -> float | None:
        return self.passed / self.runs if self.runs else None


@dataclass
class Line:
    skill: str
    agent: str
    case: str
    with_skill: Side
    without: Side

    @property
    def lift(self) -> float | None:
        a, b = self.with_skill.rate, self.without.rate
        return None if a is None or b is None else a - b

    @property
    def token_savings(self) -> float | None:
        return _savings(self.with_skill.tokens, self.without.tokens)

    @property
    def time_savings(self) -> float | None:
        return _savings(self.with_skill.seconds, self.without.seconds)

    @property
    def beneficial(self) -> bool | None:
        lift = self.lift
        if lift is None:
            return None
        return lift > 0.05 or (lift >= 0 and (self.token_savings or 0.0) > 0.20)

    def to_dict(self) -> dict:
        side = lambda s: {"runs": s.runs, "passed": s.passed, "pass_rate": s.rate, "tokens": s.tokens,
                          "seconds": s.seconds, "cost_usd": s.cost}
        return {"skill": self.skill, "agent": self.agent, "case": self.case, "with_skill": side(self.with_skill),
                "without_skill": side(self.without), "lift": self.lift, "token_savings": self.token_savings,
                "time_savings": self.time_savings, "beneficial": self.beneficial}


def _savings(with_skill: float | None, without: float | None) -> float | None:
    if with_skill is None or not without:
        return None
    return 1.0 - with_skill / without


def _side(rows: list[dict]) -> Side:
    tokens = [r["tokens_in"] + r["tokens_out"] for r in rows
              if r.get("tokens_in") is not None and r.get("tokens_out") is not None]
    seconds = [r["duration_s"] for r in rows if r.get("duration_s") is not None]
    costs = [r["cost_usd"] for r in rows if r.get("cost_usd") is not None]
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    return Side(len(rows), sum(1 for r in rows if r["passed"]), mean(tokens), mean(seconds), mean(costs))


def summarize(rows: list[dict]) -> list[Line]:
    """One line per (skill, agent, case), then one `(all)` line per (skill, agent)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:   # cases in the order they ran, each (skill, agent)'s overall line after its cases
        groups[(row["skill"], row["agent"], row["case"])].append(row)
        groups[(row["skill"], row["agent"], ALL)].append(row)
    order = []
    for pair in dict.fromkeys(key[:2] for key in groups):
        order += [key for key in groups if key[:2] == pair and key[2] != ALL] + [(*pair, ALL)]
    return [Line(*key, _side([r for r in groups[key] if r["with_skill"]]),
                 _side([r for r in groups[key] if not r["with_skill"]])) for key in order]


# -- the printed table ------------------------------------------------------------------
HEADER = ("skill", "agent", "case", "with", "without", "lift", "tokens with", "tokens w/o", "saved",
          "time with", "time w/o", "saved", "beneficial")


def render(lines: list[Line]) -> str:
    table = [HEADER]
    for line in lines:
        w, wo = line.with_skill, line.without
        table.append((line.skill, _short(line.agent), line.case, f"{w.passed}/{w.runs}",
                      f"{wo.passed}/{wo.runs}" if wo.runs else "-", _signed(line.lift), _number(w.tokens),
                      _number(wo.tokens), _percent(line.token_savings), _seconds(w.seconds), _seconds(wo.seconds),
                      _percent(line.time_savings),
                      ("yes" if line.beneficial else "no") if line.case == ALL and line.beneficial is not None
                      else ""))
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    return "\n".join(out) + "\n"


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0%}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"
