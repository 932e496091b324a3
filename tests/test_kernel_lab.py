"""The kernel lab template (CPU): it scaffolds a lab around kernels/qwen3-rmsnorm that validates and
compiles, and its target's rules hold: a latency only when every output matches the float64
reference. The GPU run itself is `lab demo --template kernel` on a GPU machine."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import _run_lab

from runner.kernels.nvcc import find_nvcc
from runner.lab import Lab
from runner.scaffold import init_lab

torch = pytest.importorskip("torch")
TARGET = Path(__file__).resolve().parents[1] / "kernels" / "qwen3-rmsnorm" / "benchmarks" / "lab_target.py"


def target_module():
    spec = importlib.util.spec_from_file_location("lab_target", TARGET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class FakeTiming:
    us_median: float


class CountingTimer:
    """Stands in for the GPU harness on a CPU: runs each call once; the op 'takes' 2 µs, a copy
    1 µs per 10k elements it wrote (so vs_copy is known and shows the bytes the copy moved)."""
    def time_many(self, fns, use_graph, rounds):
        fns["op"]()
        return {"op": FakeTiming(2.0), "copy": FakeTiming(fns["copy"]().numel() / 1e4)}


def right_ops(target):
    def norm(t):
        return target.reference(torch, "rms_norm", t).to(torch.bfloat16)

    def fused(t):
        out = target.reference(torch, "fused_add_rms_norm", t).to(torch.bfloat16)
        t["r"].add_(t["x"])
        return out
    return {"rms_norm": norm, "fused_add_rms_norm": fused}


def test_the_template_scaffolds_a_lab_that_validates_and_declares_every_tuning_constant(tmp_path):
    lab = Lab(init_lab(tmp_path / "lab", template="kernel"))
    assert (lab.root / "kernels/qwen3-rmsnorm/build.toml").is_file()
    assert not (lab.root / "kernels/qwen3-rmsnorm/results").exists()          # a new lab measures its own
    result = _run_lab("validate", cwd=lab.root)
    assert result.returncode == 0 and "warning" not in result.stdout, result.stdout
    config = yaml.safe_load(lab.config_path.read_text())
    assert config["objective"]["metric"] == "vs_copy" and config["backends"]["local"]["kind"] == "gpu"
    # GPU timings vary more between runs than a few runs show: every winner within 5 stdevs is
    # re-run, and only an output that is right can win
    objective = config["objective"]
    assert objective["direction"] == "maximize" and objective["confirm_below"] == 5
    assert objective["false_promotion_rate"] == 0.05 and {"metric": "correct", "eq": 1} in objective["constraints"]
    assert "kernels/qwen3-rmsnorm/tests/" in config["target"]["protected"]
    assert "kernels/qwen3-rmsnorm/benchmarks/" in config["target"]["protected"]
    tuning = (lab.root / "kernels/qwen3-rmsnorm/torch-ext/qwen3_rmsnorm/tuning.py").read_text()
    assert all(f"{name} = 0" in tuning for name in lab.params), "the table starts at the built-in choice"


@pytest.mark.skipif(find_nvcc() is None, reason="nvcc is not installed (CI installs it)")
def test_lab_kernel_check_passes_on_the_template(tmp_path):
    lab = Lab(init_lab(tmp_path / "lab", template="kernel"))
    result = _run_lab("kernel", "check", "qwen3-rmsnorm", cwd=lab.root, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_target_prints_a_latency_only_when_every_output_is_right(monkeypatch):
    target = target_module()
    monkeypatch.setenv("LAB_KERNEL_SIZES", "1,16")
    lines = target.run(torch, right_ops(target), torch.device("cpu"), CountingTimer(), seed=3)
    values = dict(line.split(": ") for line in lines)
    assert values["correct"] == "1" and float(values["max_rel_err"]) < target.TOLERANCE
    assert set(values) >= {"rms_norm_1_us", "rms_norm_16_us", "fused_add_rms_norm_16_us", "vs_copy", "latency_us"}
    assert float(values["latency_us"]) == pytest.approx(2.0)
    # the copy moves the op's bytes: x's for rms_norm, twice x's for fused (x and residual in, two out)
    copies = [4096 / 1e4 / 2, 16 * 4096 / 1e4 / 2, 2 * 4096 / 1e4 / 2, 2 * 16 * 4096 / 1e4 / 2]
    assert float(values["vs_copy"]) == pytest.approx(math.prod(copies) ** 0.25, abs=1e-4)

    wrong = right_ops(target)
    wrong["fused_add_rms_norm"] = lambda t: t["x"] * 1.5              # forgot the residual and the norm
    lines = target.run(torch, wrong, torch.device("cpu"), CountingTimer(), seed=3)
    values = dict(line.split(": ") for line in lines)
    assert values["correct"] == "0" and float(values["max_rel_err"]) > target.TOLERANCE
    assert "latency_us" not in values and not any(k.endswith("_us") for k in values)


def test_a_nan_output_is_never_correct(monkeypatch):
    target = target_module()
    monkeypatch.setenv("LAB_KERNEL_SIZES", "16")
    nan = right_ops(target)
    nan["rms_norm"] = lambda t: torch.full_like(t["x"], float("nan"))
    values = dict(line.split(": ") for line in target.run(torch, nan, torch.device("cpu"), CountingTimer(), 1))
    assert values["correct"] == "0" and "latency_us" not in values


def test_lab_noise_measures_each_size_only_from_runs_that_left_it_alone(tmp_path):
    """Runs that changed NORM_1 must not count towards rms_norm at 1 token; the objective's spread
    compares each run with the others over the sizes it kept."""
    noise = Path(__file__).resolve().parents[1] / "kernels" / "qwen3-rmsnorm" / "benchmarks" / "lab_noise.py"
    norm_1 = [10.0, 11.0, 12.0, 1.0]          # the last run changed NORM_1: its 1.0 is not noise
    for i, us in enumerate(norm_1):
        doc = {"id": f"e{i}", "status": "finished", "change": {"params": {"NORM_1": 4}} if i == 3 else {},
               "result": {"metrics": {"correct": 1, "rms_norm_1_us": us, "rms_norm_1_copy_us": us / 2,
                                      "fused_add_rms_norm_1_us": 20.0, "fused_add_rms_norm_1_copy_us": 10.0}}}
        (tmp_path / "experiments" / f"e{i}").mkdir(parents=True)
        (tmp_path / "experiments" / f"e{i}" / "experiment.yaml").write_text(yaml.safe_dump(doc))
    done = subprocess.run([sys.executable, str(noise), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    row = next(line.split() for line in done.stdout.splitlines() if line.startswith("rms_norm "))
    assert row[2:5] == ["3", "11.000", "9.09%"]          # runs 0-2 only: sd 1 over mean 11
    vs_copy = next(line.split() for line in done.stdout.splitlines() if line.strip().startswith("vs_copy"))
    assert vs_copy[1:4] == ["0.5000", "sd", "0.0000"]    # copy/op is steady even where the µs are not


def test_the_kernel_demo_measures_more_baselines_than_a_cpu_demo():
    from runner.demo import baseline_seeds

    assert baseline_seeds("kernel", 2) == 8 and baseline_seeds("tiny-gpt", 2) == 4
    assert baseline_seeds("finetune", 6) == 6            # never fewer than one per slot

