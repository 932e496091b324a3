"""GPU tests of the kernel tooling: build + the kernel's own tests, the Hub layout loaded by the
real `kernels` library, and the transformers module swap. Skipped without a CUDA device.

Each step runs in a child process, as a user would run it: a process may load one copy of a
kernel's op library only (a second copy of the same ops namespace is refused by torch).
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
NAME = "qwen3-rmsnorm"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from runner.cli import main; main()", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def python(code: str, pythonpath: str = "") -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(
        p for p in (pythonpath, str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def packaged() -> dict:
    return json.loads(lab("kernel", "package", NAME, "--json").stdout)


def test_kernel_tests_pass_on_this_gpu():
    proc = lab("kernel", "test", NAME, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


def test_package_layout_and_metadata(packaged):
    variant = ROOT / packaged["path"]
    major, minor = torch.__version__.split(".")[:2]
    assert variant.name.startswith(f"torch{major}{minor.split('+')[0]}-cxx11-cu")
    meta = json.loads((variant / "metadata.json").read_text())
    assert meta["name"] == NAME and meta["backend"]["type"] == "cuda" and "9.0" in meta["backend"]["archs"]
    assert (variant / "__init__.py").is_file() and (variant / "_ops.py").is_file()
    assert list(variant.glob("_qwen3_rmsnorm_*.so"))


def test_kernels_library_loads_the_package_and_matches_reference(packaged):
    pytest.importorskip("kernels", reason="the Hugging Face `kernels` library is not installed")
    out = python(f"""
        from pathlib import Path
        import torch
        from kernels import get_local_kernel
        k = get_local_kernel(Path({str(ROOT / "kernels" / NAME)!r}))
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(33, 4096, device="cuda", generator=g).bfloat16()
        w = (1 + 0.2 * torch.randn(4096, device="cuda", generator=g)).bfloat16()
        h = x.double()
        ref = ((h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16().double() * w.double()).bfloat16()
        y = k.rms_norm(x, w, 1e-6)
        print("maxdiff", (y.double() - ref.double()).abs().max().item(), "module", k.__name__)
    """)
    maxdiff = float(out.split()[1])
    assert maxdiff < 0.07, out  # bf16 outputs of magnitude <= ~4: within two ulps


def test_module_swap_keeps_a_qwen3_model_s_outputs(packaged):
    pytest.importorskip("transformers")
    out = python("""
        import torch, qwen3_rmsnorm
        from transformers import Qwen3Config, Qwen3ForCausalLM
        import sys; sys.path.insert(0, "kernels/qwen3-rmsnorm/benchmarks")  # the kernel's own swap helper
        from swap import swap_rmsnorm, unswap_rmsnorm
        torch.manual_seed(0)
        cfg = Qwen3Config(vocab_size=1000, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                          num_attention_heads=8, num_key_value_heads=4, head_dim=128)
        model = Qwen3ForCausalLM(cfg).cuda().bfloat16().eval()
        for m in model.modules():
            if type(m).__name__ == "Qwen3RMSNorm":
                m.weight.data.normal_(1.0, 0.1)
        ids = torch.randint(0, 1000, (2, 40), device="cuda")
        with torch.no_grad():
            base = model(ids).logits.float()
            n = swap_rmsnorm(model, qwen3_rmsnorm)
            swapped = model(ids).logits.float()
            restored = unswap_rmsnorm(model)
            again = model(ids).logits.float()
        rel = ((swapped - base).norm() / base.norm()).item()
        print(n, restored, rel, torch.equal(again, base))
    """, pythonpath=str(ROOT / ".lab" / "build" / NAME / packaged["variant"]))
    swapped, restored, rel, same = out.split()
    assert int(swapped) == 2 * 4 + 1 and int(restored) == int(swapped)  # 4 norms per layer + final
    assert float(rel) < 2e-2 and same == "True"
