"""`lab kernel check` on the real kernel and on deliberately broken copies (CPU only; nvcc if present)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.kernels.check import check_project
from runner.kernels.nvcc import find_nvcc

ROOT = Path(__file__).resolve().parents[1]
NAME = "qwen3-rmsnorm"
needs_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="nvcc not installed")


def lab(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from runner.cli import main; main()", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A lab in tmp_path holding a copy of the kernel, built for 9.0 only (one quick compile)."""
    shutil.copy(ROOT / "lab.yaml", tmp_path / "lab.yaml")
    dst = tmp_path / "kernels" / NAME
    shutil.copytree(ROOT / "kernels" / NAME, dst, ignore=shutil.ignore_patterns("build", "results", "__pycache__"))
    toml = dst / "build.toml"
    toml.write_text(toml.read_text().replace('["8.0", "8.9", "9.0"]', '["9.0"]'))
    return dst


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def problems(kernel: Path, compile_cuda: bool = False) -> list[str]:
    report = check_project(kernel, f"kernels/{kernel.name}", kernel.parents[1] / ".lab" / "check", compile_cuda)
    return [str(p) for p in report.problems]


def test_real_kernel_passes_and_compiles_every_listed_capability():
    proc = lab(ROOT, "kernel", "check", NAME, "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"], proc.stdout + proc.stderr
    if find_nvcc():
        assert sorted(report["compiled"]) == ["csrc/rmsnorm.cu@8.0", "csrc/rmsnorm.cu@8.9", "csrc/rmsnorm.cu@9.0"]
    else:
        assert any("nvcc not found" in s for s in report["skipped"])


def test_bad_capability_names_file_line_and_field(broken):
    edit(broken / "build.toml", '["9.0"]', '["sm90"]')
    found = problems(broken)
    line = next(i for i, t in enumerate((broken / "build.toml").read_text().splitlines(), 1) if "sm90" in t)
    assert len(found) == 1
    assert found[0].startswith(f"kernels/{NAME}/build.toml:") and "kernel.rmsnorm.cuda-capabilities[0]" in found[0]
    assert found[0].startswith(f"kernels/{NAME}/build.toml:{line}: kernel.rmsnorm.cuda-capabilities[0]: 'sm90'")


def test_unknown_field_and_dir_name_mismatch(broken):
    edit(broken / "build.toml", 'license = "Apache-2.0"', 'licence = "Apache-2.0"')
    found = problems(broken)
    assert any("general.licence: unknown field" in p for p in found), found
    edit(broken / "build.toml", 'licence = "Apache-2.0"', 'license = "Apache-2.0"')
    edit(broken / "build.toml", 'name = "qwen3-rmsnorm"', 'name = "other-name"')
    found = problems(broken)
    assert any("general.name: name 'other-name' must equal the directory name" in p for p in found), found


def test_missing_source(broken):
    (broken / "csrc" / "rmsnorm.cu").unlink()
    found = problems(broken)
    assert any(p.startswith(f"kernels/{NAME}/build.toml:") and "kernel.rmsnorm.src" in p
               and "'csrc/rmsnorm.cu' does not exist" in p for p in found), found


def test_python_calls_an_op_the_binding_does_not_define(broken):
    init = broken / "torch-ext" / "qwen3_rmsnorm" / "__init__.py"
    edit(init, "ops.rms_norm(out, x, weight, eps)", "ops.rms_norm_v2(out, x, weight, eps)")
    line = next(i for i, t in enumerate(init.read_text().splitlines(), 1) if "rms_norm_v2" in t)
    found = problems(broken)
    assert f"kernels/{NAME}/torch-ext/qwen3_rmsnorm/__init__.py:{line}: ops.rms_norm_v2: calls ops.rms_norm_v2" \
        in "\n".join(found), found


def test_binding_op_without_python_caller(broken):
    edit(broken / "torch-ext" / "torch_binding.cpp", 'ops.def("rms_norm_vpt(', 'ops.def("rms_norm_vpt2(')
    found = "\n".join(problems(broken))
    assert "torch-ext/torch_binding.cpp:" in found and "op 'rms_norm_vpt2' is registered but" in found
    assert "op 'rms_norm_vpt2' is defined without an implementation" in found


@needs_nvcc
def test_cuda_syntax_error_is_reported_with_file_and_line(broken):
    cu = broken / "csrc" / "rmsnorm.cu"
    edit(cu, "constexpr int kWarpBlock = 256;", "constexpr int kWarpBlock = ;")
    line = next(i for i, t in enumerate(cu.read_text().splitlines(), 1) if "kWarpBlock = ;" in t)
    proc = lab(broken.parents[1], "kernel", "check", NAME)
    assert proc.returncode == 1
    assert f"kernels/{NAME}/csrc/rmsnorm.cu:{line}: kernel.rmsnorm.src: nvcc (sm_90): " \
        in proc.stdout, proc.stdout + proc.stderr       # nvcc's own words follow; ours are the location


def test_malformed_toml_is_one_line_error(broken):
    (broken / "build.toml").write_text("[general\nname = 1\n")
    proc = lab(broken.parents[1], "kernel", "check", NAME)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: kernels/{NAME}/build.toml:1: -: malformed TOML")


def test_not_a_kernel_project(tmp_path):
    shutil.copy(ROOT / "lab.yaml", tmp_path / "lab.yaml")
    proc = lab(tmp_path, "kernel", "check", "nothing-here")
    assert proc.returncode == 2 and "no build.toml" in proc.stderr
