"""Paper search for researchers: the Hugging Face Papers API, cached under .lab/cache/papers/.

`search_papers(lab, query, limit)` returns plain dicts (arXiv id, title, summary,
authors, ...). A fresh cached answer is served without touching the network; when
the Hub cannot be reached the cache is served whatever its age, and with no cache
`PapersUnavailable` (a LabError: one clear line) is raised quickly, so the builtin
researcher can fall back to its offline idea library:

    try:
        papers = search_papers(lab, "learning rate warmup", 5, timeout=3)
    except PapersUnavailable:
        papers = []          # use the idea library instead

Offline means: HF_HUB_OFFLINE set, a network error, or no answer within the
timeout (LAB_PAPERS_TIMEOUT seconds, default 10). HF_ENDPOINT picks the Hub.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError
from ..files.yamlio import atomic_write
from ..lab import Lab
from ..state.timeutil import iso, now, parse_iso

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_TTL_S = 24 * 3600.0
ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
_TRUE = {"1", "true", "yes", "on"}


class PapersUnavailable(LabError):
    """The Hub could not be reached (or answered an error) and nothing was cached."""


@dataclass
class Answer:
    papers: list[dict]
    source: str            # "hub" | "cache" | "stale-cache"
    fetched: str           # ISO time of the Hub answer
    note: str = ""         # why a stale cache was served


# -- public API -----------------------------------------------------------------
def search_papers(lab: Lab, query: str, limit: int = 10, *, timeout: float | None = None) -> list[dict]:
    """Papers matching `query` (at most `limit`); raises PapersUnavailable when offline with no cache."""
    return search(lab, query, limit, timeout=timeout).papers


def search(lab: Lab, query: str, limit: int = 10, *, timeout: float | None = None,
           refresh: bool = False) -> Answer:
    query = " ".join(query.split())
    if not query:
        raise LabError("empty search query", "papers", "query")
    if limit < 1:
        raise LabError(f"limit must be at least 1, got {limit}", "papers", "limit")
    path = cache_dir(lab) / f"search-{_key(query.lower())}.json"
    cached = _read_cache(path)
    if cached and not refresh and _covers(cached, limit) and _fresh(cached):
        return Answer(cached["results"][:limit], "cache", cached["fetched"])
    try:
        raw = _call(lambda api: list(api.list_papers(query=query, limit=limit)), timeout)
    except PapersUnavailable as exc:
        if cached:
            return Answer(cached["results"][:limit], "stale-cache", cached["fetched"], exc.problem.message)
        raise PapersUnavailable(f"{exc.problem.message}; no cached results for {query!r}",
                                "papers", "query") from None
    papers = [paper_dict(p) for p in raw][:limit]
    fetched = iso()
    _write_cache(path, {"query": query, "limit": limit, "fetched": fetched, "endpoint": endpoint(),
                        "results": papers})
    return Answer(papers, "hub", fetched)


def paper(lab: Lab, arxiv_id: str, *, timeout: float | None = None, refresh: bool = False) -> Answer:
    """One paper by arXiv id (accepts 'arXiv:2401.00001' and arxiv.org URLs)."""
    arxiv_id = normalise_id(arxiv_id)
    path = cache_dir(lab) / f"paper-{arxiv_id}.json"
    cached = _read_cache(path)
    if cached and not refresh and _fresh(cached):
        return Answer(cached["results"], "cache", cached["fetched"])
    try:
        info = _call(lambda api: api.paper_info(arxiv_id), timeout)
    except PapersUnavailable as exc:
        if cached:
            return Answer(cached["results"], "stale-cache", cached["fetched"], exc.problem.message)
        raise PapersUnavailable(f"{exc.problem.message}; paper {arxiv_id} is not cached",
                                "papers", "id") from None
    papers = [paper_dict(info)]
    fetched = iso()
    _write_cache(path, {"query": arxiv_id, "fetched": fetched, "endpoint": endpoint(), "results": papers})
    return Answer(papers, "hub", fetched)


def normalise_id(text: str) -> str:
    raw = text.strip()
    raw = re.sub(r"^(https?://)?(www\.)?(arxiv\.org|huggingface\.co)/(abs|pdf|papers)/", "", raw, flags=re.I)
    raw = re.sub(r"^arxiv:", "", raw, flags=re.I).removesuffix(".pdf")
    if not ARXIV_ID.match(raw):
        raise LabError(f"{text!r} is not an arXiv id (expected e.g. 1711.05101 or arXiv:1711.05101)",
                       "papers", "id")
    return raw


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def cache_dir(lab: Lab) -> Path:
    return lab.runtime / "cache" / "papers"


# -- the Hub call ---------------------------------------------------------------
def offline_reason() -> str | None:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import constants
    except ImportError:
        return "huggingface_hub is not installed"
    if getattr(constants, "HF_HUB_OFFLINE", False):
        return "HF_HUB_OFFLINE was set when huggingface_hub was imported"
    return None


def _call(fn, timeout: float | None):
    """Run fn(HfApi) with a deadline; every failure becomes one PapersUnavailable line."""
    reason = offline_reason()
    if reason:
        raise PapersUnavailable(f"offline ({reason})", "papers")
    from huggingface_hub import HfApi

    timeout = _timeout(timeout)
    box: dict = {}

    def work():
        try:
            box["value"] = fn(HfApi(endpoint=endpoint()))
        except BaseException as exc:  # reported to the caller below
            box["error"] = exc

    worker = threading.Thread(target=work, name="lab-papers", daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise PapersUnavailable(f"offline (no answer from {endpoint()} within {timeout:g}s)", "papers")
    if "error" in box:
        raise PapersUnavailable(_describe(box["error"], time.monotonic() - started), "papers") from None
    return box["value"]


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    raw = os.environ.get("LAB_PAPERS_TIMEOUT", "")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise LabError(f"LAB_PAPERS_TIMEOUT must be a number of seconds, got {raw!r}", "env",
                       "LAB_PAPERS_TIMEOUT") from None


def _describe(exc: BaseException, elapsed: float) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        what = "not found on the Hub" if status == 404 else f"the Hub answered HTTP {status}"
        return f"{what} ({endpoint()})"
    name = type(exc).__name__
    message = (str(exc).splitlines() or [""])[0][:200]
    if "Offline" in name:
        return "offline (HF_HUB_OFFLINE is set)"
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return f"unexpected answer from {endpoint()}: {name}: {message}"
    return f"offline (cannot reach {endpoint()}: {message or name})"


# -- shaping and caching ----------------------------------------------------------
def paper_dict(info) -> dict:
    """A PaperInfo as a plain, JSON-ready dict."""
    published = getattr(info, "published_at", None)
    authors = [getattr(a, "name", None) or str(a) for a in (getattr(info, "authors", None) or [])]
    arxiv_id = info.id
    return {
        "id": arxiv_id,
        "title": " ".join((info.title or "").split()),
        "summary": " ".join((info.summary or "").split()),
        "authors": authors,
        "published": published.isoformat() if published else None,
        "upvotes": getattr(info, "upvotes", None),
        "ai_summary": getattr(info, "ai_summary", None),
        "ai_keywords": getattr(info, "ai_keywords", None),
        "url": f"https://arxiv.org/abs/{arxiv_id}",
        "hub_url": f"{endpoint()}/papers/{arxiv_id}",
    }


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _read_cache(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or damaged: treated as no cache
    if not isinstance(data, dict) or not isinstance(data.get("results"), list) or "fetched" not in data:
        return None
    return data


def _write_cache(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True))


def _covers(cached: dict, limit: int) -> bool:
    """A cached answer serves a smaller limit, or a larger one if the Hub had no more."""
    have = len(cached["results"])
    return have >= limit or have < int(cached.get("limit") or 0)


def _fresh(cached: dict) -> bool:
    raw = os.environ.get("LAB_PAPERS_TTL", "")
    try:
        ttl = float(raw) if raw else DEFAULT_TTL_S
    except ValueError:
        ttl = DEFAULT_TTL_S
    try:
        fetched = parse_iso(cached["fetched"])
    except (TypeError, ValueError):
        return False
    return (now() - fetched).total_seconds() < ttl
