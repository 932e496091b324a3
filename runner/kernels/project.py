"""A kernel project on disk: kernels/<name>/build.toml and what it names."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError, Problem
from ..files.tomlio import parse_toml
from ..files.yamlio import read_text
from ..validation import schema

KERNELS_DIR = "kernels"


@dataclass
class KernelProject:
    root: Path                      # kernels/<name>/
    shown: str                      # how paths are printed (lab-relative)
    data: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.data.get("general", {}).get("name", self.root.name)

    @property
    def python_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def version(self) -> int:
        return int(self.data.get("general", {}).get("version", 0))

    @property
    def package_dir(self) -> Path:
        return self.root / "torch-ext" / self.python_name

    @property
    def torch_sources(self) -> list[str]:
        return list(self.data.get("torch", {}).get("src", []))

    @property
    def kernels(self) -> dict[str, dict]:
        return dict(self.data.get("kernel", {}))

    def cuda_kernels(self) -> dict[str, dict]:
        return {k: v for k, v in self.kernels.items() if v.get("backend") == "cuda"}

    def capabilities(self) -> list[str]:
        caps: list[str] = []
        for section in self.cuda_kernels().values():
            caps += [c for c in section.get("cuda-capabilities", []) if c not in caps]
        return caps

    def field_line(self, dotted: str) -> int | None:
        return self.lines.get(dotted)

    def rel(self, path: str) -> str:
        return f"{self.shown}/{path}"


def project_dir(lab_root: Path, name: str) -> Path:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name or ""):
        raise LabError(f"kernel name {name!r} must be lowercase letters, digits, '-' or '_'", "kernels", "name")
    return lab_root / KERNELS_DIR / name


def read_project(root: Path, shown: str) -> tuple[KernelProject, list[Problem]]:
    """Parse build.toml and check it against the schema; problems, never exceptions, for bad content."""
    toml_path = root / "build.toml"
    shown_toml = f"{shown}/build.toml"
    if not toml_path.is_file():
        raise LabError("no build.toml: not a kernel project (expected the kernel-builder layout)", shown_toml)
    data, lines = parse_toml(read_text(toml_path), shown_toml)
    project = KernelProject(root=root, shown=shown, data=data, lines=lines)
    return project, [_with_line(p, lines) for p in schema.check("build-toml", data, shown_toml, lines)]


def _with_line(problem: Problem, lines: dict[str, int]) -> Problem:
    """Give a problem in a list item (field `a.b[0]`) the line of its key (`a.b`)."""
    if problem.line is not None:
        return problem
    key = re.sub(r"\[\d+\]", "", problem.field)
    while key and key not in lines:
        key = key.rpartition(".")[0]
    return Problem(problem.path, problem.message, problem.field, lines.get(key)) if key else problem


def load_project(lab_root: Path, name: str) -> KernelProject:
    """The project kernels/<name>/, raising LabError on a schema problem."""
    root = project_dir(lab_root, name)
    project, problems = read_project(root, f"{KERNELS_DIR}/{name}")
    if problems:
        first = problems[0]
        raise LabError(first.message, first.path, first.field, first.line)
    return project
