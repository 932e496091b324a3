"""`lab init`: a new lab (layout, config, schemas, skills, hooks) in a new git repo."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from .assets import asset_path
from .errors import LabError

TEMPLATES = Path(__file__).parent / "templates"
STATE_DIRS = ("hypotheses", "queue", "experiments", "kernels")
# what each template's target needs beyond the common files: {path in the lab: packaged asset}; the
# top-level assets are bundled by setup.py ASSETS, those under runner/ are package data
TEMPLATE_ASSETS = {"tiny-gpt": {"train.py": "train.py"},
                   "kernel": {"kernels/qwen3-rmsnorm": "kernels/qwen3-rmsnorm"},
                   "finetune": {"finetune.py": "runner/templates/finetune/finetune.py",
                                "ideas.yaml": "runner/data/ideas-finetune.yaml"}}


def template_names() -> list[str]:
    return sorted(p.stem[len("lab-"):] for p in TEMPLATES.glob("lab-*.yaml"))


def init_lab(directory: Path, template: str = "tiny-gpt", name: str | None = None,
             force: bool = False, commit: bool = True, kept: list[str] | None = None) -> Path:
    """Scaffold a lab in `directory` and make its first commit (of the scaffold's files only).

    A non-empty directory needs `force`; even then no existing file is
    overwritten (their paths are appended to `kept`), and `.gitignore` only
    gains the lines the lab needs.
    """
    directory = Path(directory).resolve()
    _check_target(directory, template, force)
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.name).strip("-") or "lab"
    kept = [] if kept is None else kept
    directory.mkdir(parents=True, exist_ok=True)
    written = _scaffold(directory, template, name, kept)
    if commit:
        _first_commit(directory, written, f"lab: init {name} from template {template}")
    return directory


def _check_target(directory: Path, template: str, force: bool) -> None:
    if template not in template_names():
        raise LabError(f"unknown template {template!r} (choose from {', '.join(template_names())})",
                       field="template")
    if directory.exists() and not directory.is_dir():
        raise LabError("exists and is not a directory", str(directory))
    if directory.exists() and any(directory.iterdir()) and not force:
        raise LabError("directory is not empty (use --force to scaffold into it anyway)", str(directory))
    for asset in TEMPLATE_ASSETS.get(template, {}).values():
        try:
            asset_path(asset)
        except FileNotFoundError:
            raise LabError(f"this benchlab install lacks {asset}, which the {template} template needs; "
                           "use --template blank", field="template") from None


def _scaffold(directory: Path, template: str, name: str, kept: list[str]) -> list[str]:
    """Write the lab's files; return the lab-relative paths written."""
    written: list[str] = []

    def put(rel: str, text: str = "", src: Path | None = None) -> None:
        target = directory / rel
        if target.exists():
            kept.append(rel)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if src is not None:
            shutil.copy2(src, target)  # bytes and mode (skills' scripts stay executable)
        else:
            target.write_text(text)
        written.append(rel)

    for sub in STATE_DIRS:
        put(f"{sub}/.gitkeep", "")
    put("lab.yaml", (TEMPLATES / f"lab-{template}.yaml").read_text().format(name=name))
    put(".pre-commit-config.yaml", (TEMPLATES / "pre-commit-config.yaml").read_text())
    put("AGENTS.md", (TEMPLATES / "AGENTS.md").read_text())
    written.append(merge_gitignore(directory / ".gitignore"))
    for asset in ("schemas", "skills"):
        for src in sorted(asset_path(asset).rglob("*")):
            if src.is_file() and "__pycache__" not in src.parts and src.suffix != ".pyc":
                put(f"{asset}/{src.relative_to(asset_path(asset)).as_posix()}", src=src)
    for rel, asset in TEMPLATE_ASSETS.get(template, {}).items():
        source = asset_path(asset)
        files = [source] if source.is_file() else sorted(
            p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            and p.relative_to(source).parts[0] != "results")   # a new lab measures its own
        for src in files:
            put(rel if src == source else f"{rel}/{src.relative_to(source).as_posix()}", src=src)
    return written


def merge_gitignore(path: Path) -> str:
    """Add the lines the lab needs that the file lacks; its lab-relative path."""
    lines = path.read_text().splitlines() if path.exists() else []
    wanted = (TEMPLATES / "gitignore").read_text().splitlines()
    missing = [line for line in wanted if line.strip() and not line.startswith("#") and line not in lines]
    if not path.exists():
        path.write_text("\n".join(wanted) + "\n")
    elif missing:
        path.write_text("\n".join(lines + missing) + "\n")
    return ".gitignore"


def _first_commit(directory: Path, paths: list[str], message: str) -> None:
    from .repo import gitops  # git is slow to import; only init needs it here
    if not (directory / ".git").exists():
        gitops.run_git_init(directory)
    gitops.run_git(directory, "add", "--", *paths)
    if gitops.run_git(directory, "diff", "--cached", "--name-only", "--", *paths):
        gitops.run_git(directory, "commit", "-q", "--no-verify", "-m", message, "--", *paths)
