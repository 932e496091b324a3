"""The report in a real headless browser (Debian's chromium): loads from file:// with no errors,
the charts hold the right number of bars and points, and a screenshot is kept as an artifact.

The page's own script writes what plotly rendered (SVG bars, markers, lines) and any page error
or console.error into data attributes of the DOM, which `--dump-dom` returns after the page's
JS ran; chromium's own console log (stderr) is checked for uncaught errors too.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.compute as pc
import pytest
from fixtures.make_lab import make_lab
from fixtures.real_lab import real_lab

from runner.files.tables import METRICS, read_table
from runner.state.scores import scores as read_scores
from runner.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=8000"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


class Charts(HTMLParser):
    """data-* attributes of <body> and of each chart div, from the dumped DOM."""

    def __init__(self, dom: str):
        super().__init__()
        self.body, self.charts, self.overfit = {}, {}, {}
        self._in_overfit = False
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "div" and (attrs.get("id") or "").startswith("chart-") and "data-traces" in attrs:
            self.charts[attrs["id"]] = attrs
        elif tag == "div" and attrs.get("id") == "overfit":
            self.overfit, self._in_overfit = {"data-flagged": attrs["data-flagged"], "ids": []}, True

    def handle_endtag(self, tag):
        if tag == "div":
            self._in_overfit = False

    def handle_data(self, data):
        if self._in_overfit and data.strip().startswith("e-"):
            self.overfit["ids"].append(data.split()[0])


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line and re.search(r"Uncaught|Error", line)]


def expected_counts(lab) -> dict:
    """What the charts must show, computed straight from the Parquet files."""
    scores = read_scores(lab)
    timed = pc.and_(pc.is_valid(scores["started"]), pc.is_valid(scores["finished"]))
    scored = scores.filter(pc.and_(pc.equal(scores["status"], "finished"), pc.is_valid(scores["value"])))
    ranked = sorted(scored.to_pylist(), key=lambda r: r["value"], reverse=not lab.minimize)
    curves = [r["id"] for r in ranked[:5]]
    baselines = [r["id"] for r in scored.to_pylist() if r["kind"] == "baseline"]
    if baselines and baselines[0] not in curves:
        curves.append(baselines[0])
    with_loss = [e for e in curves if "train_loss" in read_table(
        lab.experiments / e / "metrics.parquet", METRICS)["name"].to_pylist()]
    costed = scored.filter(pc.is_valid(scored["cost"])).num_rows if lab.config["objective"].get("cost") else 0
    rows = sorted(scored.to_pylist(), key=lambda r: r["finished"])
    main = [r for r in rows if r["kind"] == "baseline"][:1] + [r for r in rows if r["promoted"]]
    main = [r for r in main if r["holdout"] is not None]
    overfit = [r["id"] for r in main if r["promoted"] and r["holdout"] - r["base_holdout"] > r["margin"]]
    return {"bars": pc.sum(timed).as_py(), "markers": scored.num_rows, "lines": len(with_loss), "pareto": costed,
            "holdout_markers": 2 * len(main) + len(overfit), "overfit": overfit}


@pytest.fixture(scope="module", params=["real", "generated"])
def report(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    lab = real_lab(root / "lab") if request.param == "real" else make_lab(root / "lab", 14)
    return lab, write_report(lab)


def test_report_renders_in_chromium_without_errors(report, tmp_path):
    lab, html = report
    done = chromium(tmp_path, "--dump-dom", html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    page = Charts(done.stdout)
    assert page.body.get("data-charts-ready") == "1", "plotly did not finish rendering"
    assert json.loads(page.body["data-errors"]) == []
    assert console_errors(done.stderr) == []
    want = expected_counts(lab)
    charts = page.charts
    assert int(charts["chart-gantt"]["data-rendered-bars"]) == want["bars"] > 0
    for chart in ("chart-progress-time", "chart-progress-index"):
        assert int(charts[chart]["data-rendered-markers"]) == want["markers"] > 0
    assert int(charts["chart-loss"]["data-rendered-lines"]) == want["lines"] > 0
    if lab.root.parent.name.startswith("generated"):   # recorded with a holdout, one promotion crafted to overfit
        assert int(charts["chart-holdout"]["data-rendered-markers"]) == want["holdout_markers"] > 2
        assert int(charts["chart-holdout"]["data-rendered-lines"]) == 2
        assert len(want["overfit"]) == 1 and page.overfit == {"data-flagged": "1", "ids": want["overfit"]}
    else:                                              # recorded before train.py printed a holdout figure
        assert "chart-holdout" not in charts and 'id="chart-holdout-none"' in done.stdout
    if want["pareto"]:     # score against objective.cost: one marker per result that printed the cost
        assert int(charts["chart-pareto"]["data-rendered-markers"]) == want["pareto"]
        assert int(charts["chart-pareto"]["data-points"]) == want["pareto"]
        assert int(charts["chart-pareto"]["data-rendered-lines"]) == 1          # the front
    else:                  # a lab recorded before objective.cost: the page says so, and still renders
        assert "chart-pareto" not in charts and 'id="chart-pareto-none"' in done.stdout


def test_the_generated_lab_has_a_cost_front_and_a_violator():
    from runner.report.data import load, pareto_front
    with tempfile.TemporaryDirectory() as tmp:
        data = load(make_lab(Path(tmp) / "lab", 14))
        front = pareto_front(data)
        assert data.cost_metric == "train_seconds" and len(front) >= 2
        assert any(r["outcome"] == "violates" for r in data.rows)
        assert not any(r.get("constraint") for r in front)


def test_screenshot_is_saved_as_an_artifact(report, tmp_path):
    lab, html = report
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"report-{lab.root.parent.name.rstrip('0123456789')}.png"
    done = chromium(tmp_path, "--hide-scrollbars", "--window-size=1400,2200", f"--screenshot={shot}", html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000


def test_a_broken_page_is_caught(report, tmp_path):
    """The checks above can fail: a page whose script throws is reported."""
    _, html = report
    broken = tmp_path / "broken.html"
    broken.write_text(html.read_text().replace("</body>", "<script>notAFunction();</script></body>"))
    done = chromium(tmp_path, "--dump-dom", broken.as_uri())
    page = Charts(done.stdout)
    assert "notAFunction" in page.body["data-errors"]
    assert any("notAFunction" in line for line in console_errors(done.stderr))
