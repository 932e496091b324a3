"""One line per start and per result: what a person watching the loop wants to see."""
from __future__ import annotations

import click


def progress_line(lab, kind: str, info: dict) -> str | None:
    """One line per start and per result: what a person watching the loop wants to see."""
    entry = info["entry"]
    if kind == "running":
        change = (entry.data.get("change") or {}).get("params") or ("baseline" if entry.is_baseline else "")
        if entry.kind == "confirm":
            change = f"{change} (confirms {entry.data.get('confirms')} on another seed)"
        return f"start     {entry.id}  {(entry.data.get('job') or {}).get('slot', '')}  {change}"
    if kind == "recorded":
        o = info["outcome"]
        value = f"{lab.metric} {o.value:.4f}" if isinstance(o.value, float) and o.value == o.value else "-"
        mark = "PROMOTED" if o.promoted else o.status
        return f"{mark:<9} {entry.id}  {value}  {o.reason[:100]}"
    return None


def progress_printer(lab):
    def on_event(kind: str, info: dict) -> None:
        line = progress_line(lab, kind, info)
        if line:
            click.echo("  " + line)
    return on_event
