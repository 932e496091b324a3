"""`lab papers search|show`: researcher input from the Hugging Face Papers API (cached)."""
from __future__ import annotations

import textwrap

import click

from ..roles.papers import Answer, paper, search
from .context import Context, emit_json, pass_ctx


@click.group("papers")
def papers_group() -> None:
    """Search papers (Hugging Face Papers API; cached under .lab/cache/papers/).

    Offline (HF_HUB_OFFLINE, no network, or no answer within LAB_PAPERS_TIMEOUT
    seconds) the cache is served; with no cache the command fails with one line.
    """


def _origin(answer: Answer) -> None:
    if answer.source == "stale-cache":
        click.echo(f"note: {answer.note}; serving the cache from {answer.fetched}", err=True)
    elif answer.source == "cache":
        click.echo(f"note: from cache ({answer.fetched}); --refresh asks the Hub again", err=True)


@papers_group.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("--limit", "-n", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Full records (id, title, summary, authors...) as JSON.")
@click.option("--refresh", is_flag=True, help="Ask the Hub even if a fresh cached answer exists.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the Hub [LAB_PAPERS_TIMEOUT or 10].")
@pass_ctx
def papers_search(ctx: Context, query: tuple[str, ...], limit: int, as_json: bool, refresh: bool,
                  timeout: float | None) -> None:
    """Papers matching QUERY, with arXiv ids to cite in a hypothesis's source.ref."""
    answer = search(ctx.lab, " ".join(query), limit, timeout=timeout, refresh=refresh)
    _origin(answer)
    if as_json:
        emit_json(answer.papers)
        return
    if not answer.papers:
        click.echo("no papers found")
    for p in answer.papers:
        date = (p["published"] or "")[:10]
        click.echo(f"arXiv:{p['id']:<12} {date:<10} {p['title']}")


@papers_group.command("show")
@click.argument("arxiv_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--refresh", is_flag=True, help="Ask the Hub even if a fresh cached answer exists.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the Hub [LAB_PAPERS_TIMEOUT or 10].")
@pass_ctx
def papers_show(ctx: Context, arxiv_id: str, as_json: bool, refresh: bool, timeout: float | None) -> None:
    """One paper: title, authors, date, links and summary."""
    answer = paper(ctx.lab, arxiv_id, timeout=timeout, refresh=refresh)
    _origin(answer)
    p = answer.papers[0]
    if as_json:
        emit_json(p)
        return
    authors = ", ".join(p["authors"][:8]) + (" et al." if len(p["authors"]) > 8 else "")
    click.echo(f"arXiv:{p['id']}  {p['title']}")
    click.echo(f"authors: {authors or '?'}")
    click.echo(f"published: {(p['published'] or '?')[:10]}   {p['url']}")
    click.echo("")
    click.echo(textwrap.fill(p["summary"] or "(no summary)", width=100))
