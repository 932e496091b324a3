"""`lab kernel check`: a kernel project is well formed and its CUDA compiles.

Works on any machine: schema, files, op names; nvcc (when present) compiles
each .cu source for every capability build.toml lists. No GPU, no torch.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Problem
from . import nvcc as nvcc_mod
from .bindings import called_ops, registered_ops
from .project import KernelProject, read_project

REQUIRED_FILES = ("CARD.md", "benchmarks/benchmark.py")
HEADER_SUFFIXES = (".h", ".cuh", ".hpp")


@dataclass
class CheckReport:
    project: KernelProject | None
    problems: list[Problem] = field(default_factory=list)
    compiled: list[str] = field(default_factory=list)   # "csrc/x.cu@9.0"
    skipped: list[str] = field(default_factory=list)    # why a step did not run

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "kernel": self.project.name if self.project else None,
                "problems": [p.to_dict() for p in self.problems], "compiled": self.compiled,
                "skipped": self.skipped}


def check_project(root: Path, shown: str, cache: Path, compile_cuda: bool = True) -> CheckReport:
    project, problems = read_project(root, shown)
    report = CheckReport(project, list(problems))
    if problems:
        return report  # the rest would only repeat the schema's complaints
    report.problems += _check_layout(project)
    report.problems += _check_sources(project)
    report.problems += _check_ops(project)
    if compile_cuda and not report.problems:
        _compile_all(project, cache, report)
    elif not compile_cuda:
        report.skipped.append("nvcc compile: disabled (--no-compile)")
    return report


def _check_layout(project: KernelProject) -> list[Problem]:
    problems = []
    if project.name != project.root.name:
        problems.append(Problem(project.rel("build.toml"), f"name {project.name!r} must equal the directory "
                                f"name {project.root.name!r}", "general.name", project.field_line("general.name")))
    for rel in REQUIRED_FILES:
        if not (project.root / rel).is_file():
            problems.append(Problem(project.rel(rel), "missing (the kernel-builder layout needs it)"))
    if not (project.package_dir / "__init__.py").is_file():
        problems.append(Problem(project.rel(f"torch-ext/{project.python_name}/__init__.py"),
                                "missing: the Python package of the kernel (name with '-' as '_')"))
    if not (project.root / "tests").is_dir():
        problems.append(Problem(project.rel("tests"), "missing: the kernel's correctness tests"))
    return problems


def _check_sources(project: KernelProject) -> list[Problem]:
    problems = []
    listed = [("torch.src", f) for f in project.torch_sources]
    listed += [(f"kernel.{name}.src", f) for name, sec in project.kernels.items() for f in sec.get("src", [])]
    for dotted, rel in listed:
        if not (project.root / rel).is_file():
            problems.append(Problem(project.rel("build.toml"), f"source {rel!r} does not exist",
                                    dotted, project.field_line(dotted)))
    for name, sec in project.kernels.items():
        dotted = f"kernel.{name}"
        if sec.get("backend") == "cuda" and not sec.get("cuda-capabilities"):
            problems.append(Problem(project.rel("build.toml"), "a cuda kernel must list cuda-capabilities",
                                    f"{dotted}.cuda-capabilities", project.field_line(dotted)))
        for inc in sec.get("include", []):
            if not (project.root / inc).is_dir():
                problems.append(Problem(project.rel("build.toml"), f"include directory {inc!r} does not exist",
                                        f"{dotted}.include", project.field_line(f"{dotted}.include")))
    if not any(f.endswith((".cpp", ".cc", ".cu")) for f in project.torch_sources):
        problems.append(Problem(project.rel("build.toml"), "no binding source (.cpp) listed", "torch.src",
                                project.field_line("torch.src") or project.field_line("torch")))
    return problems


def _check_ops(project: KernelProject) -> list[Problem]:
    defs: dict[str, tuple[str, int]] = {}
    impls: set[str] = set()
    for rel in project.torch_sources:
        path = project.root / rel
        if path.suffix in (".cpp", ".cc", ".cu") and path.is_file():
            found, impl = registered_ops(path.read_text(encoding="utf-8", errors="replace"))
            defs.update({op: (rel, line) for op, line in found.items()})
            impls.update(impl)
    if not project.package_dir.is_dir():
        return []
    problems = []
    calls = called_ops(project.package_dir)
    for op, (path, line) in sorted(calls.items()):
        shown = project.rel(path.relative_to(project.root).as_posix())
        if op.startswith("<syntax error"):
            problems.append(Problem(shown, op.strip("<>"), "python", line))
        elif op not in defs:
            problems.append(Problem(shown, f"calls ops.{op}, which no torch binding source defines "
                                    f"(defined: {', '.join(sorted(defs)) or 'none'})", f"ops.{op}", line))
    for op, (rel, line) in sorted(defs.items()):
        if op not in calls:
            problems.append(Problem(project.rel(rel), f"op {op!r} is registered but the Python package "
                                    f"torch-ext/{project.python_name}/ never calls ops.{op}", f"ops.{op}", line))
        if op not in impls:
            problems.append(Problem(project.rel(rel), f"op {op!r} is defined without an implementation "
                                    "(ops.impl)", f"ops.{op}", line))
    return problems


def _headers_key(project: KernelProject) -> str:
    parts: list[bytes] = []
    for path in sorted(project.root.rglob("*")):
        if path.suffix in HEADER_SUFFIXES and path.is_file():
            parts += [path.relative_to(project.root).as_posix().encode(), path.read_bytes()]
    return nvcc_mod.content_key(*parts)


def _compile_all(project: KernelProject, cache: Path, report: CheckReport) -> None:
    nvcc = nvcc_mod.find_nvcc()
    if nvcc is None:
        report.skipped.append("nvcc compile: nvcc not found (set CUDA_HOME or put nvcc on PATH)")
        return
    jobs = []
    headers = _headers_key(project)
    for name, sec in project.cuda_kernels().items():
        flags = [f for f in sec.get("cuda-flags", [])]
        includes = list(sec.get("include", []))
        for src in (s for s in sec.get("src", []) if s.endswith(".cu")):
            for cap in sec.get("cuda-capabilities", []):
                jobs.append((name, src, cap, flags, includes))
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), 4))) as pool:
        results = list(pool.map(lambda job: nvcc_mod.compile_object(
            nvcc, project.root, job[1], job[2], job[3], job[4], headers, cache), jobs))
    for (name, src, cap, _, _), diagnostics in zip(jobs, results):
        if not diagnostics:
            report.compiled.append(f"{src}@{cap}")
        for diag in diagnostics[:5]:
            report.problems.append(Problem(project.rel(diag.file), f"nvcc (sm_{cap.replace('.', '')}): "
                                           f"{diag.message}", f"kernel.{name}.src", diag.line))
