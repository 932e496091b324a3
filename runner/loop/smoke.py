"""Smoke runs: with `target.smoke`, a change bound for a remote backend first runs on this
machine with the smoke environment (say LAB_MAX_STEPS=2). A crash, NaN or missing metric
there fails the experiment with the smoke's log; only a passing change is submitted.

The smoke is an ordinary local job in `.lab/jobs/<id>/smoke` (its own token, derived from
the experiment), so it runs while the loop goes on, survives a runner restart like any
local job, and is not run again once it has passed.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

from ..backends.base import JobSpec, JobStatus
from ..lab import Lab
from ..state import machine
from ..state.entries import Entry
from .finish import outcome_of
from .jobs import job_spec
from .record import Outcome

DEFAULT_TIME_LIMIT_S = 120.0


def needed(lab: Lab, entry: Entry, backend: str) -> bool:
    return bool(lab.config["target"].get("smoke")) and backend != "local" and not entry.is_baseline


def smoke_spec(lab: Lab, entry: Entry, slot: str) -> JobSpec:
    smoke = lab.config["target"]["smoke"]
    spec = job_spec(lab, entry)
    token = hashlib.sha256(f"smoke:{entry.id}:{entry.base}".encode()).hexdigest()[:32]
    return replace(spec, slot=slot, env={**spec.env, **(smoke.get("env") or {})}, job_dir=lab.jobs / entry.id / "smoke",
                   time_limit_s=float(smoke.get("time_limit_s", DEFAULT_TIME_LIMIT_S)), token=token, job_id="",
                   flavor="")


def check(lab: Lab, entry: Entry, local) -> tuple[Outcome | None, JobStatus | None]:
    """(None, None) while the smoke runs (it is started if need be); (outcome, status) once it ended:
    outcome.status FINISHED means the change may be submitted."""
    spec = smoke_spec(lab, entry, local.slots[0])
    if not (spec.job_dir / "pid").exists():
        local.start(spec)
        return None, None
    status = local.poll(spec)
    if not status.terminal:
        return None, None
    if status.state == "lost":
        return Outcome(machine.FAILED, reason=f"smoke run: infrastructure: {status.reason}"), status
    outcome = outcome_of(lab, status)
    if outcome.status != machine.FINISHED:
        outcome.status = machine.FAILED
        outcome.reason = f"smoke run failed, nothing submitted: {outcome.reason}"
    return outcome, status
