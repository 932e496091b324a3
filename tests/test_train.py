"""train.py, the embedded default target, run end to end in real subprocesses with a tiny budget."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.state.params import apply_params

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "train.py"


def run_train(tmp_path: Path, cache: Path, script: Path = TRAIN, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, LAB_CACHE=str(cache), OMP_NUM_THREADS="1", LAB_MAX_STEPS="3",
                    CUDA_VISIBLE_DEVICES="")
    full_env.pop("LAB_METRICS", None)
    full_env.update(env)
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=full_env, capture_output=True,
                          text=True, timeout=300)


def summary(stdout: str) -> dict[str, float]:
    lines = [line.partition(": ") for line in stdout.splitlines()]
    return {name: float(value) for name, sep, value in lines if sep}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_runs_end_to_end_and_prints_a_parseable_summary(tmp_path, cache):
    metrics = tmp_path / "metrics.jsonl"
    proc = run_train(tmp_path, cache, LAB_METRICS=str(metrics), LAB_SEED="7")
    assert proc.returncode == 0, proc.stderr
    found = summary(proc.stdout)
    assert {"val_bpb", "test_bpb", "train_loss", "steps", "tokens_per_s", "params", "train_flops", "seconds",
            "peak_mem_mb"} <= set(found)
    assert found["steps"] == 3 and found["flop_budget_used"] == 1.0
    # three steps of a randomly initialised byte model: near log2(256) = 8 bits, far from a trained one
    assert 5.0 < found["val_bpb"] < 9.0 and 5.0 < found["test_bpb"] < 9.0
    assert found["test_bpb"] != found["val_bpb"]          # another split, not the validation figure twice
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all(set(row) == {"step", "time_s", "train_loss", "lr"} for row in rows)
    assert all(math.isfinite(row["train_loss"]) and row["lr"] > 0 for row in rows)


def test_corpus_is_cached_and_the_same_seed_reproduces_the_result(tmp_path, cache):
    first = run_train(tmp_path, cache, LAB_SEED="11")
    files = sorted(p.name for p in cache.iterdir())
    assert [name.rsplit(".", 1)[1] for name in files] == ["test", "train", "val"]
    second = run_train(tmp_path, cache, LAB_SEED="11")
    other = run_train(tmp_path, cache, LAB_SEED="12")
    assert sorted(p.name for p in cache.iterdir()) == files  # no rebuild, no temp files left behind
    assert summary(first.stdout)["val_bpb"] == summary(second.stdout)["val_bpb"]
    assert summary(first.stdout)["val_bpb"] != summary(other.stdout)["val_bpb"]
    sizes = {name.rsplit(".", 1)[1]: (cache / name).stat().st_size for name in files}
    assert sizes["train"] > 500_000 and sizes["val"] > 50_000 and sizes["test"] > 50_000


def test_time_budget_caps_the_number_of_steps(tmp_path, cache):
    proc = run_train(tmp_path, cache, LAB_MAX_STEPS="100000", LAB_TIME_BUDGET="1.5")
    assert proc.returncode == 0, proc.stderr
    found = summary(proc.stdout)
    assert 1 <= found["steps"] < 100000
    assert found["seconds"] < 60
    assert found["flop_budget_used"] == pytest.approx(found["steps"] / 100000, abs=1e-4)


@pytest.mark.parametrize("config", ["lab.yaml", "runner/templates/lab-tiny-gpt.yaml"])
def test_the_labs_constraints_refuse_a_run_the_time_cap_cut_short(config):
    """A loaded machine can make TIME_BUDGET_S bind; such a run trained on fewer FLOPs than its
    budget and must be neither promoted nor a base, even though it prints fewer train_flops."""
    import yaml

    from runner.loop import constraints

    text = (ROOT / config).read_text().replace("{{", "{").replace("}}", "}")
    rules = constraints.rules(yaml.safe_load(text)["objective"])
    full = {"train_flops": 5.7e11, "flop_budget_used": 1.0}
    cut = {"train_flops": 1.6e11, "flop_budget_used": 0.28}
    assert constraints.broken(rules, full, full) is None
    assert "flop_budget_used >= 0.99" in constraints.broken(rules, cut, full)
    assert constraints.broken(constraints.absolute(rules), cut) is not None   # a cut base is replaced


def test_a_diverging_run_prints_nan_and_exits_non_zero(tmp_path, cache):
    script = tmp_path / "train.py"
    script.write_text(apply_params(TRAIN.read_text(), {"LEARNING_RATE": 1e30, "GRAD_CLIP": 0.0}, "train.py"))
    proc = run_train(tmp_path, cache, script, LAB_MAX_STEPS="20")
    assert proc.returncode != 0
    assert proc.stdout.splitlines()[-1] == "val_bpb: nan"


@pytest.mark.parametrize("params", [
    {"ACTIVATION": "swiglu", "NORM": "rmsnorm", "POS_ENCODING": "rope"},
    {"ACTIVATION": "relu2", "LR_SCHEDULE": "linear", "TIE_EMBEDDINGS": False, "DROPOUT": 0.1},
    {"LR_SCHEDULE": "constant", "LABEL_SMOOTHING": 0.1, "GRAD_CLIP": 0.0},
])
def test_every_option_of_the_string_params_runs(tmp_path, cache, params):
    script = tmp_path / "train.py"
    script.write_text(apply_params(TRAIN.read_text(), params, "train.py"))
    proc = run_train(tmp_path, cache, script)
    assert proc.returncode == 0, proc.stderr
    assert math.isfinite(summary(proc.stdout)["val_bpb"])


def _module(params: dict):
    import types
    module = types.ModuleType("train_variant")
    exec(compile(apply_params(TRAIN.read_text(), params, "train.py"), "train.py", "exec"), module.__dict__)
    return module


def test_the_flop_budget_gives_a_dearer_step_fewer_steps():
    pytest.importorskip("torch")
    base = _module({})
    steps = base.budget_steps(base.GPT(), "cpu")
    assert 1400 <= steps <= 1600                                    # the documented ~1500 steps
    double = _module({"BATCH_SIZE": 16})
    assert double.budget_steps(double.GPT(), "cpu") in (steps // 2, steps // 2 - 1)
    deeper = _module({"N_LAYER": 3})
    assert deeper.budget_steps(deeper.GPT(), "cpu") < 0.7 * steps
    swiglu = _module({"ACTIVATION": "swiglu"})            # about the same parameter count: about the same steps
    assert abs(swiglu.budget_steps(swiglu.GPT(), "cpu") - steps) <= 0.01 * steps
    # every budgeted run spends at most the budget and less than one step under it
    for module in (base, double, deeper, swiglu):
        model = module.GPT()
        step = module.flops_per_token(model) * module.BATCH_SIZE * module.BLOCK_SIZE
        assert module.FLOP_BUDGET - step < module.budget_steps(model, "cpu") * step <= module.FLOP_BUDGET


def test_train_flops_is_printed_and_counts_the_steps_run(tmp_path, cache):
    proc = run_train(tmp_path, cache, LAB_MAX_STEPS="3")
    assert proc.returncode == 0, proc.stderr
    found = summary(proc.stdout)
    base = _module({})
    model = base.GPT()
    assert found["train_flops"] == 3 * base.flops_per_token(model) * base.BATCH_SIZE * base.BLOCK_SIZE
