"""The state machine of hypotheses and experiments, declared once: statuses, the
transitions each actor may make, and what each agent role may write.

The runner, validation, status, the reporter and the agents' ownership check all
read these tables; nothing else spells a status list out.

    hypothesis:  proposed --planner--> accepted | rejected | duplicate
    experiment:  queued --runner--> assigned --worker--> ready --runner--> running
                 running --runner--> finished | failed | timed_out | stale
                 any live status --human--> cancelled
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

# -- hypotheses ----------------------------------------------------------------------
PROPOSED, ACCEPTED, REJECTED, DUPLICATE = "proposed", "accepted", "rejected", "duplicate"
HYPOTHESIS_STATUSES = (PROPOSED, ACCEPTED, REJECTED, DUPLICATE)
DO_NOT_REPEAT = (REJECTED, DUPLICATE)          # a judged idea that must not come back
HYPOTHESIS_TRANSITIONS = {(PROPOSED, status): ("planner",) for status in (ACCEPTED, REJECTED, DUPLICATE)}

# -- experiments -----------------------------------------------------------------------
QUEUED, ASSIGNED, READY, RUNNING = "queued", "assigned", "ready", "running"
FINISHED, FAILED, TIMED_OUT, CANCELLED, STALE = "finished", "failed", "timed_out", "cancelled", "stale"
LIVE = (QUEUED, ASSIGNED, READY, RUNNING)      # in queue/<id>.yaml
ACTIVE = (ASSIGNED, READY, RUNNING)            # holds a slot
TERMINAL = (FINISHED, FAILED, TIMED_OUT, CANCELLED, STALE)  # in experiments/<id>/experiment.yaml
UNMEASURED = (CANCELLED, STALE)                # ended without measuring the change: it may be tried again

# (from, to) -> the actors that may make it. A baseline has no worker: the runner readies it.
TRANSITIONS: dict[tuple[str, str], tuple[str, ...]] = {
    (QUEUED, ASSIGNED): ("runner",),
    (ASSIGNED, READY): ("worker", "runner"),
    (READY, RUNNING): ("runner",),
    (RUNNING, READY): ("runner",),                 # a retry after an infrastructure failure
    **{(status, STALE): ("runner",) for status in (ASSIGNED, READY)},   # main moved before it ran
    **{(status, FAILED): ("runner",) for status in ACTIVE},   # refused diff, worker gave up, crash
    **{(RUNNING, end): ("runner",) for end in (FINISHED, TIMED_OUT, STALE)},
    **{(status, CANCELLED): ("human", "runner") for status in LIVE},
    (ASSIGNED, CANCELLED): ("human", "runner", "worker"),   # a worker that gives up hands it back
}


def allowed(old: str, new: str, actor: str) -> bool:
    """Whether `actor` may move an experiment from `old` to `new`."""
    return actor in TRANSITIONS.get((old, new), ())


def external(old: str, new: str) -> bool:
    """A status change that someone other than the runner may make in a queue file."""
    return any(actor != "runner" for actor in TRANSITIONS.get((old, new), ()))


# -- what agent roles may write in main's checkout -----------------------------------------
@dataclass(frozen=True)
class FileRule:
    """One role's rights over one kind of file (paths are lab-relative globs;
    `{task}` is the agent's task id, for a worker its experiment id). A status it
    changes must also be a transition the tables above give the role."""
    pattern: str
    create_as: str | None = None        # a new file must have this status (None: may not create)
    fields: tuple[str, ...] = ()        # fields it may change in an existing file
    only_fields: bool = True            # False: it may change every field *except* `fields`
    free: bool = False                  # any content (reports)


ROLE_FILES: dict[str, tuple[FileRule, ...]] = {
    "researcher": (FileRule("hypotheses/*.yaml", create_as=PROPOSED, fields=("status", "review"),
                            only_fields=False),),
    "planner": (FileRule("hypotheses/*.yaml", fields=("status", "review")),
                FileRule("queue/*.yaml", create_as=QUEUED)),
    "worker": (FileRule("queue/{task}.yaml", fields=("status", "updated", "history")),),
    "reporter": (FileRule("reports/**", free=True),),
}
AGENT_ROLES = tuple(ROLE_FILES)
MAIN_WRITERS = ("researcher", "planner", "reporter")   # agents that write main's checkout


def rule_for(role: str, path: str, task: str = "") -> FileRule | None:
    """The rule that lets `role` touch `path`, or None if it may not."""
    for rule in ROLE_FILES.get(role, ()):
        pattern = rule.pattern.replace("{task}", task)
        if pattern.endswith("/**") and path.startswith(pattern[:-2]):
            return rule
        if fnmatch.fnmatchcase(path, pattern) and "/" not in path[len(pattern.split("*")[0]):]:
            return rule
    return None


def may_set(role: str, kind: str, old: str, new: str) -> bool:
    """Whether `role` may move a hypothesis or experiment from `old` to `new`."""
    if kind == "hypothesis":
        return role in HYPOTHESIS_TRANSITIONS.get((old, new), ())
    return allowed(old, new, role)
