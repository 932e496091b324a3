"""`lab report` and `lab serve`: the browser dashboard of a lab."""
from __future__ import annotations

import threading
import webbrowser
from pathlib import Path

import click

from .context import Context, pass_ctx


def _out_dir(ctx: Context, out: str | None) -> Path:
    from ..report import default_out_dir
    return Path(out).resolve() if out else default_out_dir(ctx.lab)


def _build(ctx: Context, out_dir: Path, png_dir: str | None) -> Path:
    from ..report import write_leaderboard, write_report
    html = write_report(ctx.viewed_lab, out_dir, png_dir=Path(png_dir) if png_dir else None)
    write_leaderboard(ctx.lab)
    return html


@click.command("report")
@click.option("--out", "out", metavar="DIR", help="Where to write index.html and the PNGs [default: .lab/report].")
@click.option("--png-dir", metavar="DIR", help="Also copy the PNG charts there (e.g. docs/ for a README).")
@click.option("--open", "open_", is_flag=True, help="Open the report in a browser.")
@click.option("--watch", is_flag=True, help="Keep regenerating it as results land (Ctrl-C to stop).")
@click.option("--interval", type=float, default=1.0, show_default=True, help="--watch: seconds between checks.")
@pass_ctx
def report_command(ctx: Context, out: str | None, png_dir: str | None, open_: bool, watch: bool,
                   interval: float) -> None:
    """Write the lab's dashboard: a self-contained HTML file (works offline) and PNG charts.

    Score progression, a Gantt chart of experiments per slot, loss curves, the leaderboard and
    the events. Also rewrites experiments/LEADERBOARD.md.
    """
    out_dir = _out_dir(ctx, out)
    html = _build(ctx, out_dir, png_dir)
    click.echo(str(html))
    if open_:
        webbrowser.open(html.as_uri())
    if watch:
        from ..report.serve import watch as watch_loop
        click.echo("watching for new results (Ctrl-C to stop)", err=True)
        try:
            watch_loop(ctx.lab, lambda: _build(ctx, out_dir, png_dir), interval=interval,
                       on_error=lambda text: click.echo(f"report failed: {text}", err=True))
        except KeyboardInterrupt:
            pass


@click.command("serve")
@click.option("--port", type=int, default=8765, show_default=True, help="Port on 127.0.0.1 (0: any free port).")
@click.option("--out", "out", metavar="DIR", help="The report folder [default: .lab/report].")
@click.option("--no-watch", is_flag=True, help="Serve as is; do not regenerate on new results.")
@click.option("--open", "open_", is_flag=True, help="Open the page in a browser.")
@pass_ctx
def serve_command(ctx: Context, port: int, out: str | None, no_watch: bool, open_: bool) -> None:
    """Serve the dashboard on 127.0.0.1; the page reloads itself when results land."""
    from ..report.serve import make_server, url_of
    from ..report.serve import watch as watch_loop
    out_dir = _out_dir(ctx, out)
    _build(ctx, out_dir, None)
    server = make_server(ctx.lab, out_dir, port)
    stop = threading.Event()
    if not no_watch:
        threading.Thread(target=watch_loop, args=(ctx.lab, lambda: _build(ctx, out_dir, None)),
                         kwargs={"stop": stop}, daemon=True, name="lab-report-watch").start()
    click.echo(f"serving {out_dir} at {url_of(server)} (Ctrl-C to stop)")
    if open_:
        webbrowser.open(url_of(server))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()


