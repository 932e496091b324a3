"""Spend so far (by backend, by agent role, per promoted gain) and the stopping rules reached,
for `lab status` and the report's Spend section."""
from __future__ import annotations

from html import escape

from ..lab import Lab
from ..loop.stopping import reached
from ..state.accounting import spend


def collect(lab: Lab, table, gain_pct: float | None) -> dict:
    """Spend, the budget, dollars per 1% of the metric gained, and every stopping rule reached."""
    spent = spend(lab)
    per_gain = spent.usd / abs(gain_pct) if gain_pct and spent.usd else None
    return {"usd": spent.usd, "gpu_hours": spent.gpu_hours, "agent_tokens": spent.agent_tokens,
            "wall_hours": spent.wall_hours, "by_backend": spent.by_backend, "by_role": spent.by_role,
            "usd_per_gain_pct": per_gain, "budget": lab.config["limits"].get("budget") or {},
            "stops": [{"kind": r.kind, "message": r.message, "stops": r.stops}
                      for r in reached(lab, lab.config, table)]}


def _of(spent: dict, name: str, fmt: str) -> str:
    limit = spent["budget"].get(name)
    return format(spent[name], fmt) + (f" of {limit:g}" if limit is not None else "")


def lines(spent: dict) -> list[str]:
    """`lab status`: what stopped the lab (first), then what it spent."""
    out = [f"{'stopped' if r['stops'] else 'alert'}: {r['message']}" for r in spent["stops"]]
    out.append(f"spend: ${_of(spent, 'usd', '.4g')}, {_of(spent, 'gpu_hours', '.3g')} GPU-hours, "
               f"{_of(spent, 'agent_tokens', ',d')} agent tokens, {_of(spent, 'wall_hours', '.2f')} wall-clock hours")
    if spent["usd_per_gain_pct"] is not None:
        out.append(f"  ${spent['usd_per_gain_pct']:.4g} per 1% of the metric gained on main")
    for name, b in sorted(spent["by_backend"].items()):
        out.append(f"  backend {name}: {b['jobs']} jobs, {b['seconds'] / 3600:.3g} h, {b['gpu_hours']:.3g} "
                   f"GPU-hours, ${b['usd']:.4g}")
    for name, r in sorted(spent["by_role"].items()):
        out.append(f"  role {name}: {r['runs']} agent runs, {r['tokens']:,} tokens, ${r['usd']:.4g}")
    return out


def html(spent: dict) -> str:
    """The report's Spend section: the rules reached, then one row per backend and per role."""
    stops = "".join(f'<p class="stop" data-stops="{int(r["stops"])}">{"stopped" if r["stops"] else "alert"}: '
                    f'{escape(r["message"])}</p>' for r in spent["stops"])
    rows = [f'<tr><td>backend {escape(name)}</td><td class="num">{b["jobs"]} jobs</td><td class="num">'
            f'{b["gpu_hours"]:.3g} GPU-h</td><td class="num">${b["usd"]:.4g}</td></tr>'
            for name, b in sorted(spent["by_backend"].items())]
    rows += [f'<tr><td>role {escape(name)}</td><td class="num">{r["runs"]} runs</td><td class="num">'
             f'{r["tokens"]:,} tokens</td><td class="num">${r["usd"]:.4g}</td></tr>'
             for name, r in sorted(spent["by_role"].items())]
    per_gain = (f"; ${spent['usd_per_gain_pct']:.4g} per 1% of the metric gained"
                if spent["usd_per_gain_pct"] is not None else "")
    return (f'{stops}<p class="meta" id="spend">Spent ${spent["usd"]:.4g}, {spent["gpu_hours"]:.3g} GPU-hours, '
            f'{spent["agent_tokens"]:,} agent tokens over {spent["wall_hours"]:.2f} h{per_gain}.</p>'
            f'<table id="spend-table" data-rows="{len(rows)}"><tbody>{"".join(rows)}</tbody></table>')
