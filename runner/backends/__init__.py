"""Job backends: where an experiment's command runs.

`local` (process groups on this machine) is the only one built in; the runner
talks to a backend through `start`, `poll`, `kill` and `orphans` and the
`JobSpec` / `JobStatus` records, so other engines can follow the same shape.
"""
from __future__ import annotations

from .local import TERMINAL, JobSpec, JobStartError, JobStatus, LocalBackend

BACKENDS = {"local": LocalBackend}


def make_backend(config: dict, name: str | None = None, **options) -> LocalBackend:
    """The backend named by `name`, else by lab.yaml `backends.default` (default: local)."""
    chosen = name or config.get("backends", {}).get("default") or "local"
    if chosen not in BACKENDS:
        from ..errors import LabError
        raise LabError(f"unknown backend {chosen!r} (known: {', '.join(BACKENDS)})", "lab.yaml",
                       field="backends.default")
    return BACKENDS[chosen](config, **options)


__all__ = ["BACKENDS", "TERMINAL", "JobSpec", "JobStartError", "JobStatus", "LocalBackend", "make_backend"]
