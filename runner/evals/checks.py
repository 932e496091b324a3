"""The assertions of a case, checked by code on what the agent left in its lab.

    failures(case, ws, output) -> list[str]      # one line per assertion that did not hold

Paths are lab-relative (or `{worktree}/...`); a glob's `*` also crosses `/` (fnmatch), and
a plain path names one file or everything under a directory. `not: true` inverts a check.
`accepted` runs last: judging a queue entry may record a `gate` event in the case's lab.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
from fnmatch import fnmatchcase

from ..errors import LabError, describe
from ..files.tomlio import parse_toml
from ..files.yamlio import parse_data
from ..lab import Lab
from .cases import Case
from .workspace import Workspace, base_env, is_glob, is_plain, tree_hashes

COMMAND_TIMEOUT_S = 300


class Context:
    """What the checks read: the lab after the agent, listed once."""

    def __init__(self, case: Case, ws: Workspace, output: str):
        self.case, self.ws, self.output = case, ws, output
        self.after = tree_hashes(ws.root)

    def read(self, rel: str) -> str:
        """A file's text; a fifo or device an agent left is never opened (reading it could block)."""
        path = self.ws.root / rel
        if not is_plain(path):
            raise LabError(f"{rel} is not a plain file")
        return path.read_text(encoding="utf-8", errors="replace")

    def select(self, pattern: str, listing: dict[str, str]) -> list[str]:
        target = self.ws.rel(self.ws.path(pattern))
        if is_glob(target):
            return sorted(p for p in listing if fnmatchcase(p, target))
        return sorted(p for p in listing if p == target or p.startswith(target.rstrip("/") + "/"))


def failures(case: Case, ws: Workspace, output: str) -> list[str]:
    ctx = Context(case, ws, output)
    order = sorted(range(len(case.assertions)), key=lambda i: case.assertions[i]["type"] == "accepted")
    found = {}
    for i in order:
        assertion = case.assertions[i]
        try:
            held, detail = CHECKS[assertion["type"]](assertion, ctx)
        except LabError as exc:
            held, detail = False, exc.problem.message
        except Exception as exc:  # noqa: BLE001 - an agent can leave its lab in any state: a failed check
            held, detail = False, f"cannot check: {describe(exc)}"
        if held == bool(assertion.get("not")):
            found[i] = f"{_name(assertion)}: {detail}"
    return [found[i] for i in sorted(found)]


def _name(assertion: dict) -> str:
    if assertion.get("description"):
        return assertion["description"]
    keys = ("field",) if assertion["type"] == "field" else ("path", "sql", "run", "text", "pattern")
    what = next((str(assertion[k]) for k in keys if k in assertion), "")
    return f"{'not ' if assertion.get('not') else ''}{assertion['type']} {what}".strip()


# -- files ---------------------------------------------------------------------------
def _file_exists(a: dict, ctx: Context) -> tuple[bool, str]:
    found = ctx.select(a["path"], ctx.after)
    held = len(found) == a["count"] if "count" in a else bool(found)
    return held, f"{len(found)} file(s) match ({', '.join(found[:5])})" if found else "no such file"


def _file_contains(a: dict, ctx: Context) -> tuple[bool, str]:
    found = ctx.select(a["path"], ctx.after)
    pattern = re.compile(a["pattern"], re.M)
    for rel in found:
        match = pattern.search(ctx.read(rel))
        if match:
            return True, f"{rel} has {match.group(0)[:80]!r}"
    return False, f"no match in {', '.join(found[:5])}" if found else "no such file"


def _field(a: dict, ctx: Context) -> tuple[bool, str]:
    found = ctx.select(a["path"], ctx.after)
    if not found:
        return False, "no such file"
    for rel in found:
        value = _lookup(_load(ctx.read(rel), rel), a["field"])
        if not _matches(value, a):
            return False, f"{rel}: {a['field']} is {value!r}"
    return True, f"{a['field']} as expected in {len(found)} file(s)"


def _unchanged(a: dict, ctx: Context) -> tuple[bool, str]:
    before = ctx.select(a["path"], ctx.ws.before)
    paths = sorted(set(before) | set(ctx.select(a["path"], ctx.after)))
    differ = [p for p in paths if ctx.ws.before.get(p) != ctx.after.get(p)]
    if differ:
        return False, "changed: " + ", ".join(differ[:5])
    return True, f"{len(paths)} file(s) as they were"


def _load(text: str, rel: str):
    if rel.endswith(".json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise LabError(f"{rel} is not valid JSON: {exc}") from None
    if rel.endswith(".toml"):
        return parse_toml(text, rel)[0]
    return parse_data(text, rel)


def _lookup(data, dotted: str):
    for part in dotted.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and re.fullmatch(r"-?\d+", part) and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _matches(value, a: dict) -> bool:
    if "equals" in a and not _same(value, a["equals"]):
        return False
    if "in" in a and not any(_same(value, option) for option in a["in"]):
        return False
    if "contains" in a:
        if isinstance(value, list):
            if not any(_same(item, a["contains"]) for item in value):
                return False
        elif not (isinstance(value, str) and str(a["contains"]) in value):
            return False
    return "pattern" not in a or (value is not None and re.search(a["pattern"], str(value)) is not None)


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


# -- the lab's own verdicts ------------------------------------------------------------
def _validate(a: dict, ctx: Context) -> tuple[bool, str]:
    from ..validation.validate import validate
    paths = [str(ctx.ws.path(p)) for p in a.get("paths", [])]
    report = validate(ctx.ws.root, paths or None)
    return report.ok, report.summary() + "".join(f"; {p}" for p in report.problems[:3])


def _query(a: dict, ctx: Context) -> tuple[bool, str]:
    from ..report.query import run_query
    result = run_query(Lab(ctx.ws.root), ctx.ws.fill(a["sql"]))
    shown = f"{len(result.rows)} row(s): {result.rows[:3]}"
    if "rows" in a and len(result.rows) != a["rows"]:
        return False, shown
    if "row" in a:
        wanted = [ctx.ws.fill(v) if isinstance(v, str) else v for v in a["row"]]
        if not any(len(row) == len(wanted) and all(map(_same, row, wanted)) for row in result.rows):
            return False, f"no row {wanted} among {shown}"
    return True, shown


def _command(a: dict, ctx: Context) -> tuple[bool, str]:
    try:
        done = subprocess.run(["bash", "-c", ctx.ws.fill(a["run"])], cwd=ctx.ws.root, env=base_env(ctx.ws),
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"ran over {COMMAND_TIMEOUT_S}s"
    last = (done.stdout.strip() + "\n" + done.stderr.strip()).strip().splitlines()
    return done.returncode == a.get("exit", 0), f"exit {done.returncode}" + (f": {last[-1][:160]}" if last else "")


def _output_contains(a: dict, ctx: Context) -> tuple[bool, str]:
    from ..files.agent_usage import parse
    text = "\n".join([ctx.output, *parse(ctx.output).messages])
    if "text" in a and a["text"] not in text:
        return False, f"no {a['text']!r} in the agent's output"
    if "pattern" in a:
        match = re.search(a["pattern"], text, re.M)
        if not match:
            return False, f"no match of {a['pattern']!r} in the agent's output"
        return True, f"the output has {match.group(0)[:80]!r}"
    return True, f"the output has {a.get('text')!r}"


def _accepted(a: dict, ctx: Context) -> tuple[bool, str]:
    from .verdict import refusals
    problems = refusals(ctx.case, ctx.ws)
    return not problems, "; ".join(problems[:3]) if problems else "the runner accepts what it wrote"


CHECKS = {"file_exists": _file_exists, "file_contains": _file_contains, "field": _field, "unchanged": _unchanged,
          "validate": _validate, "query": _query, "command": _command, "output_contains": _output_contains,
          "accepted": _accepted}
