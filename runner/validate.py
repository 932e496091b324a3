"""`lab validate`: every state file against its schema, plus cross-references.

Read-only by construction: nothing here opens a file for writing.
"""
from __future__ import annotations

import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import schema, tables
from .ids import is_safe_id
from .lab import CONFIG
from .problems import LabError, Problem
from .yamlio import parse_yaml, read_text

LIVE = {"queued", "assigned", "ready", "running"}
TERMINAL = {"finished", "failed", "timed_out", "cancelled", "stale"}


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        total = sum(self.counts.values())
        parts = ", ".join(f"{kind} {n}" for kind, n in sorted(self.counts.items()))
        if self.ok:
            return f"ok: {total} files valid ({parts or 'nothing to check'})"
        return f"{len(self.problems)} problem(s) in {total} files checked"


def classify(rel: str) -> str | None:
    """The kind of lab file at a lab-relative path, or None if it is not one."""
    parts = rel.split("/")
    name = parts[-1]
    if rel == CONFIG:
        return "lab"
    if name.startswith("."):
        return None  # .gitkeep, editors' and our own temp files
    if len(parts) == 2 and parts[0] == "hypotheses":
        return "hypothesis" if name.endswith(".yaml") else "stray"
    if len(parts) == 2 and parts[0] == "queue":
        return "queue" if name.endswith(".yaml") else "stray"
    if len(parts) == 3 and parts[0] == "experiments" and name == "experiment.yaml":
        return "experiment"
    if name.endswith(".parquet") and tables.schema_for(rel) is not None:
        return "parquet"
    if len(parts) == 3 and parts[0] == "skills" and name == "SKILL.md":
        return "skill"
    if len(parts) == 3 and parts[0] == "kernels" and name == "build.toml":
        return "build-toml"
    return None


def discover(root: Path) -> list[str]:
    """Lab-relative paths of every state file in the lab."""
    found = [CONFIG] if (root / CONFIG).exists() else []
    for sub in ("hypotheses", "queue"):
        d = root / sub
        if d.is_dir():
            found += [f"{sub}/{p.name}" for p in d.iterdir() if p.is_file()]
    exp = root / "experiments"
    if exp.is_dir():
        for p in exp.iterdir():
            if p.is_dir():
                found += [f"experiments/{p.name}/{n}" for n in ("experiment.yaml", "metrics.parquet")
                          if (p / n).exists()]
            elif p.suffix == ".parquet":
                found.append(f"experiments/{p.name}")
    for sub, name in (("skills", "SKILL.md"), ("kernels", "build.toml")):
        d = root / sub
        if d.is_dir():
            found += [f"{sub}/{p.name}/{name}" for p in d.iterdir() if (p / name).is_file()]
    return found


def expand(root: Path, paths: list[str]) -> list[str]:
    """Lab-relative state files named by PATHS (files or directories)."""
    everything = None
    chosen = []
    for raw in paths:
        p = Path(raw)
        p = (p if p.is_absolute() else Path.cwd() / p).resolve()
        try:
            rel = p.relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
        if p.is_dir() or rel == ".":
            everything = everything if everything is not None else discover(root)
            prefix = "" if rel == "." else rel + "/"
            chosen += [f for f in everything if f.startswith(prefix)]
        else:
            chosen.append(rel)
    return list(dict.fromkeys(chosen))


class Validator:
    def __init__(self, root: Path):
        self.root = root
        self.report = Report()
        self.hypothesis_ids = self._stems("hypotheses")
        self.seen_experiments: dict[str, str] = {}

    def _stems(self, sub: str) -> set[str]:
        d = self.root / sub
        return {p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml")} if d.is_dir() else set()

    def add(self, problem: Problem) -> None:
        self.report.problems.append(problem)

    def run(self, rels: list[str]) -> Report:
        for rel in rels:
            kind = classify(rel)
            if kind is None:
                continue
            self.report.counts[kind] += 1
            if not (self.root / rel).exists():
                continue  # deleted in this commit: nothing to validate
            try:
                getattr(self, "_" + kind.replace("-", "_"))(rel)
            except LabError as exc:
                self.add(exc.problem)
        self._cross_check_locations(rels)
        return self.report

    # -- per kind -----------------------------------------------------------
    def _load_mapping(self, rel: str, text: str | None = None):
        text = read_text(self.root / rel) if text is None else text
        data, lines = parse_yaml(text, rel)
        if not isinstance(data, dict):
            raise LabError("expected a mapping of fields at the top level", rel, line=1)
        return data, lines

    def _lab(self, rel: str) -> None:
        data, lines = self._load_mapping(rel)
        self.report.problems += schema.check("lab", data, rel, lines)

    def _stray(self, rel: str) -> None:
        self.add(Problem(rel, "not a lab file: this directory holds only <id>.yaml files"))

    def _check_id(self, rel: str, data: dict, lines: dict, expected: str) -> None:
        if not is_safe_id(expected):
            self.add(Problem(rel, f"file name {expected!r} is not a safe id (letters, digits, '-', '_', "
                                  "single dots; no '/', '..' or spaces)", field="id", line=lines.get("id")))
        elif "id" in data and data["id"] != expected:
            self.add(Problem(rel, f"id {data['id']!r} does not match the file name {expected!r}",
                             field="id", line=lines.get("id")))

    def _hypothesis(self, rel: str) -> None:
        data, lines = self._load_mapping(rel)
        self._check_id(rel, data, lines, Path(rel).name[:-5])
        self.report.problems += schema.check("hypothesis", data, rel, lines)

    def _queue(self, rel: str) -> None:
        self._experiment_file(rel, Path(rel).name[:-5], LIVE, "queue/")

    def _experiment(self, rel: str) -> None:
        self._experiment_file(rel, rel.split("/")[1], TERMINAL, "experiments/")

    def _experiment_file(self, rel: str, expected_id: str, allowed: set[str], where: str) -> None:
        data, lines = self._load_mapping(rel)
        self._check_id(rel, data, lines, expected_id)
        problems = schema.check("experiment", data, rel, lines)
        self.report.problems += problems
        status = data.get("status")
        if status in LIVE | TERMINAL and status not in allowed:
            self.add(Problem(rel, f"status {status!r} does not belong in {where} "
                                  f"(allowed there: {', '.join(sorted(allowed))})",
                             field="status", line=lines.get("status")))
        hyp = data.get("hypothesis")
        if isinstance(hyp, str) and data.get("kind") != "baseline" and hyp not in self.hypothesis_ids:
            self.add(Problem(rel, f"unknown hypothesis {hyp!r} (no hypotheses/{hyp}.yaml)",
                             field="hypothesis", line=lines.get("hypothesis")))

    def _parquet(self, rel: str) -> None:
        self.report.problems += tables.check_parquet(self.root / rel, tables.schema_for(rel), rel)

    def _skill(self, rel: str) -> None:
        text = read_text(self.root / rel)
        match = re.match(r"---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
        if not match:
            raise LabError("SKILL.md must start with YAML frontmatter between '---' lines", rel, line=1)
        data, lines = self._load_mapping(rel, match.group(1))
        lines = {k: v + 1 for k, v in lines.items()}  # the opening '---' is line 1
        self.report.problems += schema.check("skill", data, rel, lines)
        directory = rel.split("/")[1]
        if isinstance(data.get("name"), str) and data["name"] != directory:
            self.add(Problem(rel, f"name {data['name']!r} must equal the directory name {directory!r}",
                             field="name", line=lines.get("name")))

    def _build_toml(self, rel: str) -> None:
        text = read_text(self.root / rel)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            found = re.search(r"line (\d+)", str(exc))
            raise LabError(f"malformed TOML: {exc}", rel, line=int(found.group(1)) if found else None) from None
        self.report.problems += schema.check("build-toml", data, rel, toml_lines(text))

    # -- across files -------------------------------------------------------
    def _cross_check_locations(self, rels: list[str]) -> None:
        """An experiment lives in exactly one place: queue/ or experiments/."""
        for rel in rels:
            kind = classify(rel)
            if kind == "queue":
                exp_id = Path(rel).name[:-5]
                if (self.root / "experiments" / exp_id / "experiment.yaml").exists():
                    self.add(Problem(rel, f"experiment {exp_id!r} is also finished in "
                                          f"experiments/{exp_id}/ (duplicate id)", field="id"))


def toml_lines(text: str) -> dict[str, int]:
    """Approximate field->line map for TOML: table headers and their keys."""
    lines, table = {}, ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = re.match(r"^\[+([^\]]+)\]+", line)
        if header:
            table = header.group(1).strip().replace('"', "")
            lines.setdefault(table, number)
            continue
        key = re.match(r"^([A-Za-z0-9_\-\"]+)\s*=", line)
        if key:
            name = key.group(1).replace('"', "")
            lines.setdefault(f"{table}.{name}" if table else name, number)
    return lines


def validate(root: Path, paths: list[str] | None = None) -> Report:
    rels = expand(root, paths) if paths else discover(root)
    return Validator(root).run(rels)
