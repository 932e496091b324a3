"""Static PNG copies of the charts (matplotlib), for agents and READMEs."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from ..files.yamlio import atomic_write  # noqa: E402
from .charts import COLOURS, GANTT_CAP, _lane, gantt_rows  # noqa: E402
from .data import OUTCOMES, ReportData, curves_loss_name, leaderboard, pareto_front, with_cost  # noqa: E402

LABELS_UP_TO = 120      # bars annotated with their score in the PNG Gantt chart
MARKERS = {"promoted": "*", "baseline": "D", "violates": "x"}


def _save(fig, path: Path) -> Path:
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def progression_png(data: ReportData, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for ax, x_axis in zip(axes, ("time", "index")):
        def x_of(row):
            return row["finished"] if x_axis == "time" else row["index"]
        best_rows = [r for r in data.rows if r["best"] is not None]
        if best_rows:
            xs, best = [x_of(r) for r in best_rows], [r["best"] for r in best_rows]
            ax.fill_between(xs, [b - data.margin for b in best], [b + data.margin for b in best],
                            step="post", color=COLOURS["promoted"], alpha=0.12,
                            label=f"noise margin ±{data.margin:.4g}")
            ax.step(xs, best, where="post", color=COLOURS["promoted"], label="best on main")
        for name in OUTCOMES:
            rows = [r for r in data.rows if r["outcome"] == name and r["value"] is not None
                    and r["status"] == "finished"]
            if rows:
                ax.scatter([x_of(r) for r in rows], [r["value"] for r in rows], s=60 if name in MARKERS else 16,
                           marker=MARKERS.get(name, "o"), color=COLOURS[name], label=name, zorder=3)
        ax.set_xlabel("time finished" if x_axis == "time" else "experiment index")
        ax.set_ylabel(data.metric)
        ax.grid(alpha=0.3)
        if x_axis == "time":
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{data.name}: {data.metric} progression")
    return _save(fig, path)


def gantt_png(data: ReportData, path: Path, cap: int = GANTT_CAP) -> Path:
    rows = gantt_rows(data, cap)
    lanes = sorted({_lane(r) for r in rows}) or ["-"]
    fig, ax = plt.subplots(figsize=(13, 1.2 + 0.55 * len(lanes)))
    for name in OUTCOMES:
        mine = [r for r in rows if r["outcome"] == name]
        for lane_index, lane in enumerate(lanes):
            spans = [(mdates.date2num(r["started"]), mdates.date2num(r["finished"]) - mdates.date2num(r["started"]))
                     for r in mine if _lane(r) == lane]
            if spans:  # one collection per lane and outcome: fast with thousands of bars
                ax.broken_barh(spans, (lane_index - 0.35, 0.7), facecolors=COLOURS[name], edgecolor="white",
                               linewidth=0.5, label=name if lane_index == min(
                                   lanes.index(_lane(r)) for r in mine) else None)
    if len(rows) <= LABELS_UP_TO:
        for row in rows:
            if row["value"] is not None:
                middle = mdates.date2num(row["started"]) + (
                    mdates.date2num(row["finished"]) - mdates.date2num(row["started"])) / 2
                ax.text(middle, lanes.index(_lane(row)), f"{row['value']:.4g}", ha="center",
                        va="center", fontsize=7, color="black")
    ax.set_yticks(range(len(lanes)), lanes)
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    if rows:
        ax.legend(fontsize=7, ncol=len(OUTCOMES), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax.set_title(f"{data.name}: experiments over time, one lane per slot")
    return _save(fig, path)


def loss_png(data: ReportData, path: Path) -> Path | None:
    name = curves_loss_name(data.curves)
    if name is None:
        return None
    baseline = data.first_baseline["id"] if data.first_baseline else None
    fig, ax = plt.subplots(figsize=(9, 4.2))
    order = [r["id"] for r in leaderboard(data, len(data.curves))]
    for exp_id in order + [e for e in data.curves if e not in order]:
        steps, values = data.curves.get(exp_id, {}).get(name, ([], []))
        if steps:
            style = dict(ls="--", lw=2, color=COLOURS["baseline"]) if exp_id == baseline else dict(lw=1.2)
            ax.plot(steps, values, label=f"{exp_id} (baseline)" if exp_id == baseline else exp_id, **style)
    ax.set_xlabel("step")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{name}: best experiments vs the baseline")
    return _save(fig, path)


def pareto_png(data: ReportData, path: Path) -> Path | None:
    rows = with_cost(data)
    if not data.cost_metric or not rows:
        return None
    front = pareto_front(data)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.step([r["cost"] for r in front], [r["value"] for r in front], where="post", color=COLOURS["promoted"],
            label="Pareto front")
    on_front = {r["id"] for r in front}
    for name, keep, colour, marker in (
            ("on the front", lambda r: r["id"] in on_front, COLOURS["promoted"], "*"),
            ("dominated", lambda r: r["id"] not in on_front and not r.get("constraint"), COLOURS["worse"], "o"),
            ("violates a constraint", lambda r: bool(r.get("constraint")), COLOURS["violates"], "x")):
        mine = [r for r in rows if keep(r)]
        if mine:
            ax.scatter([r["cost"] for r in mine], [r["value"] for r in mine], marker=marker, color=colour,
                       s=60 if marker == "*" else 20, label=name, zorder=3)
    ax.set_xlabel(f"{data.cost_metric} (cost)")
    ax.set_ylabel(data.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{data.metric} against {data.cost_metric}: the Pareto front")
    return _save(fig, path)


def write_pngs(data: ReportData, out_dir: Path) -> list[Path]:
    paths = [progression_png(data, out_dir / "progression.png"), gantt_png(data, out_dir / "gantt.png")]
    extra = [loss_png(data, out_dir / "loss.png"), pareto_png(data, out_dir / "pareto.png")]
    return paths + [p for p in extra if p]
