"""Summary lines and metric streams: the rule that decides which number counts."""
from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.files.metrics import (
    is_finite,
    loss_name,
    metrics_rows,
    objective,
    parse_summary,
    read_log,
    read_stream,
    summary_line,
)
from runner.files.tables import METRICS, read_table, write_table


@pytest.mark.parametrize("line, expected", [
    ("val_bpb: 0.997900", ("val_bpb", 0.9979)),
    ("val_bpb:          0.997900", ("val_bpb", 0.9979)),
    ("  train/loss : -3.5e-4  ", ("train/loss", -3.5e-4)),
    ("peak_vram_mb: 12", ("peak_vram_mb", 12.0)),
    ("mfu.percent: .5", ("mfu.percent", 0.5)),
    ("val_bpb: NaN", ("val_bpb", math.nan)),
    ("val_bpb: -inf", ("val_bpb", -math.inf)),
    ("val_bpb: Infinity", ("val_bpb", math.inf)),
    ("val_bpb: 0.99 (best)", None),
    ("step 10: 0.5", None),
    ("val_bpb = 0.99", None),
    ("val_bpb: 0x10", None),
    ("val_bpb: 1_000", None),
    ("val_bpb:", None),
    ("9lives: 1", None),
    ("Epoch 1/3: 0.5", None),
    ("", None),
])
def test_summary_line_shape(line, expected):
    got = summary_line(line)
    if expected is None or not math.isnan(expected[1]):
        assert got == expected
    else:
        assert got[0] == expected[0] and math.isnan(got[1])


def test_final_block_wins_over_an_early_fake_value():
    text = "val_bpb: 0.001\nstep 1 loss 3.2\nstep 2 loss 3.0\n---\nval_bpb: 1.04\ntraining_seconds: 20.1\n\n\n"
    assert parse_summary(text) == {"val_bpb": 1.04, "training_seconds": 20.1}


def test_names_only_before_the_final_block_do_not_count():
    """A fake early value cannot stand in for a metric missing from the final block."""
    text = "val_bpb: 0.001\ntraining...\ntraining_seconds: 20.1\nnum_params: 1000\n"
    assert parse_summary(text) == {"training_seconds": 20.1, "num_params": 1000.0}


def test_blank_lines_inside_the_final_block_do_not_break_it():
    assert parse_summary("noise\nval_bpb: 1.1\n\nnum_steps: 300\n") == {"val_bpb": 1.1, "num_steps": 300.0}


def test_repeated_name_in_the_block_keeps_the_last_value():
    assert parse_summary("x\nval_bpb: 1.2\nval_bpb: 1.1\n") == {"val_bpb": 1.1}


def test_output_ending_in_a_traceback_falls_back_to_last_occurrences():
    text = ("val_bpb: 0.5\nloss: 3.0\nval_bpb: 0.9\nloss: 2.0\nTraceback (most recent call last):\n"
            '  File "train.py", line 3, in <module>\nRuntimeError: CUDA out of memory\n')
    assert parse_summary(text) == {"val_bpb": 0.9, "loss": 2.0}


def test_warning_after_the_summary_falls_back_to_last_occurrences():
    text = "val_bpb: 0.2\nstep\nval_bpb: 1.01\nepochs: 3\nUserWarning: resource_tracker: leaked semaphore\n"
    assert parse_summary(text) == {"val_bpb": 1.01, "epochs": 3.0}


def test_stderr_line_inside_the_final_block_drops_the_names_above_it():
    """Documented sharp edge: a missing number, never a wrong one."""
    text = "val_bpb: 1.01\nwarning: slow\nepochs: 3\n"
    assert parse_summary(text) == {"epochs": 3.0}


def test_carriage_return_progress_bars_are_line_breaks():
    text = "train 10%\rtrain 50%\rtrain 100%\r\nval_bpb: 1.5\r\nsteps: 10\r"
    assert parse_summary(text) == {"val_bpb": 1.5, "steps": 10.0}


def test_nothing_printed():
    assert parse_summary("") == {}
    assert parse_summary("\n\n  \n") == {}
    assert parse_summary("hello\nworld\n") == {}


def test_objective_missing_nan_and_inf():
    summary = parse_summary("val_bpb: nan\nloss: inf\n")
    assert objective(summary, "val_bpb") != objective(summary, "val_bpb")     # NaN kept
    assert objective(summary, "loss") == math.inf and not is_finite(objective(summary, "loss"))
    assert objective(summary, "accuracy") is None and not is_finite(None)
    assert is_finite(objective({"val_bpb": 1.0}, "val_bpb"))


def test_read_stream_skips_bad_lines_and_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 0, "loss": 3.0}\nnot json\n[1, 2]\n\xff\xfe\n'
                     b'{"step": 1, "loss": NaN}\n{"step": 2, "lo')
    records = read_stream(path)
    assert [r["step"] for r in records] == [0, 1] and math.isnan(records[1]["loss"])
    assert read_stream(tmp_path / "absent.jsonl") == []


def test_read_stream_reads_at_most_max_bytes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in range(100)))
    line_len = len(json.dumps({"step": 0, "loss": 1.0})) + 1
    assert len(read_stream(path, max_bytes=10 * line_len + 5)) == 10


def test_read_log_keeps_the_tail_of_a_large_log(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"noise line\n" * 1000 + b"caf\xc3\xa9 \xff\nval_bpb: 1.5\n")
    assert parse_summary(read_log(path, max_bytes=200)) == {"val_bpb": 1.5}
    tail = read_log(path, max_bytes=200)
    assert tail.startswith("noise line\n") and "caf\u00e9 \ufffd" in tail
    assert read_log(tmp_path / "absent") == ""


def test_metrics_rows_round_trip_through_parquet(tmp_path):
    stream = [{"step": 0, "time_s": 0.5, "loss": 3.0, "lr": 1e-3, "note": "warmup", "done": False},
              {"step": 1, "time_s": 1.0, "loss": float("nan"), "train": {"grad_norm": 2}},
              {"loss": 2.5, "step": 2.0},
              {"step": "x", "time_s": None, "tokens": 10 ** 400}]
    rows = metrics_rows(stream, {"val_bpb": 1.04, "steps": 3.0})
    assert [(r["step"], r["name"], r["summary"]) for r in rows] == [
        (0, "loss", False), (0, "lr", False), (1, "loss", False), (1, "train/grad_norm", False),
        (2, "loss", False), (None, "tokens", False), (None, "val_bpb", True), (None, "steps", True)]
    path = tmp_path / "metrics.parquet"
    write_table(path, pa.Table.from_pylist(rows, schema=METRICS))
    back = read_table(path, METRICS).to_pylist()
    assert pq.read_schema(path).equals(METRICS)
    assert math.isnan(back[2]["value"]) and back[5]["value"] == math.inf
    assert back[6] == {"step": None, "time_s": None, "name": "val_bpb", "value": 1.04, "summary": True}
    assert back[0]["time_s"] == 0.5


def test_summary_keeps_the_order_of_last_appearance():
    summary = parse_summary("a: 1\nb: 2\na: 3\ndone\n")
    assert list(summary.items()) == [("b", 2.0), ("a", 3.0)]


def test_read_log_of_a_small_log_is_the_whole_log(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"val_bpb: 1.5\n")
    assert read_log(path) == "val_bpb: 1.5\n"
    assert read_log(path, max_bytes=13) == "val_bpb: 1.5\n"       # exactly at the limit: nothing dropped
    assert read_log(path, max_bytes=12) == ""                     # over it: the partial first line goes


def test_read_log_drops_only_the_partial_first_line(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"aaaa\nbbbb\ncccc\n")
    assert read_log(path, max_bytes=12) == "bbbb\ncccc\n"
    assert read_log(path, max_bytes=10) == "cccc\n"


@pytest.mark.parametrize("step, expected", [
    (2 ** 63 - 1, 2 ** 63 - 1), (2 ** 63, None), (-(2 ** 63), -(2 ** 63)), (-(2 ** 63) - 1, None),
    (2.0 ** 62, 2 ** 62), (2.0 ** 63, None), (-(2.0 ** 63), None), (3.0, 3), (3.5, None), (True, None),
])
def test_steps_outside_int64_are_dropped(step, expected):
    [row] = metrics_rows([{"step": step, "loss": 1.0}], {})
    assert row["step"] == expected and type(row["step"]) is type(expected)


def test_integers_too_large_for_a_double_are_signed_infinities():
    rows = metrics_rows([{"up": 10 ** 400, "down": -(10 ** 400), "small": 7}], {})
    assert [(r["name"], r["value"]) for r in rows] == [("up", math.inf), ("down", -math.inf), ("small", 7.0)]


def test_summary_rows_have_every_metrics_column():
    assert metrics_rows([], {"val_bpb": 1.0}) == [
        {"step": None, "time_s": None, "name": "val_bpb", "value": 1.0, "summary": True}]


@pytest.mark.parametrize("names, expected", [
    (["val_bpb", "loss", "train_loss"], "train_loss"), (iter(["loss", "val_loss"]), "loss"),
    (["val_loss", "aux_loss", "lr"], "aux_loss"), (["lr", "val_bpb"], None), ([], None),
    (["Loss", "LOSS"], None),
])
def test_loss_name_prefers_train_loss_then_loss_then_the_first_lossy_name(names, expected):
    assert loss_name(names) == expected
