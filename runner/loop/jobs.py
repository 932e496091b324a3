"""The job of an experiment: the JobSpec its backend runs, built from lab.yaml and the entry."""
from __future__ import annotations

import sys
import zlib

from ..backends import envclass
from ..backends.base import JobSpec
from ..lab import Lab
from ..repo import worktrees
from ..state.entries import Entry


def environment_of(lab: Lab, entry: Entry) -> dict:
    """The environment class an entry runs in: the one it was dispatched with, else where it would go."""
    return entry.data.get("environment") or envclass.describe(lab.config, backend_of(lab, entry),
                                                              flavor_of(lab, entry))


def baseline_class(lab: Lab) -> str:
    """The environment class a new baseline of main runs in (backends.baseline, else backends.default)."""
    return environment_of(lab, Entry(lab.queue / "baseline.yaml", {"kind": "baseline"}))["class"]


def backend_of(lab: Lab, entry: Entry) -> str:
    """Where an entry runs: its own `backend`, a baseline's backends.baseline, else backends.default."""
    backends = lab.config["backends"]
    chosen = entry.data.get("backend") or (entry.is_baseline and (backends.get("baseline") or {}).get("backend"))
    return chosen or backends.get("default") or "local"


def flavor_of(lab: Lab, entry: Entry) -> str:
    """The hardware an entry asks for ("" = its backend's default)."""
    baseline = (lab.config["backends"].get("baseline") or {}) if entry.is_baseline else {}
    return entry.data.get("flavor") or baseline.get("flavor") or ""


def job_spec(lab: Lab, entry: Entry) -> JobSpec:
    target = lab.config["target"]
    env = {"LAB_CACHE": str(lab.runtime / "cache"), **(target.get("env") or {})}  # caches stay in the lab
    env["LAB_SEED"] = str(seed_of(entry))
    job = entry.job
    command = list(target["command"])
    if command[0] in ("python", "python3"):
        command[0] = sys.executable  # the runner's own interpreter, venv or not
    return JobSpec(exp_id=entry.id, slot=job.get("slot", "cpu0"), command=command,
                   cwd=worktrees.path(lab, entry.id), env=env,
                   job_dir=lab.job_dir(entry.id, job.get("attempts", 1)),
                   time_limit_s=float(target["time_limit_s"]), stall_timeout_s=float(target["stall_timeout_s"]),
                   token=job.get("token", ""), secrets=tuple(target.get("secrets") or ()),
                   labels=labels(lab, entry), job_id=str(job.get("id") or ""), flavor=flavor_of(lab, entry))


def seed_of(entry: Entry) -> int:
    """LAB_SEED of a run: its own `seed` (a reproduction's, copied from the original), a baseline's wave
    (0, 1, ...), else a number derived from the experiment's id, so that no two candidates share their
    seed noise and a confirmation runs on another seed."""
    if entry.data.get("seed") is not None:
        return entry.data["seed"]
    if entry.is_baseline:
        return entry.wave
    return 1000 + zlib.crc32(entry.id.encode()) % 1_000_000_000


def labels(lab: Lab, entry: Entry) -> dict[str, str]:
    """What a job carries so that it can be found again by lab and experiment."""
    found = {"benchlab": "1", "lab": lab.config["lab"], "experiment": entry.id, "base": entry.base[:12]}
    if entry.hypothesis:
        found["hypothesis"] = entry.hypothesis
    return found
