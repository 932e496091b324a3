"""Agent skills: find, check and install them where coding agents read them.

Where each client reads skills (from its documentation, November 2026):

- Claude Code: `.claude/skills/<name>/` in the project, `~/.claude/skills/` for the user.
- Codex: `.agents/skills/` from the working directory up to the repository root,
  `~/.agents/skills/` for the user; older releases read `$CODEX_HOME/skills`
  (`~/.codex/skills`), so `--codex` writes both.
- OpenCode: `.opencode/skills/`, `~/.config/opencode/skills/`; it also reads the
  `.claude/` and `.agents/` trees.
- Cross-client: `.agents/skills/`, `~/.agents/skills/`.

An installed copy carries a manifest (`.benchlab-skill.json`: the hash of every
file at install time), so a later install can tell an untouched copy (safe to
update) from one the user edited (refused without --force). A skill's evals/ (its
eval cases and results, runner/evals/) is never installed: it is for its authors.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import LabError, Problem
from ..files.yamlio import atomic_write, parse_yaml, read_text
from ..state.timeutil import iso
from ..validation import schema

MANIFEST = ".benchlab-skill.json"
MAX_LINES = 500
POINTER_START = "<!-- benchlab:skills:start -->"
POINTER_END = "<!-- benchlab:skills:end -->"
CLIENT_NAMES = ("claude", "codex", "opencode", "agents")
POINTER_FILES = {"claude": "CLAUDE.md", "codex": "AGENTS.md", "opencode": "AGENTS.md", "agents": "AGENTS.md"}
_IGNORED = ("__pycache__", "*.pyc", MANIFEST, ".DS_Store", "evals")  # evals/: the author's, not the agent's
_FRONTMATTER = re.compile(r"---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", re.S)
_REFERENCE = re.compile(r"(?<![\w.-])(?:skills/([a-z0-9-]+)/)?((?:scripts|references|assets)/[\w./-]*\w)")
_EXAMPLE = re.compile(r"^```ya?ml[ \t]*\n# ((?:hypotheses|queue)/[^\s/]+\.yaml|experiments/[^\s/]+/experiment\.yaml)"
                      r"[ \t]*\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Skill:
    name: str
    path: Path
    description: str
    lines: int


# -- finding and reading ------------------------------------------------------------
def find_skills(source: Path, names: list[str] | tuple[str, ...] = ()) -> list[Skill]:
    """The skills (directories holding SKILL.md) under `source`, or the named ones."""
    if not source.is_dir():
        raise LabError("no skills directory here", str(source))
    found = {p.name: p for p in sorted(source.iterdir()) if (p / "SKILL.md").is_file()}
    missing = [n for n in names if n not in found]
    if missing:
        raise LabError(f"unknown skill {missing[0]!r} (have: {', '.join(found) or 'none'})", str(source), "name")
    return [_skill(found[n]) for n in (names or found)]


def _skill(path: Path) -> Skill:
    text = read_text(path / "SKILL.md")
    data = {}
    match = _FRONTMATTER.match(text)
    if match:
        try:
            data, _ = parse_yaml(match.group(1), str(path / "SKILL.md"))
        except LabError:
            data = {}
    description = data.get("description") if isinstance(data, dict) else None
    return Skill(path.name, path, " ".join(str(description or "").split()), text.count("\n") + 1)


def first_sentence(text: str, limit: int = 160) -> str:
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


# -- checking ---------------------------------------------------------------------
def check_skill(path: Path, shown: str | None = None) -> list[Problem]:
    """Frontmatter (schema 'skill', name == directory), length, referenced files, YAML examples."""
    shown = shown or str(path)
    md = f"{shown}/SKILL.md"
    if not (path / "SKILL.md").is_file():
        return [Problem(shown, "not a skill: SKILL.md is missing")]
    try:
        text = read_text(path / "SKILL.md")
    except LabError as exc:
        return [Problem(md, exc.problem.message)]
    problems = _check_frontmatter(text, path.name, md)
    lines = text.count("\n") + 1
    if lines >= MAX_LINES:
        problems.append(Problem(md, f"{lines} lines; keep SKILL.md under {MAX_LINES} lines "
                                    "(move detail to references/)"))
    problems += _check_references(text, path, md)
    problems += _check_examples(text, md)
    problems += _check_scripts(path, shown)
    return problems


def _check_frontmatter(text: str, directory: str, md: str) -> list[Problem]:
    match = _FRONTMATTER.match(text)
    if not match:
        return [Problem(md, "SKILL.md must start with YAML frontmatter between '---' lines", line=1)]
    try:
        data, lines = parse_yaml(match.group(1), md)
    except LabError as exc:
        line = exc.problem.line + 1 if exc.problem.line else 1
        return [Problem(md, exc.problem.message, exc.problem.field, line)]
    if not isinstance(data, dict):
        return [Problem(md, "frontmatter must be a mapping of fields", line=2)]
    lines = {k: v + 1 for k, v in lines.items()}  # the opening '---' is line 1
    problems = schema.check("skill", data, md, lines)
    if isinstance(data.get("name"), str) and data["name"] != directory:
        problems.append(Problem(md, f"name {data['name']!r} must equal the directory name {directory!r}",
                                "name", lines.get("name")))
    return problems


def references(text: str) -> list[tuple[str | None, str, int]]:
    """(other skill or None, relative path, line) for every scripts/references/assets path named."""
    out = []
    for match in _REFERENCE.finditer(text):
        out.append((match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1))
    return out


def _check_references(text: str, path: Path, md: str) -> list[Problem]:
    problems, seen = [], set()
    for other, rel, line in references(text):
        base = path.parent / other if other else path
        key = (str(base), rel)
        if key in seen:
            continue
        seen.add(key)
        if not (base / rel).exists():
            where = f"skills/{other}/{rel}" if other else rel
            problems.append(Problem(md, f"refers to {where}, which does not exist", "references", line))
    return problems


def _check_examples(text: str, md: str) -> list[Problem]:
    """Fenced ```yaml blocks headed `# hypotheses/<id>.yaml` etc. must validate against the schemas."""
    problems = []
    for match in _EXAMPLE.finditer(text):
        rel, body = match.group(1), match.group(2)
        first = text.count("\n", 0, match.start()) + 2  # the '# path' comment line
        kind = "hypothesis" if rel.startswith("hypotheses/") else "experiment"
        expected_id = rel.split("/")[1].removesuffix(".yaml")
        try:
            data, lines = parse_yaml(body, md)
        except LabError as exc:
            problems.append(Problem(md, f"example {rel}: {exc.problem.message}", "example",
                                    first + (exc.problem.line or 1)))
            continue
        if not isinstance(data, dict):
            problems.append(Problem(md, f"example {rel}: not a mapping", "example", first))
            continue
        for p in schema.check(kind, data, md, lines):
            problems.append(Problem(md, f"example {rel}: {p.message}", p.field, first + (p.line or 1)))
        if data.get("id") != expected_id:
            problems.append(Problem(md, f"example {rel}: id {data.get('id')!r} does not match the file name",
                                    "id", first + (lines.get("id") or 1)))
    return problems


def _check_scripts(path: Path, shown: str) -> list[Problem]:
    problems = []
    scripts = path / "scripts"
    for script in sorted(scripts.rglob("*")) if scripts.is_dir() else []:
        if script.is_file() and script.read_bytes()[:2] == b"#!" and not os.access(script, os.X_OK):
            problems.append(Problem(f"{shown}/{script.relative_to(path).as_posix()}",
                                    "has a #! line but is not executable (chmod +x)", "mode"))
    return problems


# -- where clients read skills ------------------------------------------------------------
def target_dirs(clients: list[str], root: Path | None, global_: bool, env: dict | None = None) -> list[Path]:
    """The skill directories to install into, in order, without repeats."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    out: list[Path] = []
    for client in clients:
        if global_:
            if client == "claude":
                dirs = [home / ".claude" / "skills"]
            elif client == "codex":
                dirs = [home / ".agents" / "skills", Path(env.get("CODEX_HOME") or home / ".codex") / "skills"]
            elif client == "opencode":
                dirs = [Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "opencode" / "skills"]
            else:
                dirs = [home / ".agents" / "skills"]
        else:
            assert root is not None
            dirs = {"claude": [root / ".claude" / "skills"],
                    "codex": [root / ".agents" / "skills", root / ".codex" / "skills"],
                    "opencode": [root / ".opencode" / "skills"],
                    "agents": [root / ".agents" / "skills"]}[client]
        out += [d for d in dirs if d not in out]
    return out


# -- state of an installed copy -------------------------------------------------------
def file_hashes(directory: Path) -> dict[str, str]:
    hashes = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if path.is_file() and not any(rel.match(p) or p in rel.parts for p in _IGNORED):
            hashes[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def read_manifest(dest: Path) -> dict | None:
    try:
        data = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def state_of(dest: Path, source: Path) -> str:
    """missing | linked | link-elsewhere | current | outdated | modified | foreign."""
    if dest.is_symlink():
        try:
            same = dest.resolve(strict=True) == source.resolve()
        except OSError:
            same = False
        return "linked" if same else "link-elsewhere"
    if not dest.exists():
        return "missing"
    if not dest.is_dir():
        return "foreign"
    manifest = read_manifest(dest)
    if manifest is None:
        return "foreign"
    installed = file_hashes(dest)
    if installed != manifest["files"]:
        return "modified"
    return "current" if installed == file_hashes(source) else "outdated"


# -- installing -------------------------------------------------------------------
@dataclass
class Action:
    skill: Skill
    dest: Path
    state: str
    action: str  # install | update | replace | skip | conflict


@dataclass
class InstallReport:
    actions: list[Action] = field(default_factory=list)
    pointers: list[Path] = field(default_factory=list)

    @property
    def conflicts(self) -> list[Action]:
        return [a for a in self.actions if a.action == "conflict"]


_SAFE = {"copy": {"missing": "install", "current": "skip", "outdated": "update", "linked": "update"},
         "link": {"missing": "install", "linked": "skip", "current": "update", "outdated": "update"}}


def plan(skills: list[Skill], dirs: list[Path], link: bool, force: bool) -> list[Action]:
    mode = "link" if link else "copy"
    actions = []
    for directory in dirs:
        for skill in skills:
            dest = directory / skill.name
            state = state_of(dest, skill.path)
            action = _SAFE[mode].get(state) or ("replace" if force else "conflict")
            actions.append(Action(skill, dest, state, action))
    return actions


def install(skills: list[Skill], dirs: list[Path], *, link: bool = False, force: bool = False,
            relative_links: bool = True) -> InstallReport:
    """Copy (or link) every skill into every directory; all-or-nothing on conflicts."""
    actions = plan(skills, dirs, link, force)
    conflicts = [a for a in actions if a.action == "conflict"]
    if conflicts:
        first = conflicts[0]
        why = {"modified": "was changed since it was installed", "foreign": "was not installed by benchlab",
               "link-elsewhere": "is a link to somewhere else"}.get(first.state, first.state)
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise LabError(f"{first.dest} {why}{more}; nothing was installed (use --force to overwrite)",
                       str(first.dest), "skills")
    for a in actions:
        if a.action != "skip":
            _put(a.skill.path, a.dest, link, relative_links)
    return InstallReport(actions)


def _put(source: Path, dest: Path, link: bool, relative: bool) -> None:
    """Build the new copy beside dest, then swap it in; a crash leaves old or new, never half."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    staged = dest.parent / f".{dest.name}.benchlab-new-{tag}"
    if link:
        target = os.path.relpath(source.resolve(), dest.parent.resolve()) if relative else source.resolve()
        os.symlink(target, staged, target_is_directory=True)
    else:
        shutil.copytree(source, staged, symlinks=False, ignore=shutil.ignore_patterns(*_IGNORED))
        manifest = {"name": dest.name, "source": str(source.resolve()), "installed": iso(),
                    "benchlab": __version__, "files": file_hashes(staged)}
        atomic_write(staged / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    old = None
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        old = dest.parent / f".{dest.name}.benchlab-old-{tag}"
        dest.rename(old)
    os.rename(staged, dest)
    if old is not None:
        shutil.rmtree(old)


# -- AGENTS.md / CLAUDE.md pointers -------------------------------------------------------
def pointer_block(skills: list[Skill], dirs: list[str]) -> str:
    lines = [POINTER_START,
             "## benchlab skills",
             "",
             "This repository is a benchlab lab: all state is files (lab.yaml, hypotheses/, queue/,",
             "experiments/). Agent skills for it live in `skills/` and are installed in "
             + ", ".join(f"`{d}/`" for d in dirs) + ".",
             "Read `autolab` first, then the skill of your role:" if any(s.name == "autolab" for s in skills)
             else "Skills:",
             ""]
    lines += [f"- `{s.name}`: {first_sentence(s.description)}" for s in skills]
    lines += ["",
              "Commands for agents: `lab status --json`, `lab validate [PATH]`, `lab query \"SQL\" --json`.",
              "(Written by `lab skills install`; edits inside this block are replaced.)",
              POINTER_END]
    return "\n".join(lines) + "\n"


def write_pointer(path: Path, block: str) -> bool:
    """Insert or replace the marked block; the rest of the file is kept. True if the file changed."""
    text = read_text(path) if path.exists() else ""
    start, end = text.find(POINTER_START), text.find(POINTER_END)
    if (start < 0) != (end < 0) or (start >= 0 and end < start) or text.count(POINTER_START) > 1:
        raise LabError(f"a broken benchlab block (markers {POINTER_START} ... {POINTER_END}); "
                       "fix or remove it by hand", str(path))
    if start >= 0:
        after = end + len(POINTER_END)
        after += 1 if text[after:after + 1] == "\n" else 0
        new = text[:start] + block + text[after:]
    elif text:
        new = text.rstrip("\n") + "\n\n" + block
    else:
        new = block
    if new == text:
        return False
    atomic_write(path, new)
    return True
