"""runner.state.params: reading and editing top-level constants with ast."""
from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import LabError
from runner.state.params import apply_params, read_params

ROOT = Path(__file__).resolve().parent.parent

SOURCE = '''"""A script."""
import os

LR = 1e-3  # peak learning rate
STEPS: int = 300
NAME = "gelu"   # activation
SINGLE = 'x'
NEG = -2
FLAG = True
NOTHING = None
DERIVED = LR * 2
TWICE = 1
TWICE = 2
A, B = 1, 2
LONG = (
    0.5
)
TITLE = "café"; AFTER = 3


def main():
    LOCAL = 5
    return LOCAL
'''


def test_read_params_returns_literal_top_level_constants_only():
    params = read_params(SOURCE)
    assert params == {"LR": 0.001, "STEPS": 300, "NAME": "gelu", "SINGLE": "x", "NEG": -2, "FLAG": True,
                      "NOTHING": None, "LONG": 0.5, "TITLE": "café", "AFTER": 3}


def test_apply_changes_only_the_value_and_keeps_comments():
    new = apply_params(SOURCE, {"LR": 3e-3, "NAME": "swiglu", "STEPS": 200}, "t.py")
    old_lines, new_lines = SOURCE.splitlines(), new.splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
    assert changed == [("LR = 1e-3  # peak learning rate", "LR = 0.003  # peak learning rate"),
                       ("STEPS: int = 300", "STEPS: int = 200"),
                       ('NAME = "gelu"   # activation', 'NAME = "swiglu"   # activation')]
    assert read_params(new)["LR"] == 0.003


def test_apply_round_trips_every_kind_of_value():
    params = {"SINGLE": "it's", "NEG": 7, "FLAG": False, "NOTHING": 4, "LONG": 2, "AFTER": -1, "TITLE": "naïve"}
    new = apply_params(SOURCE, params, "t.py")
    expected = dict(params, LONG=2.0)  # int into a float constant stays a float
    assert {k: read_params(new)[k] for k in params} == expected
    assert isinstance(read_params(new)["LONG"], float)
    assert 'TITLE = "naïve"; AFTER = -1' in new  # byte offsets after a non-ASCII char on one line


def test_apply_preserves_crlf_line_endings_and_other_bytes():
    text = SOURCE.replace("\n", "\r\n")
    new = apply_params(text, {"NEG": 9}, "t.py")
    assert new == text.replace("NEG = -2", "NEG = 9")


def test_integral_float_into_int_is_accepted_as_int():
    new = apply_params(SOURCE, {"STEPS": 150.0}, "t.py")
    assert "STEPS: int = 150\n" in new


def test_empty_params_change_nothing():
    assert apply_params(SOURCE, {}, "t.py") == SOURCE


@pytest.mark.parametrize("params, message", [
    ({"MISSING": 1}, "MISSING is not a top-level constant"),
    ({"LOCAL": 1}, "LOCAL is not a top-level constant"),
    ({"DERIVED": 1.0}, "DERIVED is not a literal constant (line 11)"),
    ({"A": 3}, "A is not a literal constant"),
    ({"TWICE": 3}, "TWICE is assigned more than once"),
    ({"STEPS": "many"}, "STEPS is a int (300); refusing str 'many'"),
    ({"NAME": 3}, "NAME is a str ('gelu'); refusing int 3"),
    ({"FLAG": 1}, "FLAG is a bool (True); refusing int 1"),
    ({"STEPS": True}, "STEPS is a int (300); refusing bool True"),
    ({"STEPS": 2.5}, "non-integral 2.5"),
    ({"LR": None}, "refusing NoneType None"),
    ({"LR": float("nan")}, "not a finite number"),
    ({"LR": [1, 2]}, "must be a number, string, bool or null"),
])
def test_bad_edits_raise_a_lab_error_naming_file_and_param(params, message):
    with pytest.raises(LabError) as info:
        apply_params(SOURCE, params, "lab/train.py")
    name = next(iter(params))
    assert message in str(info.value)
    assert info.value.problem.path == "lab/train.py"
    assert info.value.problem.field == f"params.{name}"


def test_unparsable_file_is_a_lab_error_with_its_line():
    with pytest.raises(LabError) as info:
        read_params("X = 1\nY = (\n", "broken.py")
    assert info.value.problem.path == "broken.py"
    assert "not valid Python" in str(info.value)


def test_every_declared_param_of_the_embedded_target_is_editable():
    text = (ROOT / "train.py").read_text()
    params = read_params(text, "train.py")
    declared = ["LEARNING_RATE", "WARMUP_STEPS", "LR_SCHEDULE", "WEIGHT_DECAY", "BATCH_SIZE", "N_LAYER",
                "N_EMBD", "N_HEAD", "DROPOUT", "ACTIVATION", "NORM", "GRAD_CLIP", "BETA1", "BETA2", "SEED",
                "FLOP_BUDGET"]
    assert set(declared) <= set(params)
    for name in declared:
        value = params[name]
        if isinstance(value, (str, bool)):
            new_value = value + "x" if isinstance(value, str) else not value
        else:
            new_value = value * 2 or 1
        new = apply_params(text, {name: new_value}, "train.py")
        assert read_params(new)[name] == new_value
        diff = [line for line in new.splitlines() if line not in text.splitlines()]
        assert len(diff) == 1 and diff[0].startswith(f"{name} = ")
