"""Everything a report shows, read once from the lab's Parquet and YAML state.

The charts, the HTML page, the PNGs and the leaderboard all take a `ReportData`,
so each of them is a pure function of the files on disk.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow.compute as pc

from ..files.metrics import loss_name
from ..files.tables import METRICS, read_table
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..roles.review import self_reviewed
from ..state.events import read_events
from ..state.scores import scores
from ..state.timeutil import now
from . import spend
from .status import evidence_counts, evidence_phrase, noise_summary

OUTCOMES = ("promoted", "baseline", "worse", "violates", "failed", "timed out", "stale", "cancelled")
CURVES_TOP = 5          # loss curves of this many best experiments (plus the first baseline)


@dataclass
class ReportData:
    lab: Lab
    name: str
    metric: str
    minimize: bool
    noise: dict                            # margin, sigma, sigma_runs, base_runs, rate (report.status)
    rows: list[dict]                       # scores, ordered by finish time, with derived fields
    events: list[dict]
    cost_metric: str | None = None         # objective.cost
    curves: dict[str, dict[str, tuple[list, list]]] = field(default_factory=dict)
    self_reviewed: list[str] = field(default_factory=list)  # hypotheses accepted by their own author agent
    holdout: str | None = None             # objective.holdout: shown against the metric, never judged
    spend: dict = field(default_factory=dict)  # report/spend.py: spend so far and the stopping rules reached
    generated: datetime = field(default_factory=now)

    def better(self, a: float, b: float) -> bool:
        return a < b if self.minimize else a > b

    @property
    def margin(self) -> float:
        return self.noise["margin"]

    @property
    def valid(self) -> list[dict]:
        return [r for r in self.rows if _finite(r["value"]) and r["status"] == "finished"]

    @property
    def first_baseline(self) -> dict | None:
        return next((r for r in self.valid if r["kind"] == "baseline"), None)

    @property
    def best(self) -> dict | None:
        """Best on main: baselines and promotions only (what main holds)."""
        best = None
        for row in self.valid:
            if _on_main(row) and (best is None or self.better(row["value"], best["value"])):
                best = row
        return best


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _on_main(row: dict) -> bool:
    return bool(row["promoted"]) or row["kind"] == "baseline"


def outcome(row: dict) -> str:
    """One of OUTCOMES: how a bar in the Gantt chart is coloured."""
    status = row["status"]
    if status == "timed_out":
        return "timed out"
    if status in ("failed", "stale", "cancelled"):
        return status
    if row["promoted"]:
        return "promoted"
    if row["kind"] == "baseline":
        return "baseline"
    if row.get("constraint"):
        return "violates"
    return "worse" if _finite(row["value"]) else "failed"


def evidence_text(row: dict) -> str:
    """How far a promotion can be trusted: `strong (z 4.1)`, `single-run evidence (z 2.0)`, `confirmed`."""
    if not row["promoted"]:
        return ""
    evidence = row.get("evidence") or ""
    z = f" (z {row['z']:.1f})" if _finite(row.get("z")) else ""
    return ("single-run evidence" if evidence == "single-run" else evidence) + z if evidence or z else ""


def change_text(change_json: str | None, limit: int = 80) -> str:
    """`{"params": {"LR": 0.002}}` -> `LR=0.002`; instructions are shortened."""
    if not change_json:
        return ""
    try:
        change = json.loads(change_json)
    except ValueError:
        return change_json[:limit]
    if not isinstance(change, dict):
        return str(change)[:limit]
    parts = [f"{k}={v}" for k, v in (change.get("params") or {}).items()]
    if change.get("instructions"):
        parts.append(" ".join(str(change["instructions"]).split()))
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load(lab: Lab, curves_top: int = CURVES_TOP) -> ReportData:
    table = scores(lab)
    rows = _ordered(table.to_pylist())
    for index, row in enumerate(rows):
        row["index"] = index
        row["outcome"] = outcome(row)
        row["change_text"] = change_text(row.get("change"))
        row["evidence_text"] = evidence_text(row)
    data = ReportData(lab=lab, name=lab.config["lab"], metric=lab.metric, minimize=lab.minimize,
                      noise=noise_summary(lab, table), rows=rows, events=_events(lab),
                      cost_metric=lab.config["objective"].get("cost"), holdout=lab.config["objective"].get("holdout"))
    _fill_titles(lab, leaderboard(data, 50))
    _running_best(data)
    data.curves = _curves(lab, data, curves_top)
    data.self_reviewed = self_reviewed(lab)
    data.spend = spend.collect(lab, table, overview(data)["gain_pct"])
    return data


def _ordered(rows: list[dict]) -> list[dict]:
    def key(row):
        moment = row.get("finished") or row.get("started")
        return (moment is None, moment.timestamp() if moment else 0.0, row["id"])
    return sorted(rows, key=key)


def _events(lab: Lab) -> list[dict]:
    table = read_events(lab)
    if table.num_rows == 0:
        return []
    order = pc.sort_indices(table, sort_keys=[("at", "descending")])
    return table.take(order).to_pylist()


def main_line(data: ReportData) -> list[dict]:
    """Main's way: the first baseline, then each promotion, in the order they landed."""
    first = data.first_baseline
    return ([first] if first else []) + [r for r in data.valid if r["promoted"]]


def overfit(data: ReportData, row: dict) -> bool:
    """A promotion whose holdout got worse than its base's by more than the margin it was judged with."""
    if not (row["promoted"] and _finite(row.get("holdout")) and _finite(row.get("base_holdout"))):
        return False
    worse = row["holdout"] - row["base_holdout"] if data.minimize else row["base_holdout"] - row["holdout"]
    return worse > (row["margin"] if _finite(row.get("margin")) else data.margin)


def _running_best(data: ReportData) -> None:
    """row["best"]: the best on main once this row is recorded (None before the first)."""
    best = None
    for row in data.rows:
        if row["status"] == "finished" and _finite(row["value"]) and _on_main(row):
            if best is None or data.better(row["value"], best):
                best = row["value"]
        row["best"] = best


def _fill_titles(lab: Lab, rows: list[dict]) -> None:
    """Rows recorded without a title get their hypothesis's title (few files read)."""
    for row in rows:
        if row.get("title") or not row.get("hypothesis"):
            continue
        path = lab.hypotheses / f"{row['hypothesis']}.yaml"
        try:
            row["title"] = (load_yaml(path)[0] or {}).get("title")
        except Exception:  # a broken hypothesis file must not break the report
            row["title"] = None


def with_cost(data: ReportData) -> list[dict]:
    """Scored results that printed the cost metric (what the Pareto chart plots)."""
    return [r for r in data.valid if _finite(r.get("cost"))]


def pareto_front(data: ReportData) -> list[dict]:
    """Results no other result beats on both score and cost (lower cost is better), cheapest first;
    results that broke a constraint are not on it."""
    front, best = [], None
    for row in sorted((r for r in with_cost(data) if not r.get("constraint")),
                      key=lambda r: (r["cost"], r["value"] if data.minimize else -r["value"])):
        if best is None or data.better(row["value"], best):
            front.append(row)
            best = row["value"]
    return front


def leaderboard(data: ReportData, top: int | None = None) -> list[dict]:
    """Finished experiments with a valid score, best first."""
    ranked = sorted(data.valid, key=lambda r: r["value"], reverse=not data.minimize)
    return ranked if top is None else ranked[:top]


def _curves(lab: Lab, data: ReportData, top: int) -> dict:
    wanted = [r["id"] for r in leaderboard(data, top)]
    if data.first_baseline and data.first_baseline["id"] not in wanted:
        wanted.append(data.first_baseline["id"])
    curves = {}
    for exp_id in wanted:
        path = lab.experiments / exp_id / "metrics.parquet"
        if path.exists():
            curves[exp_id] = step_series(read_table(path, METRICS))
    return curves


def step_series(table) -> dict[str, tuple[list, list]]:
    """{name: (steps, values)} of the step metrics (not the summary lines)."""
    table = table.filter(pc.invert(table["summary"]))
    series: dict[str, tuple[list, list]] = {}
    for step, name, value in zip(table["step"].to_pylist(), table["name"].to_pylist(),
                                 table["value"].to_pylist()):
        if step is None:
            continue
        steps, values = series.setdefault(name, ([], []))
        steps.append(step)
        values.append(value)
    return series


def curves_loss_name(curves: dict) -> str | None:
    """The step metric the loss chart shows."""
    return loss_name(name for series in curves.values() for name in series)


def overview(data: ReportData) -> dict:
    statuses = [r["status"] for r in data.rows]
    best, first = data.best, data.first_baseline
    gain = None
    if best and first and first["value"]:
        gain = 100.0 * (best["value"] - first["value"]) / abs(first["value"])
    return {
        "run": len(data.rows),
        "promoted": sum(1 for r in data.rows if r["promoted"]),
        "evidence": evidence_counts([r.get("evidence") for r in data.rows if r["promoted"]]),
        "failed": statuses.count("failed"),
        "timed_out": statuses.count("timed_out"),
        "stale": statuses.count("stale"),
        "compute_s": sum(r["duration_s"] or 0.0 for r in data.rows),
        "best": best["value"] if best else None,
        "best_id": best["id"] if best else None,
        "first_baseline": first["value"] if first else None,
        "gain_pct": gain,
    }


def overview_line(data: ReportData) -> str:
    o = overview(data)
    evidence = evidence_phrase(o["evidence"])
    promoted = f"{o['promoted']} promoted" + (f" ({evidence})" if evidence else "")
    text = (f"{o['run']} experiments run, {promoted}, {o['failed']} failed, "
            f"{o['timed_out']} timed out; compute {_duration(o['compute_s'])}")
    if o["best"] is not None:
        text += f"; best {data.metric} {o['best']:.6g} ({o['best_id']})"
    if o["gain_pct"] is not None:
        text += f", {o['gain_pct']:+.2f}% vs first baseline {o['first_baseline']:.6g}"
    if data.self_reviewed:
        text += f"; {len(data.self_reviewed)} hypotheses accepted by the agent that wrote them (no second look)"
    return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def relative_link(target: Path, out_dir: Path) -> str:
    """A link from a page in out_dir to a lab file, relative so it works from file://."""
    return Path(os.path.relpath(target.resolve(), out_dir.resolve())).as_posix()
