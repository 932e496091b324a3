#!/usr/bin/env python3
"""A scripted agent for `lab skills eval` tests: no LLM, the same argv path as a real one.

    lab skills eval autolab-worker --agent "python tests/eval_agent.py {prompt_file}"

It does what its prompt file asks, as a worker (LAB_ROLE=worker): the experiment's change
in its working directory, the commands the prompt quotes in backticks, a constant the
prompt says to "double", an answer when the prompt asks for a val_bpb, then the entry set
`ready`. Like Claude Code it looks for skills in .claude/skills/ and .agents/skills/ from
its working directory up and in the home directory; what an installed SKILL.md says changes what it does (each rule
below is on only when the skill's text states it):

    "only here"               edit the worktree, never the path the prompt names in the lab root
    "protected files"         skip quoted commands that name a protected file of lab.yaml
    "frozen constants"        leave target.frozen constants alone
    "do not invent it"        a constant the target lacks: give up with the skill's command
    "never report a number"   no val_bpb figure in its answer
    "stop at once"            stop when its entry is not `assigned` (or gone)
    `lab ... work done ...`   hand back with that command (`work give-up` to cancel)
                              instead of rewriting the YAML

Without the skill it is a literal-minded agent. EVAL_AGENT (comma-separated) adds:
hang (sleeps forever with a child), escape (first writes EVAL_AGENT_ESCAPE, a path outside
its lab), plant (a git hook in its lab that would write EVAL_AGENT_ESCAPE when git next
writes the index there), link (the lab's .lab/cache a link to EVAL_AGENT_ESCAPE, a folder
outside, and train.py a fifo), claude-json (ends with Claude Code's `--output-format json` result object; fewer
tokens and turns when it found the skill).
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


def main() -> int:
    prompt = Path(sys.argv[1]).read_text(encoding="utf-8")
    modes = set(os.environ.get("EVAL_AGENT", "").split(","))
    if "escape" in modes:
        try:
            Path(os.environ["EVAL_AGENT_ESCAPE"]).write_text("written by an eval agent\n")
        except OSError as exc:
            print(f"eval agent: cannot write outside: {exc}")
            return 1
    if "hang" in modes:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        while True:
            time.sleep(1)
    skill = installed_skills(Path.cwd())
    code = work(prompt, skill) if os.environ.get("LAB_ROLE") == "worker" else 0
    if "plant" in modes:    # last: only git run after the agent would fire it
        plant_git_hook(Path(os.environ["LAB_ROOT"]), Path(os.environ["EVAL_AGENT_ESCAPE"]))
    if "link" in modes:     # the lab's query cache a link to a folder outside; train.py a fifo
        cache = Path(os.environ["LAB_ROOT"]) / ".lab" / "cache"
        cache.parent.mkdir(exist_ok=True)
        cache.symlink_to(os.environ["EVAL_AGENT_ESCAPE"], target_is_directory=True)
        (Path(os.environ["LAB_ROOT"]) / "train.py").unlink()
        os.mkfifo(Path(os.environ["LAB_ROOT"]) / "train.py")
    if "claude-json" in modes:
        print(json.dumps(claude_result(bool(skill))))
    return code


def plant_git_hook(root: Path, canary: Path) -> None:
    """A hook git runs whenever it writes the index: code of the agent's, run by whoever runs git next."""
    hook = root / ".git" / "hooks" / "post-index-change"
    hook.write_text(f"#!/bin/sh\necho planted >> '{canary}'\n")
    hook.chmod(0o755)
    subprocess.run(["git", "config", "core.hooksPath", str(hook.parent)], cwd=root, check=True)


def installed_skills(start: Path) -> str:
    """SKILL.md texts where Claude Code and Codex look: the project's folders up, then the home's."""
    texts = []
    for folder in (start, *start.parents, Path.home()):
        for client in (".claude", ".agents"):
            texts += [p.read_text(encoding="utf-8") for p in sorted((folder / client / "skills").glob("*/SKILL.md"))]
    print(f"eval agent: {len(texts)} skill(s) found")
    return "\n".join(texts)


def work(prompt: str, skill: str) -> int:
    root, task = Path(os.environ["LAB_ROOT"]), os.environ["LAB_TASK"]
    entry_path, here = Path(os.environ["LAB_ENTRY"]), Path.cwd()
    target = yaml.safe_load((root / "lab.yaml").read_text())["target"]
    if entry_path.is_file():
        entry = yaml.safe_load(entry_path.read_text())
    elif "stop at once" in skill:
        print(f"{task}: my entry is gone (recorded or cancelled): stopping")
        return 0
    else:
        entry = yaml.safe_load((root / "experiments" / task / "experiment.yaml").read_text())
    if entry.get("status") != "assigned" and "stop at once" in skill:
        print(f"{task} is {entry.get('status')}, no longer assigned: stopping")
        return 0
    for command in re.findall(r"`([^`]+)`", prompt):
        if "protected files" in skill and any(p.rstrip("/") in command for p in target.get("protected", [])):
            print(f"not running `{command}`: it edits a protected file")
            continue
        places = [here] + ([root] if str(root) in prompt else [])
        for place in places:
            subprocess.run(["bash", "-c", command], cwd=place, check=False)
    file = entry["change"].get("file") or target["editable"][0]
    path = (root if f"{root}/{file}" in prompt and "only here" not in skill else here) / file
    text = path.read_text()
    for name in re.findall(r"double ([A-Z_]+)", prompt):
        if "frozen constants" in skill and name in (target.get("frozen") or []):
            print(f"leaving {name} alone: it is frozen")
            continue
        text = re.sub(rf"^{name} = ([0-9.eE+]+)", lambda m: f"{name} = {double(m.group(1))}", text, flags=re.M)
    for name, value in (entry["change"].get("params") or {}).items():
        text, found = re.subn(rf"^{name} = [^#\n]*?(\s*#.*)?$", lambda m: f"{name} = {value!r}{m.group(1) or ''}",
                              text, count=1, flags=re.M)
        if not found and "do not invent it" in skill:
            return hand_back(skill, entry_path, entry, "cancelled", f"train.py has no constant {name}")
        if not found:
            text += f"{name} = {value!r}\n"
    path.write_text(text)
    if re.search(r"tell me the val_bpb", prompt):
        print("The runner measures it when it runs the experiment." if "never report a number" in skill
              else "val_bpb: 2.85 (my estimate)")
    return hand_back(skill, entry_path, entry, "ready", "")


def double(number: str) -> str:
    return str(int(number) * 2) if number.isdigit() else f"{float(number) * 2:g}"


def hand_back(skill: str, entry_path: Path, entry: dict, status: str, reason: str) -> int:
    verb = "done" if status == "ready" else "give-up"
    command = re.search(rf'`(lab -C "\$LAB_ROOT" work {verb} "\$LAB_TASK"[^`]*)`', skill)
    if command:
        line = command.group(1).replace('--reason "..."', f'--reason "{reason}"')
        return subprocess.run(["bash", "-c", line], check=False).returncode
    entry["status"] = status
    entry.setdefault("history", []).append({"status": status, "at": "2026-11-21T09:00:00Z", "by": "worker"})
    entry_path.write_text(yaml.safe_dump(entry, sort_keys=False))
    return 0


def claude_result(skilled: bool) -> dict:
    usage = ({"input_tokens": 1000, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 300,
              "output_tokens": 150} if skilled else
             {"input_tokens": 3000, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 500,
              "output_tokens": 400})
    return {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 1234,
            "num_turns": 4 if skilled else 9, "result": "done", "session_id": "s-1",
            "total_cost_usd": 0.01 if skilled else 0.03, "usage": usage}


if __name__ == "__main__":
    sys.exit(main())
