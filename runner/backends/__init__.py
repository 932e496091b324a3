"""Job backends: where an experiment's command runs (base.py is the interface).

`local` runs process groups on this machine; the loop knows only `Backend`.
"""
from __future__ import annotations

from ..errors import LabError
from .base import Backend, JobSpec, JobStartError, JobStatus
from .local import LocalBackend

BACKENDS = {"local": LocalBackend}


def make_backends(config: dict) -> dict[str, Backend]:
    """Every backend lab.yaml configures (local always), by name."""
    configured = [name for name in config.get("backends", {}) if name != "default"]
    unknown = [name for name in configured if name not in BACKENDS]
    if unknown:
        raise LabError(f"unknown backend {unknown[0]!r} (known: {', '.join(BACKENDS)})", "lab.yaml",
                       field=f"backends.{unknown[0]}")
    return {name: BACKENDS[name](config) for name in dict.fromkeys(["local", *configured])}


def default_backend(config: dict) -> str:
    """Where experiments run unless an entry names another (lab.yaml `backends.default`)."""
    chosen = config.get("backends", {}).get("default") or "local"
    if chosen not in BACKENDS:
        raise LabError(f"unknown backend {chosen!r} (known: {', '.join(BACKENDS)})", "lab.yaml",
                       field="backends.default")
    return chosen


__all__ = ["BACKENDS", "Backend", "JobSpec", "JobStartError", "JobStatus", "LocalBackend", "default_backend",
           "make_backends"]
