"""The self-contained HTML dashboard: plotly.js inlined, no CDN, works from file://."""
from __future__ import annotations

from html import escape
from pathlib import Path

from plotly.offline import get_plotlyjs

from ..loop.noise import EVIDENCE_Z
from . import charts, jobs, spend
from .data import ReportData, leaderboard, main_line, overfit, overview_line, relative_link
from .leaderboard import fmt_delta, fmt_seconds, fmt_value
from .skills import section_html as skills_html
from .status import noise_line

LEADERBOARD_ROWS = 200
EVENT_ROWS = 300
JOB_ROWS = 20           # recorded experiments in the Jobs table (after the running ones)
EXPERIMENT_FILES = ("experiment.yaml", "metrics.parquet", "patch.diff", "log.txt")

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:16px 24px;color:#1d2733;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #e3e8ee}
.overview{font-size:1.05em;background:#f4f7fa;border-left:4px solid #2ca02c;padding:8px 12px}
.meta{color:#67727e;font-size:.85em}.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}
table{border-collapse:collapse;width:100%;font-size:.85em}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #eef1f4;vertical-align:top}th{background:#f4f7fa;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.promoted td{background:#effaf0}
tr.violates td{background:#f6f0fa}
.lvl-error{color:#b3261e;font-weight:600}.lvl-warn{color:#a35d00;font-weight:600}.lvl-info{color:#3b6ea8}
a{color:#1f5fa8}.files a{margin-right:.5em}.stop{color:#b3261e;font-weight:600}
@media(max-width:900px){.grid{grid-template-columns:1fr}}
"""

# Runs before plotly: collects page errors so a headless browser test can read them from the DOM.
CAPTURE_JS = """
window.__reportErrors=[];
window.addEventListener('error',function(e){window.__reportErrors.push(String(e.message||e));});
(function(){var orig=console.error;console.error=function(){
window.__reportErrors.push(Array.prototype.map.call(arguments,String).join(' '));
return orig.apply(console,arguments);};})();
"""

# Runs after the charts: writes what plotly rendered into data attributes (read by tests),
# and, when served over http (`lab serve`), reloads the page when the report file changes.
AFTER_JS = """
(function(){
function count(gd){
  var data=gd.data||[],points=0;
  data.forEach(function(t){if(t.meta){points+=(t.x||[]).length;}});
  gd.dataset.traces=data.length;gd.dataset.points=points;
  gd.dataset.renderedMarkers=gd.querySelectorAll('g.points path.point').length;
  gd.dataset.renderedBars=gd.querySelectorAll('g.bars path').length;
  gd.dataset.renderedLines=gd.querySelectorAll('g.lines path.js-line').length;
}
function ready(){
  var plots=document.querySelectorAll('.chart .plotly-graph-div');
  for(var i=0;i<plots.length;i++){if(!plots[i]._fullLayout||!plots[i].querySelector('.main-svg'))return false;}
  for(var j=0;j<plots.length;j++){count(plots[j]);}
  document.body.dataset.charts=plots.length;
  document.body.dataset.chartsReady='1';
  document.body.dataset.errors=JSON.stringify(window.__reportErrors);
  return true;
}
var tries=0,timer=setInterval(function(){if(ready()||++tries>200)clearInterval(timer);},50);
if(location.protocol.indexOf('http')===0){
  var seen=null;
  setInterval(function(){
    fetch(location.href,{method:'HEAD',cache:'no-store'}).then(function(r){
      var stamp=r.headers.get('Last-Modified');
      if(seen&&stamp&&stamp!==seen){location.reload();}seen=stamp||seen;}).catch(function(){});
  },%(poll_ms)d);
}
})();
"""


def _chart(fig, div_id: str, empty: str = "No step metrics recorded yet.") -> str:
    if fig is None:
        return f'<div class="chart" id="{div_id}-none"><p class="meta">{escape(empty)}</p></div>'
    inner = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                        config={"displaylogo": False, "responsive": True})
    return f'<div class="chart">{inner}</div>'


def _files(data: ReportData, exp_id: str | None, out_dir: Path) -> str:
    if not exp_id:
        return ""
    folder = data.lab.experiments / exp_id
    links = [f'<a href="{escape(relative_link(folder / name, out_dir))}">{name}</a>'
             for name in EXPERIMENT_FILES if (folder / name).exists()]
    return f'<span class="files">{"".join(links)}</span>'


def _leaderboard_html(data: ReportData, out_dir: Path) -> str:
    ranked = leaderboard(data)
    rows = []
    cost = f"<th>{escape(data.cost_metric)}</th>" if data.cost_metric else ""
    for rank, r in enumerate(ranked[:LEADERBOARD_ROWS], 1):
        outcome = r["outcome"] + (f": {r['evidence_text']}" if r["evidence_text"] else "")
        outcome += f" ({r['constraint']})" if r.get("constraint") else ""
        cells = f'<td class="num">{fmt_value(r.get("cost"))}</td>' if data.cost_metric else ""
        rows.append(
            f'<tr class="{"promoted" if r["promoted"] else r["outcome"]}"><td class="num">{rank}</td>'
            f'<td>{escape(r["id"])}<br>{_files(data, r["id"], out_dir)}</td>'
            f'<td class="num">{fmt_value(r["value"])}</td><td class="num">{fmt_delta(r["delta"])}</td>{cells}'
            f'<td>{escape(outcome)}</td><td>{escape(r.get("title") or r["kind"])}</td>'
            f'<td>{escape(r["change_text"])}</td><td class="num">{fmt_seconds(r["duration_s"])}</td></tr>')
    more = f'<p class="meta">Showing {LEADERBOARD_ROWS} of {len(ranked)}.</p>' if len(ranked) > LEADERBOARD_ROWS else ""
    return (f'<table id="leaderboard" data-rows="{min(len(ranked), LEADERBOARD_ROWS)}"><thead><tr><th>#</th>'
            f'<th>experiment</th><th>{escape(data.metric)}</th><th>Δ vs base</th>{cost}<th>outcome</th>'
            f'<th>hypothesis</th><th>change</th><th>duration</th></tr></thead><tbody>{"".join(rows)}'
            f'</tbody></table>{more}')


def _events_html(data: ReportData, out_dir: Path) -> str:
    rows = []
    for e in data.events[:EVENT_ROWS]:
        path = ""
        if e.get("path"):
            target = data.lab.root / e["path"]
            path = f'<a href="{escape(relative_link(target, out_dir))}">{escape(e["path"])}</a>'
        rows.append(
            f'<tr><td>{e["at"]:%Y-%m-%d %H:%M:%S}</td><td class="lvl-{escape(e["level"])}">{escape(e["level"])}</td>'
            f'<td>{escape(e["kind"])}</td><td>{escape(e.get("experiment") or e.get("hypothesis") or "")}'
            f'<br>{_files(data, e.get("experiment"), out_dir)}</td><td>{escape(e["message"])} {path}</td></tr>')
    more = f'<p class="meta">Showing the latest {EVENT_ROWS} of {len(data.events)}.</p>' if len(data.events) > EVENT_ROWS else ""
    return (f'<table id="events" data-rows="{min(len(data.events), EVENT_ROWS)}"><thead><tr><th>at (UTC)</th>'
            f'<th>level</th><th>kind</th><th>experiment</th><th>message</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>{more}')


def _overfit_html(data: ReportData) -> str:
    """The promotions whose holdout got worse beyond the noise margin, named."""
    flagged = [r for r in main_line(data) if overfit(data, r)]
    items = "".join(f"<li>{escape(r['id'])} ({escape(r.get('title') or '')}): {escape(data.holdout)} "
                    f"{r['base_holdout']:.6g} → {r['holdout']:.6g} while {escape(data.metric)} "
                    f"{fmt_value(r['base_value'])} → {fmt_value(r['value'])}</li>" for r in flagged)
    text = ("Promotions whose holdout got worse by more than the noise margin (selection overfitting?):"
            if flagged else "No promotion made the holdout worse by more than the noise margin.")
    return f'<div id="overfit" data-flagged="{len(flagged)}"><p class="meta">{text}</p><ul>{items}</ul></div>'


def render(data: ReportData, out_dir: Path, poll_ms: int = 3000) -> str:
    title = f"{data.name}: lab report"
    direction = "lower" if data.minimize else "higher"
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Objective: {direction} {escape(data.metric)} is better. Generated '
        f'{data.generated:%Y-%m-%d %H:%M:%S} UTC from {escape(str(data.lab.root))}.</p>',
        f'<p class="meta" id="noise">Noise: {escape(noise_line(data.noise))}. Promotions below z '
        f'{EVIDENCE_Z:g} are single-run evidence unless a second seed confirmed them.</p>',
        f'<p class="overview" id="overview">{escape(overview_line(data))}</p>',
        "<h2>Score progression</h2>",
        '<div class="grid">' + _chart(charts.progression(data, "time"), "chart-progress-time")
        + _chart(charts.progression(data, "index"), "chart-progress-index") + "</div>",
        "<h2>Timeline</h2>", _chart(charts.gantt(data), "chart-gantt"),
        "<h2>Loss curves</h2>", _chart(charts.loss_curves(data), "chart-loss"),
        "<h2>Score against cost</h2>", _chart(charts.pareto(data), "chart-pareto",
                                              "No cost metric (objective.cost) recorded yet."),
        "<h2>Holdout</h2>", _chart(charts.holdout(data), "chart-holdout",
                                   "No holdout figures recorded (objective.holdout in lab.yaml)."),
        _overfit_html(data) if data.holdout else "",
        "<h2>Spend</h2>", spend.html(data.spend),
        "<h2>Leaderboard</h2>", _leaderboard_html(data, out_dir),
        "<h2>Jobs</h2>", jobs.html(jobs.rows(data.lab, [r["id"] for r in data.rows][::-1][:JOB_ROWS])),
        "<h2>Events</h2>", _events_html(data, out_dir),
        skills_html(data.lab),
    ]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style><script>{CAPTURE_JS}</script>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
            f'<body data-report="benchlab" data-experiments="{len(data.rows)}">{"".join(body)}'
            f"<script>{AFTER_JS % {'poll_ms': poll_ms}}</script></body></html>\n")
