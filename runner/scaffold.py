"""`lab init`: a new lab (layout, config, schemas, skills, hooks) in a new git repo."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from .assets import asset_path
from .problems import LabError

TEMPLATES = Path(__file__).parent / "templates"
STATE_DIRS = ("hypotheses", "queue", "experiments", "kernels")


def template_names() -> list[str]:
    return sorted(p.stem[len("lab-"):] for p in TEMPLATES.glob("lab-*.yaml"))


def init_lab(directory: Path, template: str = "tiny-gpt", name: str | None = None,
             force: bool = False, commit: bool = True) -> Path:
    directory = directory.resolve()
    if template not in template_names():
        raise LabError(f"unknown template {template!r} (choose from {', '.join(template_names())})",
                       field="template")
    if directory.exists() and not directory.is_dir():
        raise LabError("exists and is not a directory", str(directory))
    if directory.exists() and any(directory.iterdir()) and not force:
        raise LabError("directory is not empty (use --force to scaffold into it anyway)", str(directory))
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.name).strip("-") or "lab"

    directory.mkdir(parents=True, exist_ok=True)
    for sub in STATE_DIRS:
        (directory / sub).mkdir(exist_ok=True)
        (directory / sub / ".gitkeep").touch()
    config = (TEMPLATES / f"lab-{template}.yaml").read_text().format(name=name)
    (directory / "lab.yaml").write_text(config)
    (directory / ".gitignore").write_text((TEMPLATES / "gitignore").read_text())
    (directory / ".pre-commit-config.yaml").write_text((TEMPLATES / "pre-commit-config.yaml").read_text())
    (directory / "AGENTS.md").write_text((TEMPLATES / "AGENTS.md").read_text())
    _copy_tree(asset_path("schemas"), directory / "schemas")
    _copy_tree(asset_path("skills"), directory / "skills")
    if template == "tiny-gpt":
        shutil.copy2(asset_path("train.py"), directory / "train.py")

    if commit:
        from . import gitops  # git is slow to import; only init needs it here
        if not (directory / ".git").exists():
            gitops.run_git_init(directory)
        gitops.run_git(directory, "add", "-A")
        gitops.run_git(directory, "commit", "-q", "--no-verify", "-m",
                       f"lab: init {name} from template {template}")
    return directory


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
