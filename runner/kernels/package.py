"""`lab kernel package`: lay a build out as a Hugging Face kernel repository.

kernels/<name>/build/<variant>/ holds the package files (__init__.py, _ops.py,
the compiled extension) and metadata.json, which `kernels.get_local_kernel`
reads to find and import the variant.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..files.yamlio import atomic_write
from .build import Build

PACKAGE_SUFFIXES = (".py", ".so")


def metadata(build: Build) -> dict:
    project = build.project
    general = project.data.get("general", {})
    return {
        "id": f"_{project.python_name}_cuda_{build.extension.rsplit('_', 1)[-1]}",
        "name": project.name,
        "version": project.version,
        "license": general.get("license", "unknown"),
        "python-depends": list(general.get("python-depends", [])),
        "backend": {"type": "cuda", "archs": project.capabilities()},
    }


def package(build: Build) -> Path:
    """Copy the staged build into kernels/<name>/build/<variant>/ with metadata.json; returns that folder."""
    target = build.project.root / "build" / build.variant
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in sorted(build.package.iterdir()):
        if path.is_file() and path.suffix in PACKAGE_SUFFIXES:
            shutil.copy2(path, target / path.name)
    atomic_write(target / "metadata.json", json.dumps(metadata(build), indent=2) + "\n")
    return target
