"""`lab status`: a short summary, or a live view with --watch."""
from __future__ import annotations

import click

from .context import Context, emit_json, pass_ctx


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for agents.")
@click.option("--watch", is_flag=True, help="A live view: running jobs and progress, queue, best, events.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between frames (--watch).")
@pass_ctx
def status_command(ctx: Context, as_json: bool, watch: bool, interval: float) -> None:
    """A short summary: hypotheses, queue, finished experiments, best score, recent events."""
    if watch:
        from ..report.live import watch as live_view
        live_view(ctx.viewed_lab, interval)
        return
    from ..report.status import collect, render
    info = collect(ctx.viewed_lab)
    emit_json(info) if as_json else click.echo(render(info))
