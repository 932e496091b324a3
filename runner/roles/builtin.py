"""Builtin roles, so the loop runs with no LLM at all.

- researcher: turns ideas from the lab's offline idea library (roles.researcher.ideas,
  default the package's; related papers when online) into `proposed` hypotheses,
  each with its paper reference;
- planner (+ reviewer): judges proposals with the gates (duplicate across the
  whole history, do-not-repeat, single change), queues accepted ones, and when
  ideas run out explores around main by perturbing one declared parameter (or asks
  Optuna for it: optimizer.py);
- worker: applies a parameter change to the target in the experiment's worktree;
- reporter: lives in runner.report (leaderboard) and runner.report.anomalies.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import LabError
from ..files.yamlio import load_yaml
from ..lab import Lab
from ..repo.gitops import run_git
from ..state.create import new_experiment, new_hypothesis
from ..state.params import apply_params, read_params
from . import gates
from .history import History
from .review import write_review


# -- researcher ---------------------------------------------------------------
def research(lab: Lab, history: History, want: int, main: str | None = None) -> list[Path]:
    """Propose up to `want` ideas from the library that were never proposed before and
    that would change main (an idea main already holds would measure nothing)."""
    from .ideas import applicable, lab_ideas

    proposed = {h.get("tags", [""])[0] for h in _hypotheses(lab) if h.get("tags")}
    ideas = lab_ideas(lab)
    if main:
        ideas = applicable(ideas, read_params(run_git(lab.root, "show", f"{main}:{lab.config['target']['editable'][0]}")))
    made = []
    for idea in ideas:
        if len(made) >= want:
            break
        tag = f"idea:{idea.id}"
        if tag in proposed:
            continue
        change = {"params": dict(idea.params)}
        rationale = idea.rationale + _related_papers(lab, idea.title)
        _, path = new_hypothesis(lab, idea.title, change, author="researcher", rationale=rationale,
                                 source=dict(idea.source), expected=idea.expected, tags=[tag])
        made.append(path)
    return made


_OFFLINE: set[str] = set()  # labs whose Papers search failed once in this process: don't wait again


def _related_papers(lab: Lab, title: str, limit: int = 3) -> str:
    """Recent papers on the idea from Hugging Face Papers, when online; '' offline."""
    from .papers import PapersUnavailable, search_papers

    if str(lab.root) in _OFFLINE:
        return ""
    try:
        papers = search_papers(lab, title, limit, timeout=3)
    except PapersUnavailable:
        _OFFLINE.add(str(lab.root))
        return ""
    if not papers:
        return ""
    lines = "; ".join(f"arXiv:{p['id']} {p['title']}" for p in papers[:limit])
    return f"\nRelated on Hugging Face Papers: {lines}"


# -- planner / reviewer -------------------------------------------------------
def plan(lab: Lab, history: History, main_head: str, room: int, explore_ok: bool = True) -> list[Path]:
    """Judge proposed hypotheses; queue accepted ones; explore once the ideas are used up
    (by a factor around main, or with Optuna when roles.planner.exploration is optuna)."""
    touched: list[Path] = []
    for _, hyp in _unqueued(lab)[:max(room, 0)]:
        touched.append(_queue(lab, history, hyp, main_head))
        room -= 1
    room = _judge(lab, history, main_head, room, touched)
    if room > 0 and explore_ok and not _proposed(lab):
        if lab.config["roles"]["planner"].get("exploration") == "optuna":
            from .optimizer import propose
            touched += propose(lab, history, main_head, room)
            _judge(lab, history, main_head, room, touched)
        else:
            touched += explore(lab, history, main_head, room)
    return touched


def _judge(lab: Lab, history: History, main_head: str, room: int, touched: list[Path]) -> int:
    """Review proposed hypotheses through the gates, queueing accepted ones; returns the room left."""
    for path, hyp in _proposed(lab):
        if room <= 0:
            break
        rejection = gates.review_change(lab, history, hyp["change"], base=main_head, hypothesis_id=hyp["id"])
        if rejection:
            write_review(lab, path, hyp, "duplicate" if "duplicate" in rejection.rule else "rejected",
                         rejection=rejection)
            touched.append(path)
            continue
        write_review(lab, path, hyp, "accepted")
        touched += [path, _queue(lab, history, hyp, main_head)]
        room -= 1
    return room


def _queue(lab: Lab, history, hyp: dict, base: str) -> Path:
    exp_id, path = new_experiment(lab, hyp["id"], hyp["change"], base, priority=0, by="planner")
    history.add(exp_id, hyp["change"], base, "queued")
    return path


def explore(lab: Lab, history, main_head: str, room: int) -> list[Path]:
    """Perturb one declared parameter of main at a time, nearest moves first."""
    target = lab.config["target"]
    file = target["editable"][0]
    current = read_params(run_git(lab.root, "show", f"{main_head}:{file}"))
    touched = []
    for name, value in _perturbations(current, lab.params):
        if len(touched) >= 2 * room:
            break
        change = {"params": {name: value}}
        if gates.review_change(lab, history, change, base=main_head):
            continue
        hyp_id, hpath = new_hypothesis(
            lab, f"explore {name} = {value!r} (main has {current[name]!r})", change, author="planner",
            rationale="No untried ideas left: perturb one declared parameter of main at a time.",
            source={"kind": "exploration"}, status="accepted")
        touched += [hpath, _queue(lab, history, {"id": hyp_id, "change": change}, main_head)]
    return touched


def _perturbations(current: dict, specs: dict[str, dict]):
    """Candidate single-parameter moves, round-robin over parameters, small moves first; a
    declared choice list moves to its neighbours, a declared range is never left."""
    rounds: list[list[tuple[str, object]]] = [[], []]
    for name, spec in specs.items():
        value = current.get(name)
        if value is None:
            continue
        for level, pair in enumerate(_moves(value, spec)):
            rounds[level] += [(name, v) for v in pair if v != value and not gates.out_of_range(spec, v)
                              and (not isinstance(v, int) or isinstance(v, bool) or v > 0 or "low" in spec)]
    return [move for level in rounds for move in level]


def _moves(value, spec: dict) -> list[tuple]:
    """(nearest moves, farther moves) of one value."""
    if "choices" in spec:
        options = spec["choices"]
        at = options.index(value) if value in options else -1
        near = tuple(options[k] for k in (at + 1, at - 1) if 0 <= k < len(options))
        far = tuple(options[k] for k in (at + 2, at - 2) if 0 <= k < len(options))
        return [near, far]
    if isinstance(value, bool):
        return []
    if isinstance(value, float):
        return [(round(value * 1.5, 8), round(value / 1.5, 8)), (round(value * 3, 8), round(value / 3, 8))]
    if isinstance(value, int) and value > 8:      # a step count, a width: move by a factor
        return [(round(value * 1.5), round(value / 1.5)), (value * 3, value // 3)]
    if isinstance(value, int):                    # a depth, a head count: move by one
        return [(value + 1, value - 1), (value * 2, value // 2)] if value > 1 else [(value + 1,), (value + 2,)]
    return []


# -- worker -------------------------------------------------------------------
def work(lab: Lab, change: dict, worktree: Path) -> str:
    """Apply the parameter change in the worktree; returns the file edited."""
    if not change.get("params"):
        raise LabError("the builtin worker applies parameter changes only; "
                       "configure an agent worker for instructions", field="change")
    file = change.get("file") or lab.config["target"]["editable"][0]
    path = worktree / file
    path.write_text(apply_params(path.read_text(), change["params"], file))
    return file


# -- helpers --------------------------------------------------------------------
def _hypothesis_files(lab: Lab) -> list[tuple[Path, dict]]:
    """Every readable hypothesis (an unreadable one is `lab validate`'s to report)."""
    out = []
    # in the order they were written (ids made in the same second sort randomly)
    for path in sorted(lab.hypotheses.glob("*.yaml"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        try:
            data = load_yaml(path)[0]
        except LabError:
            continue
        if isinstance(data, dict):
            out.append((path, data))
    return out


def _hypotheses(lab: Lab) -> list[dict]:
    return [data for _, data in _hypothesis_files(lab)]


def _unqueued(lab: Lab) -> list[tuple[Path, dict]]:
    """Hypotheses this planner accepted while exploring whose experiment was never queued (a kill
    between the two writes): queued on the next pass, so that no accepted move is lost."""
    orphans = [(path, data) for path, data in _hypothesis_files(lab) if data.get("status") == "accepted"
               and (data.get("source") or {}).get("kind") in ("exploration", "optimizer")
               and isinstance(data.get("change"), dict)]
    if not orphans:
        return []
    from ..state.scores import scores
    made = set(scores(lab).column("hypothesis").to_pylist())
    for path in lab.queue.glob("*.yaml"):
        try:
            made.add((load_yaml(path)[0] or {}).get("hypothesis"))
        except (LabError, AttributeError):
            continue
    return [(path, data) for path, data in orphans if data.get("id") not in made]


def _proposed(lab: Lab) -> list[tuple[Path, dict]]:
    return [(path, data) for path, data in _hypothesis_files(lab)
            if data.get("status") == "proposed" and isinstance(data.get("change"), dict)]
