"""The report's Skills section: what `lab skills eval` measured, per skill and agent, batch by
batch (skills/*/evals/results/*.parquet): pass rate with and without the skill, lift, token savings."""
from __future__ import annotations

from html import escape

from ..evals.results import summarize
from ..files.tabledir import read_many
from ..files.tables import skill_evals_table
from ..lab import Lab


def eval_rows(lab: Lab) -> tuple[list[dict], list[str]]:
    """Every run recorded under the lab's skills/, and the files that could not be read."""
    rows, unreadable = [], []
    for skill in evaluated_skills(lab):   # a broken file must not hide the report: named, left out
        rows += read_many(lab.root, skill_evals_table(skill), unreadable).to_pylist()
    return rows, unreadable


def evaluated_skills(lab: Lab) -> list[str]:
    """The skills with eval results: a results/ folder or an earlier version's results.parquet."""
    found = {p.parts[-3] for p in (lab.root / "skills").glob("*/evals/results")}
    found |= {p.parts[-3] for p in (lab.root / "skills").glob("*/evals/results.parquet")}
    return sorted(found)


def over_time(rows: list[dict]) -> list[dict]:
    """One line per (skill, agent, batch), oldest batch first: the summary's overall figures."""
    batches: dict[tuple, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["started"]):
        batches.setdefault((row["skill"], row["agent"], row["batch"]), []).append(row)
    out = []
    for (skill, agent, batch), runs in sorted(batches.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[1][0]["started"])):
        line = summarize(runs)[-1]      # the (all) line
        out.append({"skill": skill, "agent": agent, "batch": batch, "started": runs[0]["started"],
                    "version": runs[0].get("skill_version") or "", "line": line})
    return out


def section_html(lab: Lab) -> str:
    """The Skills section, or "" when no skill has eval results."""
    rows, unreadable = eval_rows(lab)
    if not rows and not unreadable:
        return ""
    body = []
    for item in over_time(rows):
        line = item["line"]
        w, wo = line.with_skill, line.without
        body.append(
            f'<tr><td>{escape(item["skill"])}</td><td>{escape(item["agent"])}</td>'
            f'<td>{item["started"]:%Y-%m-%d %H:%M}</td><td>{escape(item["version"])}</td>'
            f'<td class="num">{_rate(w.passed, w.runs)}</td><td class="num">{_rate(wo.passed, wo.runs)}</td>'
            f'<td class="num">{"-" if line.lift is None else f"{line.lift:+.2f}"}</td>'
            f'<td class="num">{"-" if line.token_savings is None else f"{line.token_savings:+.0%}"}</td>'
            f'<td>{"-" if line.beneficial is None else ("yes" if line.beneficial else "no")}</td></tr>')
    notes = "".join(f'<p class="meta">Unreadable: {escape(u)}</p>' for u in unreadable)
    return ("<h2>Skills</h2>"
            '<p class="meta"><code>lab skills eval</code>: each case run by an agent with the skill installed and without '
            "it; a run passes when every assertion holds on what the agent wrote.</p>"
            f'<table id="skills" data-rows="{len(body)}"><thead><tr><th>skill</th><th>agent</th><th>batch (UTC)</th>'
            "<th>skill version</th><th>pass rate with</th><th>without</th><th>lift</th><th>tokens saved</th>"
            f'<th>beneficial</th></tr></thead><tbody>{"".join(body)}</tbody></table>{notes}')


def _rate(passed: int, runs: int) -> str:
    return f"{passed / runs:.0%} ({passed}/{runs})" if runs else "-"
