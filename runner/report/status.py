"""`lab status`: a short summary of hypotheses, queue and scores, the noise promotions are
judged with, and the cost of the best result."""
from __future__ import annotations

from collections import Counter

import pyarrow.compute as pc

from ..errors import LabError
from ..files.tabledir import UnreadableTable
from ..lab import Lab
from ..roles.review import self_reviewed
from ..state.entries import count_statuses
from ..state.entries import load as load_entry
from ..state.events import read_events
from ..state.scores import best_row, scores
from . import jobs, spend


def _read(lab: Lab, read):
    """A table, or one clear error naming the bad file (never a pyarrow traceback)."""
    try:
        return read(lab)
    except UnreadableTable as exc:
        raise LabError(f"cannot read ({exc.detail}); run `lab validate`", lab.rel(exc.path)) from None


def collect(lab: Lab, recent_events: int = 5, recent_jobs: int = 5) -> dict:
    hyps = count_statuses(lab.hypotheses.glob("*.yaml")) if lab.hypotheses.is_dir() else Counter()
    queue = _queue_statuses(lab)
    table = _read(lab, scores)
    statuses = Counter(table["status"].to_pylist()) if table.num_rows else Counter()
    best_main = best_row(lab, table, main_only=True)
    best_any = best_row(lab, table, main_only=False)
    baselines = table.filter(pc.and_(pc.equal(table["kind"], "baseline"), pc.is_valid(table["value"]))) \
        if table.num_rows else table
    first_baseline = baselines["value"][0].as_py() if baselines.num_rows else None
    gain = 100 * (best_main["value"] - first_baseline) / first_baseline if best_main and first_baseline else None
    events = _read(lab, read_events)
    tail = events.slice(max(0, events.num_rows - recent_events)).to_pylist() if events.num_rows else []
    return {
        "lab": lab.config["lab"],
        "root": str(lab.root),
        "metric": lab.metric,
        "direction": lab.config["objective"]["direction"],
        "hypotheses": dict(hyps),
        "queue": dict(queue),
        "finished": dict(statuses),
        "promoted": int(pc.sum(table["promoted"]).as_py() or 0) if table.num_rows else 0,
        "baseline": first_baseline,
        "best_on_main": _brief(best_main, lab),
        "best_seen": _brief(best_any, lab),
        "main_fails": _main_fails(lab, table),
        "self_reviewed": self_reviewed(lab),
        "noise": noise_summary(lab, table),
        "cost_metric": lab.config["objective"].get("cost"),
        "evidence": _evidence(table),
        "recent_events": [{**e, "at": e["at"].isoformat()} for e in tail],
        "jobs": jobs.rows(lab, table["id"].to_pylist()[::-1][:recent_jobs] if table.num_rows else []),
        "spend": _read(lab, lambda lab: spend.collect(lab, table, gain)),
    }


def _queue_statuses(lab: Lab) -> Counter:
    """Queue entries by status, each validated (the queue is small): a broken entry counts as
    `invalid`, never as the status its text claims."""
    counts = Counter()
    for path in lab.queue.glob("*.yaml") if lab.queue.is_dir() else ():
        try:
            counts[load_entry(lab, path).status] += 1
        except LabError:
            counts["invalid"] += 1
    return counts


def _main_fails(lab: Lab, table) -> str | None:
    """The record of main's failed baseline when main's target itself fails (nothing runs on it)."""
    from ..loop.scoring import (  # git: only for a lab that has run
        base_commit,
        failed_baseline,
    )
    if not table.num_rows or not (lab.root / ".git").exists():
        return None
    failed = failed_baseline(lab, base_commit(lab), table)
    return f"experiments/{failed}/log.txt" if failed else None


def noise_summary(lab: Lab, table) -> dict:
    """The noise a one-run candidate on today's main is judged with. Without the lab's git (a copied
    record), main is taken to be the target of the last baseline or promotion."""
    from ..loop.scoring import baseline_sigma, key_values, main_noise, noise_for
    if (lab.root / ".git").exists():
        return noise_info(main_noise(lab, table))
    on_main = [r["target"] for r in table.select(["target", "kind", "promoted", "status"]).to_pylist()
               if r["status"] == "finished" and (r["promoted"] or r["kind"] == "baseline")]
    runs = len(key_values(table, on_main[-1])) if on_main else 1
    return noise_info(noise_for(lab.config["objective"], *baseline_sigma(table), runs))


def noise_info(noise) -> dict:
    return {"margin": noise.margin, "sigma": noise.sigma, "sigma_runs": noise.sigma_runs,
            "base_runs": noise.n_base, "rate": noise.rate}


def noise_line(info: dict) -> str:
    """The margin, the seed noise and the false-promotion rate they imply, in one line."""
    if info["sigma"] is None:
        return f"margin {info['margin']:.4g} (seed noise not measured yet: `lab baseline --repeats 4`)"
    return (f"margin {info['margin']:.4g}, seed stdev {info['sigma']:.4g} over {info['sigma_runs']} runs, "
            f"base of {info['base_runs']} run(s): a change with no effect is promoted with probability "
            f"{info['rate']:.1%}")


EVIDENCE = ("confirmed", "strong", "single-run")   # runner.loop.promotion's evidence of a promotion


def evidence_counts(evidence: list) -> dict[str, int]:
    """Promotions by evidence, in a fixed order (records older than the evidence column carry none)."""
    return {kind: evidence.count(kind) for kind in EVIDENCE if kind in evidence}


def evidence_phrase(counts: dict[str, int]) -> str:
    """`1 confirmed, 2 strong, 1 single-run evidence`."""
    return ", ".join(f"{n} {'single-run evidence' if kind == 'single-run' else kind}" for kind, n in counts.items())


def _evidence(table) -> dict:
    return evidence_counts(table.filter(table["promoted"])["evidence"].to_pylist()) if table.num_rows else {}


def _brief(row: dict | None, lab: Lab) -> dict | None:
    if not row:
        return None
    return {"id": row["id"], "value": row["value"], "kind": row["kind"], "title": row["title"],
            "commit": row["commit"], "promoted": row["promoted"], "cost": row["cost"]}


def render(info: dict) -> str:
    def counts(c: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"

    lines = [f"lab {info['lab']}  ({info['root']})",
             f"objective: {info['direction']} {info['metric']}",
             f"hypotheses: {sum(info['hypotheses'].values())} ({counts(info['hypotheses'])})",
             f"queue: {sum(info['queue'].values())} ({counts(info['queue'])})",
             f"finished: {sum(info['finished'].values())} ({counts(info['finished'])}), "
             f"promoted {info['promoted']}" + (f" ({evidence_phrase(info['evidence'])})" if info.get("evidence")
                                               else ""),
             f"noise: {noise_line(info['noise'])}"]
    lines.extend(spend.lines(info["spend"]))
    if info.get("main_fails"):
        lines.append(f"main's target fails: see {info['main_fails']} (nothing runs on it until main changes)")
    if info.get("self_reviewed"):
        ids = ", ".join(info["self_reviewed"][:5]) + (" ..." if len(info["self_reviewed"]) > 5 else "")
        lines.append(f"accepted by the agent that wrote them (no second look): {len(info['self_reviewed'])} ({ids})")
    best = info["best_on_main"]
    if best:
        gain = ""
        if info["baseline"]:
            gain = f", {100 * (best['value'] - info['baseline']) / info['baseline']:+.2f}% vs first baseline"
        cost = ""
        if info.get("cost_metric") and best.get("cost") is not None:
            cost = f", {info['cost_metric']} {best['cost']:.4g}"
        lines.append(f"best on main: {info['metric']} {best['value']:.6g} ({best['id']}{gain}{cost})")
    else:
        lines.append("best on main: none yet (run `lab baseline`)")
    if info.get("jobs"):
        lines.append("jobs (running, then the latest recorded):")
        lines.extend(jobs.lines(info["jobs"]))
    for event in info["recent_events"]:
        lines.append(f"  [{event['level']}] {event['at'][:19]} {event['kind']}: {event['message']}")
    return "\n".join(lines)
