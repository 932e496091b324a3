"""Interactive charts (plotly figures) built from ReportData."""
from __future__ import annotations

import plotly.graph_objects as go

from .data import OUTCOMES, ReportData, curves_loss_name, leaderboard, main_line, overfit, pareto_front, with_cost

COLOURS = {"promoted": "#2ca02c", "baseline": "#1f77b4", "worse": "#9aa5b1", "violates": "#9467bd",
           "failed": "#d62728", "timed out": "#ff7f0e", "stale": "#8c564b", "cancelled": "#c7c7c7"}
SYMBOLS = {"promoted": "star", "baseline": "diamond", "violates": "x"}
WEBGL_ABOVE = 2000      # scatter points: SVG below (countable in the DOM), WebGL above
GANTT_CAP = 1500        # bars drawn in the Gantt chart (the most recent ones)
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=40), height=380,
              legend=dict(orientation="h", y=-0.2))


def _ts(moment) -> str:
    """UTC timestamps as plain strings: plotly serialises them far faster than datetime objects."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _scatter(n_points: int):
    return go.Scattergl if n_points > WEBGL_ABOVE else go.Scatter


def _hover(row: dict, metric: str) -> str:
    value = "n/a" if row["value"] is None else f"{row['value']:.6g}"
    delta = "" if row.get("delta") is None else f" (Δ {row['delta']:+.4g})"
    extra = "".join(f"<br>{text}" for text in (row.get("evidence_text"), row.get("constraint") and
                                                 f"broke {row['constraint']}") if text)
    return (f"{row['id']}<br>{row.get('title') or row['kind']}<br>{row['change_text']}<br>"
            f"{metric} {value}{delta} · {row['outcome']}{extra}")


def progression(data: ReportData, x_axis: str) -> go.Figure:
    """Every valid score against time (x_axis='time') or index ('index'), running best, band."""
    def x_of(row):
        return _ts(row["finished"]) if x_axis == "time" else row["index"]

    scored = [r for r in data.rows if r["value"] is not None and r["status"] == "finished"]
    kind = _scatter(len(scored))
    fig = go.Figure()
    best_rows = [r for r in data.rows if r["best"] is not None]
    if best_rows:
        xs = [x_of(r) for r in best_rows]
        best = [r["best"] for r in best_rows]
        sign = -1 if data.minimize else 1
        fig.add_trace(go.Scatter(x=xs, y=[b - sign * data.margin for b in best], mode="lines",
                                 line=dict(width=0, shape="hv"), hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=xs, y=[b + sign * data.margin for b in best], mode="lines",
                                 line=dict(width=0, shape="hv"), fill="tonexty",
                                 fillcolor="rgba(44,160,44,0.12)", hoverinfo="skip",
                                 name=f"noise margin ±{data.margin:.4g}"))
        fig.add_trace(go.Scatter(x=xs, y=best, mode="lines", name="best on main",
                                 line=dict(color=COLOURS["promoted"], shape="hv", width=2)))
    for name in OUTCOMES:
        rows = [r for r in scored if r["outcome"] == name]
        if not rows:
            continue
        fig.add_trace(kind(
            x=[x_of(r) for r in rows], y=[r["value"] for r in rows], mode="markers", name=name,
            marker=dict(color=COLOURS[name], symbol=SYMBOLS.get(name, "circle"),
                        size=12 if name in SYMBOLS else 7),
            hovertext=[_hover(r, data.metric) for r in rows], hoverinfo="text",
            meta="scores"))
    title = "time finished" if x_axis == "time" else "experiment index"
    fig.update_layout(title=f"{data.metric} by {title}", xaxis_title=title, yaxis_title=data.metric,
                      **LAYOUT)
    return fig


def pareto(data: ReportData) -> go.Figure | None:
    """Score against objective.cost for every result that printed it; the Pareto front highlighted
    (None without a cost metric or a result that printed it)."""
    rows = with_cost(data)
    if not data.cost_metric or not rows:
        return None
    front = pareto_front(data)
    on_front = {r["id"] for r in front}
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r["cost"] for r in front], y=[r["value"] for r in front], mode="lines",
                             line=dict(color=COLOURS["promoted"], shape="hv", width=2), name="Pareto front",
                             hoverinfo="skip"))
    groups = (("on the front", lambda r: r["id"] in on_front, COLOURS["promoted"], "star", 12),
              ("dominated", lambda r: r["id"] not in on_front and not r.get("constraint"), COLOURS["worse"],
               "circle", 8),
              ("violates a constraint", lambda r: bool(r.get("constraint")), COLOURS["violates"], "x", 9))
    for name, keep, colour, symbol, size in groups:
        mine = [r for r in rows if keep(r)]
        if mine:
            fig.add_trace(_scatter(len(mine))(
                x=[r["cost"] for r in mine], y=[r["value"] for r in mine], mode="markers", name=name,
                marker=dict(color=colour, symbol=symbol, size=size), meta="pareto", hoverinfo="text",
                hovertext=[_hover(r, data.metric) + f"<br>{data.cost_metric} {r['cost']:.4g}" for r in mine]))
    fig.update_layout(title=f"{data.metric} against {data.cost_metric}: the Pareto front",
                      xaxis_title=f"{data.cost_metric} (cost)", yaxis_title=data.metric, **LAYOUT)
    return fig


def _lane(row: dict) -> str:
    return row.get("slot") or row.get("worker") or "unassigned"


def gantt_rows(data: ReportData, cap: int = GANTT_CAP) -> list[dict]:
    timed = [r for r in data.rows if r.get("started") and r.get("finished")]
    return timed[-cap:]


def _bar_label(row: dict) -> str:
    if row["value"] is None:
        return row["outcome"]
    return f"{row['value']:.4g}" + ("★" if row["promoted"] else "")


def gantt(data: ReportData, cap: int = GANTT_CAP) -> go.Figure:
    """One lane per slot; each bar is an experiment, coloured by outcome, labelled by score."""
    rows = gantt_rows(data, cap)
    fig = go.Figure()
    for name in OUTCOMES:
        mine = [r for r in rows if r["outcome"] == name]
        if not mine:
            continue
        fig.add_trace(go.Bar(
            orientation="h", y=[_lane(r) for r in mine], base=[_ts(r["started"]) for r in mine],
            x=[max(1.0, (r["finished"] - r["started"]).total_seconds() * 1000.0) for r in mine],
            text=[_bar_label(r) for r in mine], textposition="inside", insidetextanchor="middle",
            marker=dict(color=COLOURS[name], line=dict(color="white", width=1)), name=name,
            hovertext=[_hover(r, data.metric) for r in mine], hoverinfo="text", meta="gantt"))
    lanes = sorted({_lane(r) for r in rows})
    shown = f" (latest {len(rows)} of {len(data.rows)})" if len(rows) < len(data.rows) else ""
    layout = {**LAYOUT, "height": max(220, 90 + 46 * len(lanes))}
    fig.update_layout(title=f"Experiments over time, one lane per slot{shown}", barmode="overlay",
                      xaxis=dict(type="date", title="time"),
                      yaxis=dict(categoryorder="array", categoryarray=lanes[::-1]), **layout)
    return fig


def loss_curves(data: ReportData) -> go.Figure | None:
    """Step loss of the best experiments against the first baseline (None without curves)."""
    name = curves_loss_name(data.curves)
    if name is None:
        return None
    fig = go.Figure()
    baseline = data.first_baseline["id"] if data.first_baseline else None
    order = [r["id"] for r in leaderboard(data, len(data.curves))]
    order += [exp for exp in data.curves if exp not in order]
    for exp_id in order:
        steps, values = data.curves.get(exp_id, {}).get(name, ([], []))
        if not steps:
            continue
        row = next(r for r in data.rows if r["id"] == exp_id)
        label = f"{exp_id} baseline" if exp_id == baseline else f"{exp_id} {row['change_text']}"[:60]
        line = dict(dash="dash", color="#1f77b4", width=2) if exp_id == baseline else dict(width=1.5)
        fig.add_trace(_scatter(len(steps))(x=steps, y=values, mode="lines", name=label, line=line,
                                           meta="loss"))
    fig.update_layout(title=f"{name} of the best experiments vs the baseline", xaxis_title="step",
                      yaxis_title=name, **LAYOUT)
    return fig


def holdout(data: ReportData) -> go.Figure | None:
    """The metric and the holdout metric along main's promotions (None without holdout figures); a
    promotion whose holdout got worse beyond the noise margin is flagged (selection overfitting)."""
    line = [r for r in main_line(data) if r.get("holdout") is not None]
    if not data.holdout or not line:
        return None
    xs = list(range(len(line)))
    hover = [_hover(r, data.metric) + f"<br>{data.holdout} {r['holdout']:.6g}" for r in line]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[r["value"] for r in line], mode="lines+markers", name=data.metric,
                             line=dict(color=COLOURS["promoted"]), hovertext=hover, hoverinfo="text",
                             meta="holdout-objective"))
    fig.add_trace(go.Scatter(x=xs, y=[r["holdout"] for r in line], mode="lines+markers", name=data.holdout,
                             line=dict(color=COLOURS["baseline"], dash="dot"), hovertext=hover, hoverinfo="text",
                             meta="holdout", yaxis="y2"))
    flagged = [(x, r) for x, r in zip(xs, line) if overfit(data, r)]
    if flagged:
        fig.add_trace(go.Scatter(x=[x for x, _ in flagged], y=[r["holdout"] for _, r in flagged], mode="markers",
                                 name=f"{data.holdout} worse beyond the margin", yaxis="y2", meta="overfit",
                                 marker=dict(color=COLOURS["failed"], symbol="x", size=14),
                                 hovertext=[f"{r['id']}: {data.holdout} {r['base_holdout']:.6g} -> {r['holdout']:.6g}"
                                            for _, r in flagged], hoverinfo="text"))
    fig.update_layout(title=f"{data.metric} vs {data.holdout} (holdout) along main's promotions",
                      xaxis=dict(title="main, promotion by promotion", tickmode="array", tickvals=xs,
                                 ticktext=["baseline", *map(str, xs[1:])]), yaxis_title=data.metric,
                      yaxis2=dict(title=data.holdout, overlaying="y", side="right"), **LAYOUT)
    return fig
