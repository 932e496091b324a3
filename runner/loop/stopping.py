"""Stopping rules: `limits.budget` (usd, gpu_hours, agent_tokens, wall_hours), `limits.stop_after_no_gain`
and `objective.target`. While one that stops is reached the runner dispatches no job and starts no
agent (running work finishes and is recorded); each rule reached is recorded as one event and sent to
the webhook; `lab status` names it. lab.yaml is read again when it changes: raising a budget resumes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import LabError
from ..lab import Lab
from ..report.webhook import deliver
from ..state.accounting import spend
from ..state.events import read_events, record_event
from ..state.scores import best_row, scores
from .passlog import PassLog

BUDGETS = {"usd": "USD", "gpu_hours": "GPU-hours", "agent_tokens": "agent tokens", "wall_hours": "wall-clock hours"}


@dataclass(frozen=True)
class Reached:
    kind: str        # the event's kind: budget | no-gain | target-reached
    key: str         # what was reached, stable while it holds (an event is recorded once per key)
    detail: str
    stops: bool      # False: `action: alert`, the lab goes on

    @property
    def message(self) -> str:
        return f"{self.key}: {self.detail}"


def reached(lab: Lab, config: dict, table=None) -> list[Reached]:
    """Every stopping rule of `config` that the lab's tables say is reached now."""
    table = scores(lab) if table is None else table
    return [*_budgets(lab, config), *_no_gain(config, table), *_target(lab, config, table)]


def _budgets(lab: Lab, config: dict) -> list[Reached]:
    budget = config["limits"].get("budget") or {}
    if not budget:
        return []
    spent, found = spend(lab), []
    for name, unit in BUDGETS.items():
        if name in budget and getattr(spent, name) >= budget[name]:
            found.append(Reached("budget", f"budget {name} {budget[name]:g} reached",
                                 f"spent {getattr(spent, name):.4g} {unit}; no new jobs or agents until "
                                 f"limits.budget.{name} is raised in lab.yaml", True))
    return found


def _no_gain(config: dict, table) -> list[Reached]:
    rule = config["limits"].get("stop_after_no_gain")
    if not rule:
        return []
    most, action = (rule, "stop") if isinstance(rule, int) else (rule["experiments"], rule.get("action", "stop"))
    since, last = 0, None
    for row in table.to_pylist():
        if row["promoted"]:
            since, last = 0, row["id"]
        elif row["kind"] == "experiment" and row["status"] == "finished":
            since += 1
    if since < most:
        return []
    what = "no new jobs or agents until a larger limits.stop_after_no_gain" if action == "stop" else "alert only"
    return [Reached("no-gain", f"no promotion in {most} finished experiments since {last or 'the start'}",
                    f"{since} finished without beating main (limits.stop_after_no_gain); {what}", action == "stop")]


def _target(lab: Lab, config: dict, table) -> list[Reached]:
    target = config["objective"].get("target")
    best = best_row(lab, table, main_only=True) if target is not None else None
    if best is None or lab.better(target, best["value"]):
        return []
    metric = config["objective"]["metric"]
    return [Reached("target-reached", f"main reached the target {metric} {target:g}",
                    f"{metric} {best['value']:.6g} ({best['id']}); no new jobs or agents until objective.target "
                    "is moved in lab.yaml", True)]


class Stopping:
    """The runner's side: reads lab.yaml again when it changes, records each rule once, says whether to halt."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self._config, self._mtime = lab.config, _mtime(lab)
        self._announced: set[tuple[str, str]] = set()
        self.halted: Reached | None = None

    def check(self, log: PassLog) -> Reached | None:
        """The first rule reached that stops the lab (None: go on); records what is new."""
        found = reached(self.lab, self._current())
        for rule in found:
            self._announce(rule, log)
        halt = next((rule for rule in found if rule.stops), None)
        if self.halted and not halt:
            record_event(self.lab, "info", "resumed", f"{self.halted.key} no longer holds: dispatching again")
            log.add(self.lab, line="runner: resumed")
        self.halted = halt
        return halt

    def _current(self) -> dict:
        mtime = _mtime(self.lab)
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self._config = Lab(self.lab.root).config
            except LabError:
                pass  # an invalid lab.yaml mid-run: keep the last valid rules (`lab validate` names the problem)
        return self._config

    def _announce(self, rule: Reached, log: PassLog) -> None:
        if (rule.kind, rule.key) in self._announced:
            return
        self._announced.add((rule.kind, rule.key))
        events = read_events(self.lab)
        if any(kind == rule.kind and message.startswith(rule.key + ":") for kind, message in
               zip(events["kind"].to_pylist(), events["message"].to_pylist())):
            return  # recorded before a restart
        row = record_event(self.lab, "info" if rule.kind == "target-reached" else "warn", rule.kind, rule.message)
        deliver(self.lab, [row])
        log.add(self.lab, line=f"runner: {rule.key}")


def _mtime(lab: Lab) -> int | None:
    try:
        return lab.config_path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
