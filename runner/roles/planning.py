"""Keeping the queue fed: a baseline for main first, agent roles on their triggers,
then the builtin researcher and planner (roles of kind `off` are left to others).
"""
from __future__ import annotations

import time

from ..errors import LabError
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..loop.passlog import PassLog
from ..loop.jobs import baseline_class
from ..loop.scoring import base_commit, failed_baseline, score_of
from ..state import machine
from ..state.create import new_experiment
from ..state.entries import count_statuses
from . import builtin
from .agents import AgentRunner
from .history import History

AGENT_EVERY_S = {"researcher": 120.0, "planner": 30.0, "reporter": 300.0}


class Planning:
    def __init__(self, lab: Lab, agents: AgentRunner | None):
        self.lab, self.agents = lab, agents
        self._ideas_exhausted = False
        self._role_last_start: dict[str, float] = {}

    def plan(self, log: PassLog) -> None:
        roles = self.lab.config["roles"]
        queued = sum(1 for _ in self.lab.queue.glob("*.yaml"))
        room = self.lab.config["limits"]["max_queue"] - queued
        if room <= 0:
            return
        main = base_commit(self.lab)
        if self._needs_baseline(main):
            return self._queue_baseline(main, log)
        if self.agents:
            self._start_agents(room)
        if "builtin" not in (roles["researcher"]["kind"], roles["planner"]["kind"]):
            return
        history = History.load(self.lab)
        if roles["researcher"]["kind"] == "builtin" and not self._ideas_exhausted:
            made = builtin.research(self.lab, history, want=room, main=main)
            self._ideas_exhausted = not made
            log.add(self.lab, *made, line=f"researcher: {len(made)} hypotheses" if made else "")
        if roles["planner"]["kind"] == "builtin":
            researcher_done = roles["researcher"]["kind"] != "builtin" or self._ideas_exhausted
            touched = builtin.plan(self.lab, history, main, room, explore_ok=researcher_done)
            log.add(self.lab, *touched, line=f"planner: {len(touched)} files" if touched else "")

    def _needs_baseline(self, main: str) -> bool:
        """Main has no score, none is being measured, and main's own target did not fail
        (a failing target gets one event, not a baseline every pass)."""
        env_class = baseline_class(self.lab)
        if score_of(self.lab, main, env_class) is not None or failed_baseline(self.lab, main, env_class=env_class):
            return False
        return not any(entry.get("kind") == "baseline" for entry in _queue_documents(self.lab))

    def _queue_baseline(self, main: str, log: PassLog) -> None:
        _, path = new_experiment(self.lab, None, {}, main, priority=100, kind="baseline", by="runner")
        log.add(self.lab, path, line="runner: main has no score yet: queued a baseline")

    def _start_agents(self, room: int) -> None:
        """Researcher when proposals run low, planner when proposals wait or the queue runs low,
        reporter periodically; each at most every `every_s`, least recently started first."""
        roles = self.lab.config["roles"]
        proposed = count_statuses(self.lab.hypotheses.glob("*.yaml")).get(machine.PROPOSED, 0)
        wants = {"researcher": proposed < 2, "planner": proposed > 0 or room > 0, "reporter": True}
        for role, wanted in sorted(wants.items(), key=lambda kv: self._role_last_start.get(kv[0], -1e9)):
            cfg = roles[role]
            every = float(cfg.get("every_s", AGENT_EVERY_S[role]))
            last = self._role_last_start.get(role, -1e9)
            if cfg["kind"] == "agent" and wanted and time.monotonic() - last >= every \
                    and self.agents.can_start(role):
                self.agents.start(role, f"{role}-{int(time.time())}", self.lab.root, None)
                self._role_last_start[role] = time.monotonic()


def _queue_documents(lab: Lab):
    for path in lab.queue.glob("*.yaml"):
        try:
            data = load_yaml(path)[0]
        except LabError:
            continue
        if isinstance(data, dict):
            yield data
