"""`lab papers`: the real huggingface_hub client against a local fake Hub, the cache, offline paths."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import lab_executable

from runner.errors import LabError
from runner.lab import Lab
from runner.roles.papers import (
    PapersUnavailable,
    cache_dir,
    normalise_id,
    paper,
    search,
    search_papers,
)
from runner.scaffold import init_lab

# The shapes the Hub answers with: /api/papers/search?q= returns daily-paper objects with
# the paper nested under "paper"; /api/papers/<id> returns the paper itself.
PAPERS = {
    "1711.05101": {"title": "Decoupled Weight Decay Regularization",
                   "summary": "L2 regularization and weight decay are not\nequivalent for Adam.",
                   "authors": ["Ilya Loshchilov", "Frank Hutter"], "published": "2017-11-14T18:48:20.000Z"},
    "1608.03983": {"title": "SGDR: Stochastic Gradient Descent with Warm Restarts",
                   "summary": "Restart techniques are common in gradient-free optimization.",
                   "authors": ["Ilya Loshchilov", "Frank Hutter"], "published": "2016-08-13T15:12:07.000Z"},
    "2002.05202": {"title": "GLU Variants Improve Transformer",
                   "summary": "Gated Linear Units consist of the component-wise product of two projections.",
                   "authors": ["Noam Shazeer"], "published": "2020-02-12T19:57:13.000Z"},
}


def _paper(arxiv_id: str) -> dict:
    p = PAPERS[arxiv_id]
    return {"id": arxiv_id, "title": p["title"], "summary": p["summary"], "publishedAt": p["published"],
            "upvotes": 12, "discussionId": "d" + arxiv_id.replace(".", ""),
            "authors": [{"_id": f"a{i}", "name": n, "hidden": False} for i, n in enumerate(p["authors"])],
            "ai_summary": "short summary", "ai_keywords": ["optimizer"]}


def _search_item(arxiv_id: str) -> dict:
    p = _paper(arxiv_id)
    return {"paper": p, "publishedAt": p["publishedAt"], "title": p["title"], "summary": p["summary"],
            "thumbnail": f"https://cdn/{arxiv_id}.png", "numComments": 2, "isAuthorParticipating": False,
            "submittedBy": {"_id": "u1", "avatarUrl": "https://cdn/u.png", "fullname": "Someone",
                            "name": "someone", "type": "user", "isPro": False}}


class FakeHub:
    """A Hub on 127.0.0.1 that records every papers request; `delay` makes it slow.

    huggingface_hub may also fetch side resources (e.g. /api/agent-harnesses for its
    user agent); those get a 404 and are not recorded."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.delay = 0.0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                if url.path.startswith("/api/papers"):
                    hub.requests.append((url.path, parse_qs(url.query)))
                    time.sleep(hub.delay)
                if url.path == "/api/papers/search":
                    q = parse_qs(url.query).get("q", [""])[0].lower()
                    limit = int(parse_qs(url.query).get("limit", ["50"])[0])
                    found = [i for i, p in PAPERS.items() if any(w in (p["title"] + p["summary"]).lower()
                                                                  for w in q.split())]
                    self._send(200, [_search_item(i) for i in found[:limit]])
                elif url.path.startswith("/api/papers/") and url.path[12:] in PAPERS:
                    self._send(200, _paper(url.path[12:]))
                else:
                    self._send(404, {"error": "Paper not found"})

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LAB_PAPERS_TTL", raising=False)
    yield fake
    fake.stop()


@pytest.fixture
def lab(tmp_path) -> Lab:
    return Lab(init_lab(tmp_path / "lab", template="blank"))


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_search_online_then_cached(hub, lab):
    papers = search_papers(lab, "weight decay", 5)
    assert [p["id"] for p in papers] == ["1711.05101"]
    p = papers[0]
    assert p["title"] == "Decoupled Weight Decay Regularization"
    assert p["summary"] == "L2 regularization and weight decay are not equivalent for Adam."
    assert p["authors"] == ["Ilya Loshchilov", "Frank Hutter"]
    assert p["published"].startswith("2017-11-14") and p["url"] == "https://arxiv.org/abs/1711.05101"
    assert hub.requests == [("/api/papers/search", {"q": ["weight decay"], "limit": ["5"]})]
    files = list(cache_dir(lab).glob("search-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["results"] == papers
    # same query (any case and spacing), smaller limit: served from the cache, no request
    answer = search(lab, "  Weight   DECAY ", 2)
    assert answer.source == "cache" and answer.papers == papers
    assert len(hub.requests) == 1
    # a larger limit than cached, when the Hub returned fewer than asked: still covered
    assert search(lab, "weight decay", 20).source == "cache"
    assert search(lab, "weight decay", 5, refresh=True).source == "hub" and len(hub.requests) == 2


def test_expired_cache_asks_again(hub, lab, monkeypatch):
    search_papers(lab, "warm restarts", 3)
    monkeypatch.setenv("LAB_PAPERS_TTL", "0")
    assert search(lab, "warm restarts", 3).source == "hub"
    assert len(hub.requests) == 2


def test_offline_env_asks_nothing_and_serves_cache(hub, lab, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PapersUnavailable) as info:
        search_papers(lab, "gated linear units", 3)
    assert "offline (HF_HUB_OFFLINE is set); no cached results for 'gated linear units'" in str(info.value)
    assert hub.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert [p["id"] for p in search_papers(lab, "gated linear units", 3)] == ["2002.05202"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAB_PAPERS_TTL", "0")  # expired, but offline: served anyway, marked stale
    answer = search(lab, "gated linear units", 3)
    assert answer.source == "stale-cache" and answer.papers[0]["id"] == "2002.05202"
    assert "HF_HUB_OFFLINE" in answer.note


def test_unreachable_hub(lab, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", closed_port())
    with pytest.raises(PapersUnavailable) as info:
        search_papers(lab, "anything", 3)
    assert "offline (cannot reach http://127.0.0.1:" in str(info.value)


def test_slow_hub_times_out(hub, lab):
    hub.delay = 3.0                      # answered after the timeout: the call must give up first
    with pytest.raises(PapersUnavailable) as info:
        search_papers(lab, "weight decay", 3, timeout=0.3)
    assert "no answer from" in str(info.value) and "within 0.3s" in str(info.value)


def test_show_paper(hub, lab):
    answer = paper(lab, "arXiv:1608.03983")
    assert answer.source == "hub" and answer.papers[0]["title"].startswith("SGDR")
    assert hub.requests[-1][0] == "/api/papers/1608.03983"
    assert paper(lab, "https://arxiv.org/abs/1608.03983").source == "cache"
    with pytest.raises(PapersUnavailable) as info:
        paper(lab, "2401.00001")
    assert "not found on the Hub" in str(info.value)


def test_arxiv_ids():
    assert normalise_id("arXiv:1711.05101v3") == "1711.05101v3"
    assert normalise_id("https://huggingface.co/papers/2002.05202") == "2002.05202"
    for bad in ("../../etc/passwd", "1711", "attention"):
        with pytest.raises(LabError):
            normalise_id(bad)


def _cli(tmp: Path, cwd: Path, env_extra: dict, *args: str) -> subprocess.CompletedProcess:
    """The real `lab` console script, with the Hub settings of env_extra only."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    env.update(env_extra)
    return subprocess.run([lab_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli_search_show_and_offline(hub, lab, tmp_path):
    done = _cli(tmp_path, lab.root, {"HF_ENDPOINT": hub.url}, "papers", "search", "GLU", "variants", "--json")
    assert done.returncode == 0, done.stderr
    assert [p["id"] for p in json.loads(done.stdout)] == ["2002.05202"]
    shown = _cli(tmp_path, lab.root, {"HF_ENDPOINT": hub.url}, "papers", "show", "1711.05101")
    assert shown.returncode == 0 and "arXiv:1711.05101  Decoupled Weight Decay" in shown.stdout
    offline = _cli(tmp_path, lab.root, {"HF_HUB_OFFLINE": "1"}, "papers", "search", "something", "new")
    assert offline.returncode == 2
    assert offline.stderr.strip().splitlines() == [
        "error: papers: query: offline (HF_HUB_OFFLINE is set); no cached results for 'something new'"]
    cached = _cli(tmp_path, lab.root, {"HF_HUB_OFFLINE": "1"}, "papers", "search", "GLU", "variants")
    assert cached.returncode == 0 and "arXiv:2002.05202" in cached.stdout and "note: from cache" in cached.stderr


def test_builtin_researcher_cites_hub_papers_when_online_and_falls_back_offline(hub, lab, monkeypatch):
    import yaml as _yaml

    from runner.roles import builtin
    from runner.roles.history import History
    from runner.roles.ideas import load_ideas

    made = builtin.research(lab, History.load(lab), want=1)
    data = _yaml.safe_load(made[0].read_text())
    assert data["source"]["ref"] == load_ideas()[0].source["ref"]      # the curated reference stays
    assert "Related on Hugging Face Papers: arXiv:" in data["rationale"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(builtin, "_OFFLINE", set())
    (lab.runtime / "cache").exists() and __import__("shutil").rmtree(lab.runtime / "cache")
    made = builtin.research(lab, History.load(lab), want=1)
    assert "Related on Hugging Face Papers" not in _yaml.safe_load(made[0].read_text())["rationale"]
