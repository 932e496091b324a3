"""A lab on disk: where its files are and what its lab.yaml says."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from . import secrets
from .errors import LabError
from .files.yamlio import load_yaml
from .validation import schema

CONFIG = "lab.yaml"

DEFAULTS = {
    "objective": {"noise_margin": 0.0},
    "target": {"protected": [CONFIG], "params": [], "time_limit_s": 900, "stall_timeout_s": 300, "env": {}},
    "backends": {"local": {"kind": "cpu", "slots": 1, "threads_per_slot": 1}},
    "roles": {r: {"kind": "builtin"} for r in ("researcher", "planner", "worker", "reporter")},
    "limits": {"max_running": 8, "max_queue": 8, "retries": 1},
    "reporting": {"divergence_window": 5},
}


def _merged(defaults: dict, given: dict) -> dict:
    out = dict(defaults)
    for key, value in given.items():
        out[key] = _merged(defaults[key], value) if isinstance(value, dict) and isinstance(
            defaults.get(key), dict) else value
    return out


@dataclass(frozen=True)
class Lab:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def find(cls, start: str | os.PathLike | None = None) -> "Lab":
        """The lab containing `start` (default: the working directory)."""
        here = Path(start or os.getcwd()).resolve()
        parts = here.parts
        for i in range(len(parts) - 2):  # inside .lab/worktrees/<id>: the lab is the main checkout
            if parts[i] == ".lab" and parts[i + 1] == "worktrees" and (Path(*parts[:i]) / CONFIG).is_file():
                return cls(Path(*parts[:i]))
        for candidate in (here, *here.parents):
            if (candidate / CONFIG).is_file():
                return cls(candidate)
        raise LabError(f"no {CONFIG} here or in any parent directory (run `lab init DIR` to make a lab)",
                       str(here))

    # -- layout -------------------------------------------------------------
    @property
    def config_path(self) -> Path: return self.root / CONFIG
    @property
    def hypotheses(self) -> Path: return self.root / "hypotheses"
    @property
    def queue(self) -> Path: return self.root / "queue"
    @property
    def experiments(self) -> Path: return self.root / "experiments"
    @property
    def runtime(self) -> Path: return self.root / ".lab"
    @property
    def worktrees(self) -> Path: return self.runtime / "worktrees"
    @property
    def locks(self) -> Path: return self.runtime / "locks"
    @property
    def logs(self) -> Path: return self.runtime / "logs"
    @property
    def jobs(self) -> Path: return self.runtime / "jobs"

    def job_dir(self, exp_id: str, attempt: int) -> Path:
        """Where one attempt of an experiment's job keeps its log, metrics and records."""
        return self.jobs / exp_id / f"attempt-{attempt}"

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    # -- configuration ------------------------------------------------------
    @cached_property
    def config(self) -> dict:
        """lab.yaml merged over defaults; raises LabError if it does not validate."""
        data, lines = load_yaml(self.config_path)
        problems = schema.check("lab", data, CONFIG, lines)
        if problems:
            raise LabError(problems[0].message, CONFIG, problems[0].field, problems[0].line)
        config = _merged(DEFAULTS, data)
        secrets.declare(config["target"].get("secrets") or ())
        for role in config["roles"].values():
            if role.get("kind") is False:
                role["kind"] = "off"  # YAML 1.1 reads an unquoted `off` as false
        return config

    @property
    def params(self) -> dict[str, dict]:
        """Declared tunable constants: {NAME: spec}; a spec may give low/high/log or choices."""
        declared = self.config["target"].get("params") or []
        return {name: {} for name in declared} if isinstance(declared, list) else \
            {name: spec or {} for name, spec in declared.items()}

    @property
    def metric(self) -> str: return self.config["objective"]["metric"]
    @property
    def minimize(self) -> bool: return self.config["objective"]["direction"] == "minimize"

    def better(self, value: float, than: float, margin: float = 0.0) -> bool:
        """True if `value` beats `than` by more than `margin` in the objective's direction."""
        return value < than - margin if self.minimize else value > than + margin
