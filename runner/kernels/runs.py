"""Run a kernel's own tests and benchmark against a build, in child processes.

Children get PYTHONPATH = the build's variant folder (so `import <python_name>`
finds the staged package); benchmarks import the harness (runner.kernels) from the benchlab
that runs them, which is not installed when `lab` runs from a source checkout.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .build import Build


def child_env(build: Build) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(build.variant_dir)]
    harness_root = Path(__file__).resolve().parents[2]
    if harness_root.name not in ("site-packages", "dist-packages"):
        paths.append(str(harness_root))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_tests(build: Build, lab_root: Path, pytest_args: tuple[str, ...] = ()) -> int:
    tests = build.project.root / "tests"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests), *pytest_args]
    return subprocess.run(cmd, env=child_env(build), cwd=lab_root).returncode


def run_benchmark(build: Build, lab_root: Path, bench_args: tuple[str, ...] = ()) -> int:
    script = build.project.root / "benchmarks" / "benchmark.py"
    cmd = [sys.executable, str(script), *bench_args]
    return subprocess.run(cmd, env=child_env(build), cwd=lab_root).returncode
