"""The loop of `lab skills eval`: every case of every skill, with the skill and without,
N runs each, for each agent; each run's row goes to the batch's own file (results.py).

    agent = resolve_agent("worker" | "claude -p ...", lab, time_limit_s)
    rows = evaluate(EvalPlan(...), on_row=print)

A run passes when the agent exits 0 within its time limit, changes nothing outside its
lab, and every assertion holds. Runs alternate with and without the skill, so that both
see the same hour of a remote model.
"""
from __future__ import annotations

import secrets
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import LabError
from ..files.agent_usage import parse
from ..lab import Lab
from ..roles import sandbox
from ..state import machine
from ..state.timeutil import now
from . import guard
from .cases import Case, load_cases, skill_version
from .checks import failures
from .launch import command, home_skill_dirs, run_agent
from .results import append
from .sanitize import cut_strays, restore_git_settings
from .workspace import is_plain, prepare

DEFAULT_TIME_LIMIT_S = 600.0


# Built-in agents that check the cases themselves: `reference` runs each case's solution
# (every case should pass), `none` does nothing (every case should fail).
BUILTIN = {"reference": None, "none": ("true",)}


@dataclass(frozen=True)
class Agent:
    label: str
    template: tuple[str, ...] | None      # None: the case's own solution
    env: dict = field(default_factory=dict)
    time_limit_s: float = DEFAULT_TIME_LIMIT_S

    def argv(self, case: Case) -> list[str]:
        if self.template is not None:
            return list(self.template)
        if not case.solution:
            raise LabError(f"case {case.id} has no solution for --agent reference", field="solution")
        return ["bash", "-ec", "\n".join(case.solution)]


def resolve_agent(spec: str, lab: Lab | None, time_limit_s: float | None) -> Agent:
    """A built-in agent, a role of the lab's lab.yaml (its command, env and time limit), or an argv template."""
    if spec in BUILTIN:
        return Agent(spec, BUILTIN[spec], {}, time_limit_s or DEFAULT_TIME_LIMIT_S)
    if spec in machine.AGENT_ROLES:
        if lab is None:
            raise LabError(f"--agent {spec} names a role of lab.yaml: run it inside a lab", field="agent")
        cfg = lab.config["roles"].get(spec) or {}
        if cfg.get("kind") != "agent":
            raise LabError(f"roles.{spec} is {cfg.get('kind')!r}, not an agent command: give --agent a role "
                           "of kind agent, or a command", "lab.yaml", f"roles.{spec}.kind")
        limit = time_limit_s or float(cfg.get("time_limit_s", DEFAULT_TIME_LIMIT_S))
        return Agent(spec, tuple(cfg["command"]), dict(cfg.get("env") or {}), limit)
    try:
        argv = shlex.split(spec)
    except ValueError as exc:
        raise LabError(f"--agent {spec!r}: {exc}", field="agent") from None
    if not argv:
        raise LabError("--agent is empty", field="agent")
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        raise LabError(f"--agent: {argv[0]!r} is neither a role of lab.yaml nor a command on PATH", field="agent")
    return Agent(spec, tuple(argv), {}, time_limit_s or DEFAULT_TIME_LIMIT_S)


@dataclass
class EvalPlan:
    skills: list[Path]                  # skill directories, each with evals/evals.json
    agents: list[Agent]
    runs: int = 1
    baseline: bool = True
    sandboxed: bool = True
    cases: tuple[str, ...] = ()         # only these case ids (default: all)
    user_lab: Path | None = None        # the lab the command runs in: watched, and where logs go
    keep: bool = False                  # keep each case's lab (its path is in the row's log column)
    batch: str = field(default_factory=lambda: f"{now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}")


def evaluate(plan: EvalPlan, on_row: Callable[[dict], None] = lambda row: None) -> list[dict]:
    loaded = _selected([(skill, load_cases(skill, _shown(skill, plan))) for skill in plan.skills], plan.cases)
    rows = []
    for skill, cases in loaded:
        version = skill_version(skill)
        for agent in plan.agents:
            for case in cases:
                for run in range(1, plan.runs + 1):
                    for with_skill in (True, False) if plan.baseline else (True,):
                        row = run_case(plan, case, skill, agent, with_skill, run)
                        row["skill_version"] = version
                        append(skill, plan.batch, [row])   # the batch's own file: no other writer
                        rows.append(row)
                        on_row(row)
    return rows


def _selected(loaded: list[tuple[Path, list[Case]]], wanted: tuple[str, ...]) -> list[tuple[Path, list[Case]]]:
    """Only the cases named by --case (each must exist in at least one of the skills)."""
    if not wanted:
        return loaded
    ids = {c.id for _, cases in loaded for c in cases}
    unknown = [w for w in wanted if w not in ids]
    if unknown:
        raise LabError(f"no case {unknown[0]!r} (have: {', '.join(sorted(ids))})", field="case")
    return [(skill, [c for c in cases if c.id in wanted]) for skill, cases in loaded]


def _shown(skill: Path, plan: EvalPlan) -> str:
    try:
        return skill.joinpath("evals", "evals.json").relative_to(plan.user_lab).as_posix() if plan.user_lab \
            else str(skill / "evals" / "evals.json")
    except ValueError:
        return str(skill / "evals" / "evals.json")


def run_case(plan: EvalPlan, case: Case, skill: Path, agent: Agent, with_skill: bool, run: int) -> dict:
    row = {"skill": skill.name, "case": case.id, "agent": agent.label, "with_skill": with_skill, "run": run,
           "assertions": len(case.assertions), "batch": plan.batch, "started": now(), "failed": [], "outside": []}
    try:
        template = agent.argv(case)
        ws = prepare(case, skill, with_skill)
    except LabError as exc:
        p = exc.problem
        where = f"{p.path}: " if p.path not in ("", "-") else ""
        return {**row, "passed": False, "state": "error", "failed": [f"the case's lab: {where}{p.message}"]}
    try:
        argv = command(template, ws, plan.sandboxed)
        watched = guard.watched(skill.parent, plan.user_lab, ws)
        skip = (ws.root, ws.tmp / "agent.log")
        before = guard.snapshot(watched, skip)
        launch = run_agent(argv, ws, case.role, agent.env, agent.time_limit_s, plan.sandboxed)
        outside = guard.changed(before, guard.snapshot(watched, skip))
        if ws.root.is_symlink() or not ws.root.is_dir():   # nothing of it is checked, nor followed
            links, failed = [], ["its lab is gone or was replaced by a link"]
        else:
            links = cut_strays(ws)
            restore_git_settings(ws)
            failed = failures(case, ws, launch.output)
        usage = parse(launch.output)
        state = "refused" if outside else launch.state
        failed = ([f"wrote outside its lab: {', '.join(outside[:5])}"] if outside else []) + \
                 ([launch.error] if launch.error else []) + \
                 ([f"left links out of its lab or special files (removed): {', '.join(links[:5])}"]
                  if links else []) + failed
        row.update(passed=state == "finished" and not failed, state=state, failed=failed, outside=outside,
                   exit_code=launch.exit_code, duration_s=round(launch.duration_s, 3), tokens_in=usage.tokens_in,
                   tokens_out=usage.tokens_out, turns=usage.turns, cost_usd=usage.cost_usd,
                   log=_keep_log(plan, ws, row))
        return row
    finally:
        if not plan.keep:
            ws.remove()


def _keep_log(plan: EvalPlan, ws, row: dict) -> str | None:
    """The agent's output under the lab's .lab/evals/<batch>/ (or the kept case lab's path)."""
    variant = "with" if row["with_skill"] else "without"
    if plan.keep:
        return str(ws.tmp)
    if plan.user_lab is None or not is_plain(ws.tmp / "agent.log"):
        return None
    dest = plan.user_lab / ".lab" / "evals" / plan.batch / row["skill"] / f"{row['case']}-{variant}-{row['run']}.log"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ws.tmp / "agent.log", dest)
    return dest.relative_to(plan.user_lab).as_posix()


def sandbox_choice(wanted: bool | None, skills: list[Path]) -> bool:
    """--sandbox (must work), --no-sandbox, or neither: the sandbox where bubblewrap works.
    Unconfined, a skill also installed in the home reaches the baseline runs: say so."""
    why = sandbox.unavailable()
    if wanted and why:
        raise LabError(f"{why}: cannot confine the agent (use --no-sandbox to run it unconfined)", field="sandbox")
    if wanted is None and why:
        print(f"lab: warning: {why}: agents run unconfined; only the check after each run guards "
              "what lies outside its lab", file=sys.stderr)
    confined = bool(wanted if wanted is not None else not why)
    if not confined:
        for skill in skills:
            for folder in home_skill_dirs():
                if (folder / skill.name).exists():
                    print(f"lab: warning: {skill.name} is also installed in {folder}: unconfined, the runs "
                          "without the skill can read it there", file=sys.stderr)
    return confined
