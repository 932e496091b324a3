"""`lab report`: HTML, PNGs, leaderboard, watch, serve and the live status view, on fixture labs."""
from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from datetime import timedelta
from html.parser import HTMLParser

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from fixtures.make_lab import START, make_lab, write_config

from runner.commands.context import Context
from runner.commands.report import report_command
from runner.files.tables import SCORES
from runner.lab import Lab
from runner.report import write_leaderboard, write_report
from runner.report.live import render
from runner.report.serve import make_server, watch
from runner.state.create import write_checked
from runner.state.scores import scores, write_score
from runner.state.timeutil import iso

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Tags(HTMLParser):
    """The page's real tags (script bodies such as plotly.js are not parsed as markup)."""

    def __init__(self, html: str):
        super().__init__()
        self.scripts, self.links = [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "a":
            self.links.append(attrs.get("href"))


@pytest.fixture(scope="module")
def fixture_lab(tmp_path_factory) -> Lab:
    return make_lab(tmp_path_factory.mktemp("lab"), 14)


def test_html_is_self_contained_and_matches_the_parquet(fixture_lab, tmp_path):
    html_path = write_report(fixture_lab, tmp_path / "out")
    html = html_path.read_text()
    assert html_path == tmp_path / "out" / "index.html"
    tags = Tags(html)
    assert tags.scripts and not any("src" in script for script in tags.scripts)     # no CDN, no external JS
    assert len(html) > 3_000_000 and "Plotly.newPlot" in html                       # plotly.js is inlined
    table = scores(fixture_lab)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["run"] == table.num_rows
    assert summary["promoted"] == pc.sum(table["promoted"]).as_py()
    assert summary["failed"] == pc.sum(pc.equal(table["status"], "failed")).as_py() >= 1
    finished_main = table.filter(pc.and_(pc.equal(table["status"], "finished"),
                                         pc.or_(table["promoted"], pc.equal(table["kind"], "baseline"))))
    assert summary["best"] == pc.min(finished_main["value"]).as_py()
    for chart in ("chart-progress-time", "chart-progress-index", "chart-gantt", "chart-loss"):
        assert f'id="{chart}"' in html
    assert f"{summary['run']} experiments run, {summary['promoted']} promoted" in html


def test_links_are_relative_and_resolve(fixture_lab, tmp_path):
    out = tmp_path / "deep" / "out"
    html = write_report(fixture_lab, out).read_text()
    links = Tags(html).links
    assert links and all(not link.startswith(("/", "file:", "http")) for link in links)
    assert all((out / link).resolve().exists() for link in links)
    assert any(link.endswith("patch.diff") for link in links) and any("metrics.parquet" in link for link in links)


def test_pngs_are_real_images(fixture_lab, tmp_path):
    write_report(fixture_lab, tmp_path / "out", png_dir=tmp_path / "docs")
    for name in ("progression.png", "gantt.png", "loss.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        assert (tmp_path / "docs" / name).read_bytes() == data


def test_leaderboard_is_best_first_and_short(fixture_lab):
    path = write_leaderboard(fixture_lab, top=5)
    text = path.read_text()
    assert path == fixture_lab.experiments / "LEADERBOARD.md"
    values = [float(v) for v in re.findall(r"^\| \d+ \| \[[^]]+\]\([^)]+\) \| ([0-9.]+) \|", text, re.M)]
    table = scores(fixture_lab)
    finished = sorted(v for v, s in zip(table["value"].to_pylist(), table["status"].to_pylist())
                      if s == "finished" and v is not None)
    assert values == [float(f"{v:.6g}") for v in finished[:5]]
    assert "promoted" in text and "vs first baseline" in text
    assert not list(fixture_lab.experiments.glob(".LEADERBOARD.md.*"))           # no temp file left


def test_empty_lab_reports_without_data(tmp_path):
    write_config(tmp_path)
    lab = Lab(tmp_path)
    html = write_report(lab).read_text()
    assert "0 experiments run" in html and "No step metrics recorded yet" in html
    assert "no scored experiment yet" in write_leaderboard(lab).read_text()


def test_cli_report_writes_html_and_leaderboard(tmp_path):
    lab = make_lab(tmp_path / "lab", 5, steps=10)
    result = CliRunner().invoke(report_command, ["--out", str(tmp_path / "r")], obj=Context(str(lab.root)))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "r" / "index.html")
    assert (lab.experiments / "LEADERBOARD.md").exists()


def _append_score(lab: Lab, exp_id: str) -> None:
    write_score(lab, {"id": exp_id, "kind": "experiment", "status": "finished", "value": 2.0, "promoted": False,
                      "slot": "slot-0", "started": START + timedelta(hours=1),
                      "finished": START + timedelta(hours=1, seconds=20)})


def test_watch_rebuilds_once_results_settle(tmp_path):
    lab = make_lab(tmp_path / "lab", 4, steps=5)
    built = []
    first = threading.Event()

    def build():
        built.append(scores(lab).num_rows)
        first.set()

    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(lab, build),
                              kwargs=dict(interval=0.05, debounce=0.1, stop=stop, max_builds=2))
    thread.start()
    assert first.wait(5)
    _append_score(lab, "e-new")
    thread.join(10)
    stop.set()
    assert built == [4, 5]


def test_serve_on_localhost_with_experiment_files_and_no_escape(fixture_lab):
    out = fixture_lab.runtime / "report"
    write_report(fixture_lab, out, pngs=False)
    server = make_server(fixture_lab, out, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/index.html", timeout=5) as answer:
            assert answer.status == 200 and b"Plotly" in answer.read()
        head = urllib.request.Request(f"{base}/index.html", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as answer:
            assert answer.headers["Last-Modified"] and answer.headers["Cache-Control"] == "no-store"
        exp_id = scores(fixture_lab)["id"][0].as_py()
        with urllib.request.urlopen(f"{base}/experiments/{exp_id}/experiment.yaml", timeout=5) as answer:
            assert f"id: {exp_id}".encode() in answer.read()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/experiments/../../lab.yaml", timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_live_view_shows_running_jobs_queue_best_and_events(tmp_path):
    lab = make_lab(tmp_path / "lab", 6, steps=5)
    now = START + timedelta(hours=2)
    job = {"backend": "local", "slot": "slot-1", "started": iso(now - timedelta(seconds=150))}
    for exp_id, status in (("e-run", "running"), ("e-wait", "queued")):
        doc = {"id": exp_id, "hypothesis": "h-x", "kind": "experiment", "status": status, "base": "a" * 40,
               "change": {"params": {"N_LAYER": 3}}, "created": iso(now)}
        if status == "running":
            doc["job"] = job
        write_checked(lab.queue / f"{exp_id}.yaml", "experiment", doc, lab)
    metrics = lab.job_dir("e-run", 1) / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"step": 41, "train_loss": 2.5}\n{"step": 42, "train_loss": 2.4567}\n')
    frame = render(lab, now=now, width=120)
    assert "slots 1/2 busy" in frame and "queue 1 queued" in frame
    assert re.search(r"e-run\s+slot-1\s+\[######\.+\]\s+2m30s/5m00s\s+step 42\s+train_loss 2.457", frame)
    assert "best on main" in frame and "recent events:" in frame
    assert "timed_out" in frame                                          # the fixture's events


def test_charts_hold_one_bar_per_experiment_and_one_point_per_score(fixture_lab):
    """Counted in the figures themselves, from the Parquet (test_report_browser counts what chromium drew)."""
    from runner.report import charts, data as report_data
    loaded = report_data.load(fixture_lab)
    table = ds.dataset(fixture_lab.experiments / "scores", schema=SCORES).to_table()   # every file, pyarrow alone
    timed = pc.sum(pc.and_(pc.is_valid(table["started"]), pc.is_valid(table["finished"]))).as_py()
    scored = table.filter(pc.and_(pc.equal(table["status"], "finished"), pc.is_valid(table["value"]))).num_rows
    bars = [trace for trace in charts.gantt(loaded).data if trace.type == "bar"]
    assert sum(len(trace.x) for trace in bars) == timed == table.num_rows > 0
    ids = sorted(i for trace in bars for i in (h.split("<br>")[0] for h in trace.hovertext))
    assert ids == sorted(table["id"].to_pylist())                      # every experiment, each once
    for axis in ("time", "index"):
        markers = [t for t in charts.progression(loaded, axis).data if t.mode == "markers"]
        assert sum(len(t.y) for t in markers) == scored > 0
