"""Keeping the queue fed: a baseline for main first, agent roles on their triggers,
then the builtin researcher and planner (roles of kind `off` are left to others).
"""
from __future__ import annotations

import time

import git

from ..errors import LabError
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..loop.passlog import PassLog
from ..loop.jobs import baseline_class
from ..loop.scoring import base_commit, failed_baseline, score_of, target_key
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
        baseline = queue_baseline(self.lab, main)
        if baseline:
            return log.add(self.lab, baseline, line="runner: main has no score yet: queued a baseline")
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


def queue_baseline(lab: Lab, main: str):
    """Queue a baseline of `main` when its target has no score, none is queued or being measured,
    and main's own target did not fail (a failing target gets one event, not a baseline every
    pass); its path."""
    env_class = baseline_class(lab)
    if score_of(lab, main, env_class) is not None or failed_baseline(lab, main, env_class=env_class):
        return None
    key = target_key(lab, main)
    if any(entry.get("kind") == "baseline" and _target_of(lab, entry.get("base")) == key
           for entry in _queue_documents(lab)):
        return None
    return new_experiment(lab, None, {}, main, priority=100, kind="baseline", by="runner")[1]


def _target_of(lab: Lab, base) -> str | None:
    try:
        return target_key(lab, str(base))
    except git.GitCommandError:  # a hand-written entry's base that is no commit here
        return None


def _queue_documents(lab: Lab):
    for path in lab.queue.glob("*.yaml"):
        try:
            data = load_yaml(path)[0]
        except LabError:
            continue
        if isinstance(data, dict):
            yield data
