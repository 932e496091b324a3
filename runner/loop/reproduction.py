"""Reproductions (`lab reproduce ID`): the exact commit an experiment measured, run again with its
seed, in its environment class or another, and judged against its recorded value within the
noise margin. Recorded as kind `reproduction`, linked to the original by `reproduces`; never
promoted, never a base score."""
from __future__ import annotations

from ..errors import LabError
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..state.create import new_experiment, write_checked
from ..state.entries import Entry
from ..state.events import record_event
from ..state.ids import is_safe_id
from .jobs import seed_of
from .record import Outcome


def original(lab: Lab, exp_id: str) -> dict:
    """The recorded experiment a reproduction re-runs (LabError naming the file and field if it cannot be)."""
    path = lab.experiments / exp_id / "experiment.yaml"
    if not is_safe_id(exp_id) or not path.exists():
        raise LabError(f"unknown experiment {exp_id!r}: no recorded experiment by that id", lab.rel(path), "id")
    data = load_yaml(path)[0]
    result = data.get("result") or {}
    if not result.get("commit"):
        raise LabError("no commit was recorded for it: there is nothing to run again", lab.rel(path),
                       "result.commit")
    if result.get("value") is None:
        raise LabError("it recorded no value to compare with", lab.rel(path), "result.value")
    return data


def queue(lab: Lab, exp_id: str, backend: str | None = None, flavor: str | None = None) -> tuple[str, str]:
    """Queue the reproduction of `exp_id`: where it ran unless `backend`/`flavor` name another place."""
    data = original(lab, exp_id)
    job = data.get("job") or {}
    same = backend is None or backend == job.get("backend", "local")
    backend = backend or job.get("backend")
    flavor = flavor or (job.get("flavor") if same and job.get("backend") != "local" else None)
    seed = seed_of(Entry(lab.experiments / exp_id / "experiment.yaml", data))
    new_id, path = new_experiment(lab, data.get("hypothesis"), {}, data["result"]["commit"], priority=90,
                                  kind="reproduction", by="human", backend=backend, flavor=flavor)
    entry = load_yaml(path)[0]
    entry["reproduces"] = exp_id
    entry["seed"] = seed
    write_checked(path, "experiment", entry, lab)
    return new_id, lab.rel(path)


def judge(lab: Lab, entry: Entry, o: Outcome, margin: float) -> None:
    """Compare a finished reproduction with the value its original recorded; one event says how it went."""
    source = original(lab, entry.data["reproduces"])
    recorded = float(source["result"]["value"])
    o.base_value, o.margin = recorded, margin
    gap = abs(o.value - recorded)
    within = gap <= margin
    theirs = (source.get("environment") or {}).get("class")
    where = "in the same environment class" if theirs == entry.env_class else \
        f"in {entry.env_class} (the original ran in {theirs or 'an unrecorded class'})"
    o.reason = (f"{'reproduced' if within else 'not reproduced'}: {lab.metric} {o.value:.6g} vs recorded "
                f"{recorded:.6g} (|Δ| {gap:.4g} {'<=' if within else '>'} noise margin {margin:.4g}) {where}")
    record_event(lab, "info" if within else "warn", "reproduced" if within else "not-reproduced",
                 f"{entry.data['reproduces']}: {o.reason}", experiment=entry.id, hypothesis=entry.hypothesis)
