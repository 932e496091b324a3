#!/usr/bin/env python3
"""A scripted stand-in for a coding agent (`claude -p`, `codex exec`, ...).

The runner starts it through the same agent-command path as a real agent:

    roles:
      researcher: {kind: agent, command: [python, tests/fake_agent.py, "{prompt_file}"]}

It reads the prompt file (and fails if it is missing or does not name its role),
then acts on the lab's files by role, as the skill tells a real agent to:

    researcher  writes hypotheses/<id>.yaml (status proposed): one declared parameter of
                lab.yaml, its current value in the target scaled by the first factor in
                FACTORS that no hypothesis has tried yet (FAKE_AGENT_PARAM=NAME=VALUE forces one)
    planner     accepts every proposed hypothesis (status + review) and queues it as
                queue/<id>.yaml (status queued, base = main's HEAD)
    worker      edits the entry's params as top-level constants of the target file in its
                worktree (the current directory), then sets status ready in $LAB_ENTRY
    reporter    writes reports/LEADERBOARD.md and reports/<task>.md

FAKE_AGENT_SCENARIO (or FAKE_AGENT_SCENARIO_<ROLE>, which wins) picks a misbehaviour:

    good            as above
    invalid-yaml    writes malformed YAML where the role writes YAML
    edit-protected  also appends a line to lab.yaml in its working directory
    edit-main       worker: edits the target in the lab root instead of its worktree
    commit-protected  edits lab.yaml in the lab root and commits it with git
    duplicate       researcher: proposes exactly the change of an existing hypothesis
    self-accept     researcher: writes its hypothesis with status accepted (the planner's call)
    claim           worker: claims its entry first (runner.roles.claims.claim), works only if it won
    hang            starts a child that sleeps, then sleeps forever (pids in $FAKE_AGENT_PIDS)
    fail            prints a message and exits 3
    queue-assigned  planner: queues its entries with status assigned (the runner's call)
    propose         planner: writes a new hypothesis (the researcher's job)

and these, done instead of the role's work, to trigger one ownership rule each:

    write-file      writes a line to $FAKE_AGENT_PATH (lab-relative; directories made)
    delete-file     deletes $FAKE_AGENT_PATH
    mark-ready      sets status ready (with a history item) in the queue entry $FAKE_AGENT_PATH
    append-event    records one event: a new file in experiments/events/ (the runner's files alone)
    truncate-events rewrites the oldest file of experiments/events/ without its last row
    corrupt-events  overwrites the oldest file of experiments/events/ with bytes that are not Parquet
    rejudge         sets status rejected and a review on the first proposed hypothesis
    refine          rewrites the rationale of the first proposed hypothesis, status untouched
    edit-title      accepts the first proposed hypothesis and also changes its title
    edit-live       raises the priority of the first queue entry
    edit-change     worker: changes the params of its own entry and sets it ready
    set-running     worker: sets its own entry running (the runner's call)

FAKE_AGENT_LINGER=<seconds> keeps it alive that long after it has acted.
FAKE_AGENT_USAGE=claude|codex|opencode prints, last, the usage report that CLI prints with JSON output
(Claude Code's `result` object, Codex's `turn.completed` events, OpenCode's `step_finish` events),
with the numbers in USAGE below.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from runner.files.yamlio import write_yaml
from runner.lab import Lab
from runner.roles.claims import claim
from runner.state.fingerprint import fingerprint
from runner.state.ids import new_id
from runner.state.timeutil import iso

FACTORS = (2.0, 0.5, 4.0, 0.25, 1.5, 0.75, 3.0, 0.33)
USAGE = {"input": 1200, "cache_write": 300, "cache_read": 4000, "output": 850, "cost": 0.0421}


def main() -> int:
    role = os.environ["LAB_ROLE"]
    prompt = Path(sys.argv[1]).read_text(encoding="utf-8")
    if f"you are the {role}" not in prompt:
        print(f"fake agent: the prompt does not name my role {role}", file=sys.stderr)
        return 2
    scenario = os.environ.get(f"FAKE_AGENT_SCENARIO_{role.upper()}") or os.environ.get("FAKE_AGENT_SCENARIO", "good")
    print(f"fake agent: {role} {os.environ.get('LAB_TASK')} scenario {scenario}", flush=True)
    lab = Lab(Path(os.environ["LAB_ROOT"]))
    if scenario == "hang":
        return hang()
    if scenario == "fail":
        print("fake agent: giving up", flush=True)
        return 3
    if scenario == "edit-protected":
        with open(Path.cwd() / "lab.yaml", "a") as handle:
            handle.write("# edited by a fake agent\n")
    if scenario == "commit-protected":
        with open(lab.root / "lab.yaml", "a") as handle:
            handle.write("# committed by a fake agent\n")
        subprocess.run(["git", "commit", "-q", "--no-verify", "-m", "agent edits lab.yaml", "--", "lab.yaml"],
                       cwd=lab.root, check=True)
    code = MISCHIEF[scenario](lab) if scenario in MISCHIEF else ROLES[role](lab, scenario)
    time.sleep(float(os.environ.get("FAKE_AGENT_LINGER", "0")))
    report_usage(os.environ.get("FAKE_AGENT_USAGE"))
    return code


# -- roles ------------------------------------------------------------------------------
def researcher(lab: Lab, scenario: str) -> int:
    existing = [load(p) for p in sorted(lab.hypotheses.glob("*.yaml"))]
    if scenario == "duplicate":
        change = dict(existing[0]["change"])
    else:
        change = {"params": propose(lab, [h.get("change") or {} for h in existing])}
    hyp_id = new_id("h")
    path = lab.hypotheses / f"{hyp_id}.yaml"
    if scenario == "invalid-yaml":
        path.write_text(f"id: {hyp_id}\ntitle: [unclosed\nstatus: proposed\n")
        return 0
    name, value = next(iter(change.get("params", {}).items()), ("change", ""))
    status = "accepted" if scenario == "self-accept" else "proposed"
    write(path, {"id": hyp_id, "title": f"{name} = {value}", "status": status, "author": "researcher",
                 "created": iso(), "rationale": "fake agent: scale one declared parameter",
                 "source": {"kind": "exploration"}, "change": change})
    print(f"fake agent: proposed {path.name}")
    return 0


def propose(lab: Lab, tried: list[dict]) -> dict:
    forced = os.environ.get("FAKE_AGENT_PARAM")
    if forced:
        name, _, raw = forced.partition("=")
        return {name: yaml.safe_load(raw)}
    target = lab.config["target"]
    if not target.get("params"):
        raise SystemExit("fake agent: lab.yaml declares no target.params to vary (set FAKE_AGENT_PARAM)")
    name = target["params"][0]
    current = current_value(lab.root / target["editable"][0], name)
    values = {(c.get("params") or {}).get(name) for c in tried}
    for factor in FACTORS:
        value = type(current)(current * factor) if isinstance(current, (int, float)) else current
        if value not in values:
            return {name: value}
    return {name: current * 10}


def planner(lab: Lab, scenario: str) -> int:
    if scenario == "propose":
        return researcher(lab, "good")
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=lab.root, capture_output=True, text=True,
                          check=True).stdout.strip()
    for path in sorted(lab.hypotheses.glob("*.yaml")):
        hyp = load(path)
        if hyp.get("status") != "proposed":
            continue
        hyp["status"] = "accepted"
        hyp["review"] = {"by": "planner", "at": iso(), "reason": "fake agent: one declared parameter"}
        write(path, hyp)
        exp_id = new_id("e")
        queue = lab.queue / f"{exp_id}.yaml"
        if scenario == "invalid-yaml":
            queue.write_text(f"id: {exp_id}\nstatus: queued\nchange: {{params: [\n")
            continue
        now = iso()
        status = "assigned" if scenario == "queue-assigned" else "queued"
        write(queue, {"id": exp_id, "hypothesis": hyp["id"], "kind": "experiment", "status": status,
                      "base": base, "priority": 0, "wave": 0, "change": hyp["change"],
                      "fingerprint": fingerprint(hyp["change"]), "created": now,
                      "history": [{"status": "queued", "at": now, "by": "planner"}]})
        print(f"fake agent: queued {queue.name} for {path.name}")
    return 0


def worker(lab: Lab, scenario: str) -> int:
    entry_path = Path(os.environ["LAB_ENTRY"])
    entry = load(entry_path)
    if scenario == "claim" and not claim(lab, entry["id"], os.environ["LAB_TASK"]):
        print(f"fake agent: {entry['id']} is claimed by another worker")
        return 0
    if scenario == "invalid-yaml":
        entry_path.write_text(entry_path.read_text() + "status: [ready\n")
        return 0
    change = entry.get("change") or {}
    where = lab.root if scenario == "edit-main" else Path(os.environ.get("LAB_WORKTREE") or Path.cwd())
    target = where / (change.get("file") or lab.config["target"]["editable"][0])
    text = target.read_text()
    for name, value in (change.get("params") or {}).items():
        text, count = re.subn(rf"^{name}\s*=.*$", f"{name} = {value!r}", text, count=1, flags=re.M)
        if not count:
            print(f"fake agent: {name} is not a top-level constant of {target.name}", file=sys.stderr)
            return 1
    if not change.get("params"):
        text += f"# {change.get('instructions', '').strip().splitlines()[0]}\n"
    target.write_text(text)
    now = iso()
    entry.update(status="ready", updated=now)
    entry.setdefault("history", []).append({"status": "ready", "at": now, "by": "worker"})
    write(entry_path, entry)
    print(f"fake agent: edited {target} and set {entry['id']} ready")
    return 0


def reporter(lab: Lab, scenario: str) -> int:
    from runner.state.scores import scores
    rows = scores(lab).to_pylist()
    lines = ["# Leaderboard", "", f"| id | {lab.metric} | status |", "| --- | --- | --- |"]
    lines += [f"| {r['id']} | {r['value']} | {r['status']} |" for r in rows]
    reports = lab.root / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "LEADERBOARD.md").write_text("\n".join(lines) + "\n")
    (reports / f"{os.environ['LAB_TASK']}.md").write_text(f"# Report\n\n{len(rows)} experiments scored.\n")
    return 0


ROLES = {"researcher": researcher, "planner": planner, "worker": worker, "reporter": reporter}


# -- one ownership rule each ------------------------------------------------------------------
def target_path(lab: Lab) -> Path:
    return lab.root / os.environ["FAKE_AGENT_PATH"]


def write_file(lab: Lab) -> int:
    path = target_path(lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write("# written by a fake agent\n")
    return 0


def delete_file(lab: Lab) -> int:
    target_path(lab).unlink()
    return 0


def mark_ready(lab: Lab) -> int:
    path = target_path(lab)
    entry = load(path)
    now = iso()
    entry.update(status="ready", updated=now)
    entry.setdefault("history", []).append({"status": "ready", "at": now, "by": "worker"})
    write(path, entry)
    return 0


def append_event(lab: Lab) -> int:
    from runner.state.events import record_event
    record_event(lab, "info", "note", f"fake {os.environ['LAB_ROLE']} agent was here")
    return 0


def oldest_events_file(lab: Lab) -> Path:
    from runner.state.events import events_dir
    return sorted(events_dir(lab).glob("*.parquet"))[0]


def truncate_events(lab: Lab) -> int:
    import pyarrow.parquet as pq
    path = oldest_events_file(lab)
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)
    return 0


def corrupt_events(lab: Lab) -> int:
    oldest_events_file(lab).write_bytes(b"these bytes are not Parquet\n")
    return 0


def edit_first(directory: Path, change) -> int:
    """Edit the first proposed hypothesis (or the first queue entry)."""
    path = next(p for p in sorted(directory.glob("*.yaml")) if load(p).get("status") in ("proposed", "queued"))
    data = load(path)
    change(data)
    write(path, data)
    return 0


def rejudge(lab: Lab) -> int:
    return edit_first(lab.hypotheses, lambda h: h.update(
        status="rejected", review={"by": "researcher", "at": iso(), "reason": "fake agent: judging"}))


def refine(lab: Lab) -> int:
    return edit_first(lab.hypotheses, lambda h: h.update(rationale="fake agent: a better argument"))


def edit_title(lab: Lab) -> int:
    return edit_first(lab.hypotheses, lambda h: h.update(
        status="accepted", title=h["title"] + " (retitled)",
        review={"by": "planner", "at": iso(), "reason": "fake agent: accepted"}))


def edit_live(lab: Lab) -> int:
    return edit_first(lab.queue, lambda e: e.update(priority=int(e.get("priority", 0)) + 1))


def edit_change(lab: Lab) -> int:
    path = Path(os.environ["LAB_ENTRY"])
    entry = load(path)
    entry["change"] = {"params": {name: 0 for name in (entry["change"].get("params") or {"X": 0})}}
    entry.update(status="ready", updated=iso())
    write(path, entry)
    return 0


def set_running(lab: Lab) -> int:
    path = Path(os.environ["LAB_ENTRY"])
    entry = load(path)
    now = iso()
    entry.update(status="running", updated=now)
    entry.setdefault("history", []).append({"status": "running", "at": now, "by": "worker"})
    write(path, entry)
    return 0


MISCHIEF = {"write-file": write_file, "delete-file": delete_file, "mark-ready": mark_ready,
            "append-event": append_event, "truncate-events": truncate_events, "corrupt-events": corrupt_events,
            "rejudge": rejudge, "refine": refine, "edit-title": edit_title, "edit-live": edit_live,
            "edit-change": edit_change, "set-running": set_running}


# -- helpers -----------------------------------------------------------------------------
def report_usage(style: str | None) -> None:
    """What each CLI prints about its usage, split over two turns or steps where it reports per turn."""
    u = USAGE
    if style == "claude":
        print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "duration_ms": 5310,
                          "num_turns": 3, "result": "done", "session_id": "fake", "total_cost_usd": u["cost"],
                          "usage": {"input_tokens": u["input"], "cache_creation_input_tokens": u["cache_write"],
                                    "cache_read_input_tokens": u["cache_read"], "output_tokens": u["output"]}}))
    elif style == "codex":
        print(json.dumps({"type": "thread.started", "thread_id": "fake"}))
        for share in (0.25, 0.75):   # input_tokens includes the cached ones
            print(json.dumps({"type": "turn.completed", "usage": {
                "input_tokens": int(share * (u["input"] + u["cache_read"])),
                "cached_input_tokens": int(share * u["cache_read"]), "output_tokens": int(share * u["output"])}}))
    elif style == "opencode":
        for share in (0.25, 0.75):   # input excludes the cache's reads and writes
            print(json.dumps({"type": "step_finish", "timestamp": 1, "sessionID": "ses_fake", "part": {
                "type": "step-finish", "cost": share * u["cost"], "tokens": {
                    "input": int(share * u["input"]), "output": int(share * u["output"]), "reasoning": 0,
                    "cache": {"read": int(share * u["cache_read"]), "write": int(share * u["cache_write"])}}}}))



def hang() -> int:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
    pids = os.environ.get("FAKE_AGENT_PIDS")
    if pids:
        Path(pids).write_text(f"{os.getpid()} {child.pid}\n")
    while True:
        time.sleep(1)


def current_value(path: Path, name: str):
    found = re.search(rf"^{name}\s*=\s*(.+?)\s*(#.*)?$", path.read_text(), re.M)
    return yaml.safe_load(found.group(1)) if found else 1.0


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def write(path: Path, data: dict) -> None:
    """Through the lab's own writer, as the skills tell agents to (atomic where the directory is
    writable; in place where a sandbox lets the agent write only this one file)."""
    write_yaml(path, data)


if __name__ == "__main__":
    sys.exit(main())
