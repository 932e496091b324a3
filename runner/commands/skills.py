"""`lab skills list|check|install`: the lab's agent skills, and installing them for clients."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..assets import asset_path
from ..errors import LabError
from ..lab import Lab
from ..roles.skills import (
    CLIENT_NAMES,
    POINTER_FILES,
    check_skill,
    find_skills,
    first_sentence,
    install,
    pointer_block,
    state_of,
    target_dirs,
    write_pointer,
)
from .context import Context, emit_json, pass_ctx


def _lab_or_none(ctx: Context) -> Lab | None:
    try:
        return ctx.lab
    except LabError:
        return None


def _source(ctx: Context, source: str | None) -> tuple[Path, Lab | None]:
    """Skills come from --source, else the lab's skills/, else the ones shipped with benchlab."""
    lab = _lab_or_none(ctx)
    if source:
        return Path(source).resolve(), lab
    if lab is not None and (lab.root / "skills").is_dir():
        return lab.root / "skills", lab
    return asset_path("skills"), lab


def _shown(path: Path, lab: Lab | None) -> str:
    return lab.rel(path) if lab is not None else str(path)


@click.group("skills")
def skills_group() -> None:
    """Agent skills (Agent Skills spec): list, check, install for Claude Code, Codex, OpenCode."""


source_option = click.option("--source", type=click.Path(file_okay=False, exists=True),
                             help="Skills directory to use (default: the lab's skills/).")


@skills_group.command("list")
@source_option
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def skills_list(ctx: Context, source: str | None, as_json: bool) -> None:
    """The skills, their size, and where they are installed in this lab."""
    src, lab = _source(ctx, source)
    dirs = target_dirs(list(CLIENT_NAMES), lab.root, False) if lab else []
    rows = []
    for skill in find_skills(src):
        installed = {_shown(d, lab): state_of(d / skill.name, skill.path) for d in dirs}
        rows.append({"name": skill.name, "lines": skill.lines, "path": _shown(skill.path, lab),
                     "description": skill.description, "installed": installed})
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        where = ", ".join(f"{d}: {s}" for d, s in row["installed"].items() if s != "missing") or "not installed"
        click.echo(f"{row['name']:<22} {row['lines']:>4} lines  {first_sentence(row['description'], 90)}")
        click.echo(f"{'':<22} {where}")


@skills_group.command("check")
@click.argument("names", nargs=-1)
@source_option
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def skills_check(ctx: Context, names: tuple[str, ...], source: str | None, as_json: bool) -> None:
    """Validate skills: frontmatter, name, length, referenced files, YAML examples. Exit 1 on a problem."""
    src, lab = _source(ctx, source)
    skills = find_skills(src, names)
    problems = [p for s in skills for p in check_skill(s.path, _shown(s.path, lab))]
    if as_json:
        emit_json({"ok": not problems, "skills": [s.name for s in skills],
                   "problems": [p.to_dict() for p in problems]})
    else:
        for problem in problems:
            click.echo(str(problem))
        summary = f"{len(problems)} problem(s) in {len(skills)} skills" if problems else \
            f"ok: {len(skills)} skills valid ({', '.join(s.name for s in skills)})"
        click.echo(summary, err=bool(problems))
    sys.exit(1 if problems else 0)


@skills_group.command("install")
@click.argument("names", nargs=-1)
@click.option("--claude", is_flag=True, help="Claude Code: .claude/skills/ and CLAUDE.md.")
@click.option("--codex", is_flag=True, help="Codex: .agents/skills/ and .codex/skills/, AGENTS.md.")
@click.option("--opencode", is_flag=True, help="OpenCode: .opencode/skills/ and AGENTS.md.")
@click.option("--agents", is_flag=True, help="Any client of the spec: .agents/skills/ and AGENTS.md.")
@click.option("--global", "global_", is_flag=True,
              help="Install in the home directory (~/.claude/skills, ~/.agents/skills, ...) instead of the lab.")
@click.option("--link", is_flag=True, help="Symlink to the lab's skills/ instead of copying.")
@click.option("--force", is_flag=True, help="Overwrite copies that were changed or not installed by benchlab.")
@click.option("--no-pointers", is_flag=True, help="Do not write the AGENTS.md / CLAUDE.md pointer block.")
@source_option
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def skills_install(ctx: Context, names, claude, codex, opencode, agents, global_, link, force, no_pointers,
                   source, as_json) -> None:
    """Install skills (all, or NAMES) where coding agents read them. Default: every client.

    Idempotent: an untouched earlier install is updated in place; a copy you
    edited is refused (nothing is written) unless --force.
    """
    clients = [c for c, on in zip(CLIENT_NAMES, (claude, codex, opencode, agents)) if on] or list(CLIENT_NAMES)
    src, lab = _source(ctx, source)
    if lab is None and not global_:
        raise LabError("not in a lab: run it inside one, or use --global to install in your home directory",
                       str(Path.cwd()))
    skills = find_skills(src, names)
    dirs = target_dirs(clients, None if global_ else lab.root, global_)
    report = install(skills, dirs, link=link, force=force, relative_links=not global_)
    if not no_pointers and not global_:
        shown_dirs = [_shown(d, lab) for d in dirs]
        block = pointer_block(skills, shown_dirs)
        for name in dict.fromkeys(POINTER_FILES[c] for c in clients):
            if write_pointer(lab.root / name, block):
                report.pointers.append(lab.root / name)
    rows = [{"skill": a.skill.name, "dest": _shown(a.dest, lab), "was": a.state, "action": a.action}
            for a in report.actions]
    if as_json:
        emit_json({"installed": rows, "pointers": [_shown(p, lab) for p in report.pointers]})
        return
    for row in rows:
        verb = {"skip": "unchanged", "install": "linked" if link else "installed"}.get(row["action"], row["action"] + "d")
        click.echo(f"{verb:<10} {row['dest']}")
    for pointer in report.pointers:
        click.echo(f"updated    {_shown(pointer, lab)} (benchlab block)")
    changed = sum(a.action != "skip" for a in report.actions)
    click.echo(f"{changed} written, {len(rows) - changed} unchanged, in {len(dirs)} directories", err=True)
    if changed and not global_:
        shown = " ".join(dict.fromkeys(_shown(d, lab).split("/")[0] for d in dirs))
        click.echo(f"hint: commit them (git add {shown}) so that every worktree, where workers run, "
                   "has them too", err=True)


@skills_group.command("eval")
@click.argument("names", nargs=-1)
@click.option("--agent", "agents", multiple=True, required=True, metavar="CMD",
              help="A role of lab.yaml (worker, planner...: its command, env and time limit) or an agent "
                   "command with the roles' placeholders, e.g. 'claude -p \"Do what {prompt_file} says\" "
                   "--output-format json'. Repeatable.")
@click.option("--runs", type=click.IntRange(1, 100), default=1, show_default=True, help="Runs of each case and variant.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also run every case without the skill (needed for lift and savings).")
@click.option("--time-limit", "time_limit", type=click.FloatRange(min=1), default=None, metavar="S",
              help="Seconds per run before the agent is killed (default: the role's time_limit_s, else 600).")
@click.option("--case", "cases", multiple=True, help="Only this case id (repeatable).")
@click.option("--sandbox/--no-sandbox", "sandboxed", default=None,
              help="Confine the agent with bubblewrap, only its case's lab writable (default: where it works).")
@click.option("--keep", is_flag=True, help="Keep each case's lab (its path goes in the results' log column).")
@source_option
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def skills_eval(ctx: Context, names, agents, runs, baseline, time_limit, cases, sandboxed, keep, source,
                as_json) -> None:
    """Measure skills: each eval case (skills/NAME/evals/evals.json) run by an agent in a fresh lab,
    with the skill installed and without it; assertions checked by code on what it wrote.

    Rows go to skills/NAME/evals/results/BATCH.parquet; the summary (pass rate with and without, lift,
    token and time savings) is printed. Default NAMES: every skill with evals. Exit 1 if a case's
    lab could not be set up.
    """
    from ..evals import results
    from ..evals.cases import skills_with_evals
    from ..evals.run import EvalPlan, evaluate, resolve_agent, sandbox_choice
    src, lab = _source(ctx, source)
    if lab is None and source is None:
        raise LabError("not in a lab: run it inside one (results go to its skills/<name>/evals/), or give --source",
                       str(Path.cwd()))
    names = list(names) or skills_with_evals(src)
    if not names:
        raise LabError("no skill here has eval cases (skills/<name>/evals/evals.json)", _shown(src, lab))
    skills = [s.path for s in find_skills(src, names)]
    plan = EvalPlan(skills, [resolve_agent(a, lab, time_limit) for a in agents], runs, baseline,
                    sandbox_choice(sandboxed, skills), tuple(cases), lab.root if lab else None, keep)

    def progress(row: dict) -> None:
        variant = "with" if row["with_skill"] else "without"
        state = "failed" if row["state"] == "finished" else row["state"]
        verdict = "passed" if row["passed"] else f"{state}: {(row['failed'] or [''])[0]}"
        click.echo(f"{row['skill']} {row['case']} {variant} #{row['run']}: {verdict} "
                   f"({row.get('duration_s') or 0:.1f}s)", err=True)

    rows = evaluate(plan, progress)
    lines = results.summarize(rows)
    if as_json:
        emit_json({"batch": plan.batch, "runs": rows, "summary": [line.to_dict() for line in lines]})
    else:
        click.echo(results.render(lines), nl=False)
        click.echo(f"batch {plan.batch}: {len(rows)} runs appended to "
                   + ", ".join(_shown(results.batch_file(s, plan.batch), lab) for s in skills), err=True)
    sys.exit(1 if any(r["state"] == "error" for r in rows) else 0)
