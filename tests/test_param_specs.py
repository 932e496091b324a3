"""Declared ranges and choices of tunable constants (target.params as a mapping): validated up
front, never left by the builtin planner's exploration, enforced by the gates."""
from __future__ import annotations

import pytest
import yaml
from conftest import _run_lab
from test_loop import toy_lab

from runner.lab import Lab
from runner.repo import gitops
from runner.roles import builtin, gates
from runner.roles.history import History


def with_params(lab: Lab, params) -> Lab:
    config = yaml.safe_load(lab.config_path.read_text())
    config["target"]["params"] = params
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.commit_paths(lab.root, ["lab.yaml"], "declare ranges")
    return Lab(lab.root)


@pytest.mark.parametrize("spec, message", [
    ({"X": {"low": 5, "high": 1}}, "low 5 is above high 1"),
    ({"X": {"low": 0, "high": 1, "log": True}}, "a log scale needs low > 0"),
    ({"MODE": {"low": 0, "high": 1}}, "a range on MODE, whose value 'ok' is not a number"),
])
def test_impossible_ranges_are_refused_naming_the_param(tmp_path, spec, message):
    lab = with_params(toy_lab(tmp_path / "lab"), spec)
    result = _run_lab("validate", cwd=lab.root)
    name = next(iter(spec))
    assert result.returncode == 1
    assert f"lab.yaml:" in result.stdout and f"target.params.{name}: {message}" in result.stdout


def test_a_spec_with_both_choices_and_a_range_is_a_schema_error(tmp_path):
    lab = with_params(toy_lab(tmp_path / "lab"), {"X": {"choices": [1, 2], "low": 0, "high": 3}})
    result = _run_lab("validate", cwd=lab.root)
    assert result.returncode == 1 and "target.params" in result.stdout


def test_exploration_moves_to_neighbouring_choices_and_stays_in_range(tmp_path):
    lab = with_params(toy_lab(tmp_path / "lab"), {"X": {"choices": [0.5, 1.0, 2.0, 4.0]},
                                                  "SLEEP": {"low": 0.0, "high": 0.001}})
    main = gitops.head(lab.root)
    builtin.explore(lab, History.load(lab), main, room=4)
    values = sorted(yaml.safe_load(p.read_text())["change"]["params"]["X"] for p in lab.queue.glob("*.yaml")
                    if "X" in yaml.safe_load(p.read_text())["change"]["params"])
    assert values == [0.5, 2.0, 4.0]                          # neighbours of 1.0 first, then one further
    for path in lab.queue.glob("*.yaml"):
        params = yaml.safe_load(path.read_text())["change"]["params"]
        assert "SLEEP" not in params or 0.0 <= params["SLEEP"] <= 0.001


def test_the_gates_refuse_a_value_outside_its_declared_range(tmp_path):
    lab = with_params(toy_lab(tmp_path / "lab"), {"X": {"low": 0.0, "high": 5.0}, "MODE": {"choices": ["ok"]}})
    history = History.load(lab)
    assert gates.review_change(lab, history, {"params": {"X": 4.0}}, base=None) is None
    high = gates.review_change(lab, history, {"params": {"X": 9.0}}, base=None)
    assert high.rule == "single-change" and "outside [0.0, 5.0]" in high.message
    odd = gates.review_change(lab, history, {"params": {"MODE": "crash"}}, base=None)
    assert odd.rule == "single-change" and "not one of ['ok']" in odd.message
