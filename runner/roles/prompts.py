"""The prompt an agent role gets: the lab's facts, the role's skills, its entry, its task."""
from __future__ import annotations

from pathlib import Path

from ..assets import asset_path


def _skill_text(lab, name: str) -> str | None:
    for base in (Path(lab.root) / "skills", _packaged_skills()):
        if base and (base / name / "SKILL.md").is_file():
            return (base / name / "SKILL.md").read_text(encoding="utf-8")
    return None


def _packaged_skills() -> Path | None:
    try:
        return asset_path("skills")
    except FileNotFoundError:
        return None


def build_prompt(lab, role: str, entry: Path | None, extra: str = "") -> str:
    """The prompt an agent gets: the lab's skill, its role's skill, its entry file and the task."""
    target = lab.config["target"]
    parts = [f"# benchlab: you are the {role} of the lab `{lab.config['lab']}`",
             f"Lab root: {lab.root}\nObjective: {lab.config['objective']['direction']} "
             f"{lab.metric}\nEditable: {', '.join(target['editable'])}\n"
             f"Protected (never edit): {', '.join(target.get('protected') or [])}\n"
             f"Declared parameters: {_declared(lab) or '(none)'}"]
    for name in ("autolab", f"autolab-{role}"):
        text = _skill_text(lab, name)
        if text:
            parts.append(f"## Skill `{name}`\n\n{text.strip()}")
    if entry is not None:
        entry = Path(entry)
        body = entry.read_text(encoding="utf-8") if entry.is_file() else "(missing)"
        parts.append(f"## Your entry: {lab.rel(entry)}\n\n```yaml\n{body.strip()}\n```")
    parts.append("## Task\n\n" + (extra.strip() or _DEFAULT_TASKS[role]))
    return "\n\n".join(parts) + "\n"


_DEFAULT_TASKS = {
    "researcher": "Propose new hypotheses as hypotheses/<id>.yaml (status proposed); do not repeat "
                  "anything in hypotheses/ or the scores table (lab query).",
    "planner": "Review proposed hypotheses (set status accepted, rejected or duplicate with a review) and "
               "queue accepted ones as queue/<id>.yaml (status queued), one change each.",
    "worker": "Make exactly the change of your entry in your worktree (the current directory), then set "
              "status: ready in your entry file.",
    "reporter": "Write a report under reports/ (experiments/ is the runner's: it regenerates the leaderboard).",
}


def _declared(lab) -> str:
    """NAME, NAME [choices: ...], NAME [low..high] for the prompt."""
    parts = []
    for name, spec in lab.params.items():
        if "choices" in spec:
            parts.append(f"{name} (one of {spec['choices']})")
        elif "low" in spec:
            parts.append(f"{name} ({spec['low']}..{spec['high']}{', log' if spec.get('log') else ''})")
        else:
            parts.append(name)
    return ", ".join(parts)
