"""Job backends: where an experiment's command runs (base.py is the interface).

`local` runs process groups on this machine, `hf_jobs` Hugging Face Jobs, `slurm` batch
jobs on a cluster; the loop knows only `Backend`.
"""
from __future__ import annotations

from ..errors import LabError
from .base import Backend, JobSpec, JobStartError, JobStatus, Unreachable
from .hf_jobs import HfJobsBackend
from .local import LocalBackend
from .slurm import SlurmBackend

BACKENDS = {"local": LocalBackend, "hf_jobs": HfJobsBackend, "slurm": SlurmBackend}
SETTINGS = ("default", "baseline")   # keys of lab.yaml `backends` that are not backends


def make_backends(config: dict) -> dict[str, Backend]:
    """Every backend lab.yaml configures (local always), by name."""
    configured = [name for name in config.get("backends", {}) if name not in SETTINGS]
    unknown = [name for name in configured if name not in BACKENDS]
    if unknown:
        raise LabError(f"unknown backend {unknown[0]!r} (known: {', '.join(BACKENDS)})", "lab.yaml",
                       field=f"backends.{unknown[0]}")
    return {name: BACKENDS[name](config) for name in dict.fromkeys(["local", *configured])}


def slot_count(config: dict) -> int:
    """Jobs the lab can have in flight: every configured backend's slots, capped by limits.max_running."""
    backends = config.get("backends", {})
    total = sum(int((backends.get(name) or {}).get("slots", 1)) for name in BACKENDS
                if name == "local" or name in backends)
    return min(total, int(config["limits"]["max_running"]))


def default_backend(config: dict) -> str:
    """Where experiments run unless an entry names another (lab.yaml `backends.default`)."""
    chosen = config.get("backends", {}).get("default") or "local"
    if chosen not in BACKENDS:
        raise LabError(f"unknown backend {chosen!r} (known: {', '.join(BACKENDS)})", "lab.yaml",
                       field="backends.default")
    if chosen != "local" and chosen not in config.get("backends", {}):
        raise LabError(f"names {chosen!r}, which lab.yaml does not configure: add a backends.{chosen} section",
                       "lab.yaml", field="backends.default")
    return chosen


__all__ = ["BACKENDS", "Backend", "HfJobsBackend", "JobSpec", "JobStartError", "JobStatus", "LocalBackend",
           "SlurmBackend", "Unreachable", "default_backend", "make_backends", "slot_count"]
