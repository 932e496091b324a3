"""objective.constraints and objective.cost: the schema's errors, a real loop that never promotes a
violating result (crafted targets: a better score but `correct: 0`, a better score for twice the
FLOPs), a base that breaks its own rule, the gates that keep a violating change from coming back,
and what `lab status`, the leaderboard and the report show."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from test_loop import finished, queue
from test_noise import script_lab

from runner.errors import LabError
from runner.lab import Lab
from runner.loop.constraints import NOT_PRINTED
from runner.loop.run import run
from runner.repo import gitops
from runner.roles import gates
from runner.roles.history import History
from runner.state.events import read_events
from runner.state.scores import scores
from runner.validation.validate import validate

# A kernel-like target: X near 3 is fastest. The crafted changes are faster for a forbidden reason:
# WRONG skips half the work (faster, `correct: 0`), WORK spends that many times the FLOPs (faster by
# as much); SILENT stops printing `correct`. COST is what `cost_s` reports.
KERNEL = textwrap.dedent('''\
    X = 1.0
    WRONG = False
    WORK = 1.0
    SILENT = False
    COST = 10.0
    latency = ((X - 3.0) ** 2 + 1.0) / WORK / (2 if WRONG else 1)
    if not SILENT:
        print(f"correct: {0 if WRONG else 1}")
    print(f"flops: {1e6 * WORK:.0f}")
    print(f"cost_s: {COST}")
    print(f"latency_us: {latency:.6f}")
''')
RULES = [{"metric": "correct", "eq": 1}, {"metric": "flops", "le_base": 1.05}]


def kernel_lab(root: Path, constraints=None, **objective) -> Lab:
    return script_lab(root, "kernel.py", KERNEL, {"metric": "latency_us", "direction": "minimize", "noise_margin": 0.01,
                      "constraints": RULES if constraints is None else constraints, **objective},
                      ["X", "WRONG", "WORK", "SILENT", "COST"])


def rows(lab: Lab) -> dict:
    return {row["id"]: row for row in scores(lab).to_pylist()}


# -- the schema -------------------------------------------------------------------------------------
def write_rules(lab, run_lab, constraints) -> str:
    config = yaml.safe_load(lab.config_path.read_text())
    config["objective"]["constraints"] = constraints
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_lab("validate", "lab.yaml", cwd=lab.root)
    assert result.returncode == 1
    return result.stdout + result.stderr


@pytest.mark.parametrize("rules, field, message", [
    ([{"metric": "correct", "le": 1, "eq": 1}], "objective.constraints[0]",
     "exactly one comparison per rule: eq, le, ge, lt, gt (a number) or le_base, ge_base (a ratio to the base's "
     "value) (given: metric, le, eq)"),
    ([{"metric": "correct"}], "objective.constraints[0]", "exactly one comparison per rule"),
    ([{"metric": "correct", "eq": 1}, {"metric": "flops", "le_base": -1}], "objective.constraints[1].le_base",
     "-1 is out of range: at most this ratio of the base's value (a ratio above 0, e.g. 1.05)"),
    ([{"metric": "flops", "ge_base": 0}], "objective.constraints[0].ge_base", "0 is out of range"),
    ([{"metric": "flops", "lte": 3}], "objective.constraints[0].lte",
     "unknown field (did you mean 'lt'? allowed: eq, ge, ge_base, gt, le, le_base, lt, metric)"),
    ([{"metric": "my flops", "le": 3}], "objective.constraints[0].metric", 
     "'my flops' is not a metric name as the target prints it"),
    ([{"le": 3}], "objective.constraints[0].metric", "required field is missing"),
])
def test_bad_constraints_are_clear_errors_naming_the_field(lab, run_lab, rules, field, message):
    out = write_rules(lab, run_lab, rules)
    assert f"lab.yaml:" in out and f"{field}: " in out and message in out, out
    with pytest.raises(LabError) as info:
        Lab(lab.root).config
    assert info.value.problem.field.startswith("objective.constraints")


def test_an_unknown_metric_passes_the_schema_and_is_checked_when_judged(tmp_path):
    lab = kernel_lab(tmp_path / "lab", constraints=[{"metric": "max_rel_err", "le": 1e-3}])
    assert validate(lab.root).ok                                # no way to know statically what it prints
    queue(lab, None, baseline=True)
    better = queue(lab, {"X": 2.5})
    run(lab, until_idle=True, plan=False, tick=0.1)
    row = rows(lab)[better]
    assert not row["promoted"] and row["constraint"] == f"max_rel_err <= 0.001: {NOT_PRINTED} (max_rel_err)"
    assert "X = 1.0" in (lab.root / "kernel.py").read_text()


# -- the loop ----------------------------------------------------------------------------------------
def test_a_better_score_that_breaks_a_rule_is_recorded_with_the_rule_and_never_promoted(tmp_path):
    lab = kernel_lab(tmp_path / "lab")
    queue(lab, None, baseline=True)                                   # latency 5.0, flops 1e6
    wrong = queue(lab, {"WRONG": True}, "skip half the work: faster but wrong")
    run(lab, until_idle=True, plan=False, tick=0.1)
    dear = queue(lab, {"WORK": 2.0}, "twice the work")
    silent = queue(lab, {"SILENT": True}, "stops checking itself")
    run(lab, until_idle=True, plan=False, tick=0.1)
    table = rows(lab)
    assert table[wrong]["value"] == table[dear]["value"] == pytest.approx(2.5)         # both twice as fast
    assert table[wrong]["constraint"] == "correct == 1: got 0" and not table[wrong]["promoted"]
    assert table[dear]["constraint"] == "flops <= 1.05 x base: got 2e+06 (2 x base)" and not table[dear]["promoted"]
    assert table[silent]["constraint"] == f"correct == 1: {NOT_PRINTED} (correct)"
    for exp in (wrong, dear, silent):
        record = finished(lab, exp)["result"]
        assert record["constraint"] == table[exp]["constraint"] and not record["promoted"]
        assert record["reason"].startswith(f"violates the constraint {table[exp]['constraint']}: never promoted")
    assert "WRONG = False" in (lab.root / "kernel.py").read_text() and "WORK = 1.0" in (lab.root / "kernel.py").read_text()
    honest = queue(lab, {"X": 2.5}, "an honest change")                 # 1.25, correct, same FLOPs
    run(lab, until_idle=True, plan=False, tick=0.1)
    assert rows(lab)[honest]["promoted"] and rows(lab)[honest]["constraint"] is None
    assert [r["id"] for r in rows(lab).values() if r["promoted"]] == [honest]
    assert validate(lab.root).ok


def test_a_base_that_breaks_a_rule_is_replaced_by_any_result_that_keeps_them(tmp_path):
    lab = kernel_lab(tmp_path / "lab")
    text = (lab.root / "kernel.py").read_text().replace("WRONG = False", "WRONG = True")
    (lab.root / "kernel.py").write_text(text)
    gitops.run_git(lab.root, "commit", "-qam", "main is incorrect")
    base = queue(lab, None, baseline=True)
    fixed = queue(lab, {"WRONG": False}, "correct again")             # correct, and twice as slow
    run(lab, until_idle=True, plan=False, tick=0.1)
    table = rows(lab)
    assert table[base]["constraint"] == "correct == 1: got 0"
    assert "main breaks the constraint correct == 1: got 0" in table[base]["reason"]
    events = read_events(lab).to_pylist()
    assert any(e["kind"] == "base-violates" and e["experiment"] == base for e in events)
    assert table[fixed]["promoted"] and table[fixed]["value"] == 2 * table[base]["value"]
    assert "keeps every constraint where its base breaks correct == 1" in table[fixed]["reason"]
    assert "WRONG = False" in (lab.root / "kernel.py").read_text()


def test_the_planner_does_not_propose_a_change_that_broke_a_rule_again(tmp_path):
    lab = kernel_lab(tmp_path / "lab")
    queue(lab, None, baseline=True)
    dear = queue(lab, {"WORK": 2.0}, "twice the work")
    run(lab, until_idle=True, plan=False, tick=0.1)
    better = queue(lab, {"X": 2.5}, "move X")                       # main moves on
    run(lab, until_idle=True, plan=False, tick=0.1)
    assert rows(lab)[better]["promoted"]
    history = History.load(lab)
    main = gitops.head(lab.root)
    for change in ({"params": {"WORK": 2.0}}, {"params": {"WORK": 2.02}}):   # the same, and within 5%
        rejection = gates.review_change(lab, history, change, base=main)
        assert rejection.rule == "broke-constraint" and rejection.collides_with == dear
        assert "broke the constraint flops <= 1.05 x base" in rejection.message
    assert gates.review_change(lab, history, {"params": {"WORK": 0.5}}, base=main) is None
    from runner.roles import builtin
    made = builtin.explore(lab, history, main, room=20)
    changes = [yaml.safe_load(p.read_text())["change"] for p in made if p.parent.name == "queue"]
    assert changes and {"params": {"WORK": 2.0}} not in changes


# -- cost and the report ---------------------------------------------------------------------------------
def test_cost_is_recorded_and_shown_by_status_and_the_leaderboard(tmp_path, run_lab):
    lab = kernel_lab(tmp_path / "lab", cost="cost_s")
    queue(lab, None, baseline=True)
    cheap = queue(lab, {"COST": 4.0}, "cheaper")
    wrong = queue(lab, {"WRONG": True}, "wrong")
    run(lab, until_idle=True, plan=False, tick=0.1)
    better = queue(lab, {"X": 2.5}, "faster")
    run(lab, until_idle=True, plan=False, tick=0.1)
    table = rows(lab)
    assert table[cheap]["cost"] == 4.0 and table[better]["cost"] == 10.0
    status = run_lab("status", cwd=lab.root)
    assert f"best on main: latency_us 1.25 ({better}, -75.00% vs first baseline, cost_s 10)" in status.stdout
    from runner.report import write_leaderboard
    board = write_leaderboard(lab).read_text()
    assert "| # | experiment | latency_us | Δ vs base | cost_s | promoted |" in board
    assert f"[{wrong}]({wrong}/experiment.yaml) | 2.5 | -2.5 | 10 | no: broke correct == 1: got 0 |" in board
    from runner.report.data import load, pareto_front
    data = load(lab, curves_top=0)
    assert next(r for r in data.rows if r["id"] == wrong)["outcome"] == "violates"
    # cheapest first; the wrong result (2.5 at cost 10) is never on the front
    assert [r["id"] for r in pareto_front(data)] == [cheap, better]
