"""`lab report`: an HTML dashboard, PNG charts and the Markdown leaderboard.

    write_report(lab, out_dir=None) -> Path        # <out>/index.html (+ PNGs, summary.json)
    write_leaderboard(lab) -> Path                 # experiments/LEADERBOARD.md
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..files.yamlio import atomic_write
from ..lab import Lab
from .data import ReportData, load, overview
from .leaderboard import write_leaderboard

__all__ = ["write_report", "write_leaderboard", "default_out_dir", "load", "ReportData"]


def default_out_dir(lab: Lab) -> Path:
    return lab.runtime / "report"


def write_report(lab: Lab, out_dir: Path | None = None, *, pngs: bool = True,
                 png_dir: Path | None = None, data: ReportData | None = None) -> Path:
    """Write index.html (self-contained), the PNG charts and summary.json; return the HTML path.

    png_dir: also copy the PNGs there (e.g. docs/ for a README)."""
    from . import page  # plotly/matplotlib are imported only when reporting
    from . import pngs as png_charts

    out_dir = Path(out_dir) if out_dir else default_out_dir(lab)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = data or load(lab)
    written = png_charts.write_pngs(data, out_dir) if pngs else []
    summary = {**overview(data), "metric": data.metric, "pngs": [p.name for p in written],
               "generated": data.generated.isoformat()}
    atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    html = out_dir / "index.html"
    atomic_write(html, page.render(data, out_dir))
    if png_dir and written:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
        for path in written:
            shutil.copyfile(path, Path(png_dir) / path.name)
    return html
