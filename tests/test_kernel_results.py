"""Results Parquet, CARD.md table regeneration and the kernel's module swap (CPU only)."""
import os
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runner.kernels.card import BEGIN, END, results_markdown, update_card
from runner.kernels.results import gpu_slug, read_results, write_results

ROOT = Path(__file__).resolve().parents[1]
SWAP = ROOT / "kernels" / "qwen3-rmsnorm" / "benchmarks" / "swap.py"


def _swap_module():
    """The kernel's own swap helper, loaded from its directory (model-specific code lives there)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("qwen3_swap", SWAP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(impl, tokens, us, op="rms_norm"):
    nbytes = 2 * tokens * 4096 * 2
    return {"gpu": "NVIDIA H200", "op": op, "impl": impl, "dtype": "bfloat16", "tokens": tokens, "hidden": 4096,
            "us_median": us, "bytes": nbytes, "tb_s": nbytes / us / 1e6, "copy_tb_s": 4.0, "ok": True}


def test_results_round_trip_and_card_table(tmp_path):
    rows = [row("qwen3_rmsnorm", 8192, 40.0), row("liger", 8192, 38.0), row("eager", 8192, 400.0),
            row("qwen3_rmsnorm", 1, 5.0), row("liger", 1, 6.0)]
    path = tmp_path / "results" / f"{gpu_slug('NVIDIA H200')}.parquet"
    write_results(path, rows)
    assert path.name == "nvidia-h200.parquet"
    back = read_results(path)
    assert [r["us_median"] for r in back] == [40.0, 38.0, 400.0, 5.0, 6.0]
    assert {"gpu", "op", "impl", "dtype", "tokens", "hidden", "us_median", "tb_s", "copy_tb_s"} <= set(
        pq.read_schema(path).names)
    table = results_markdown(back, "qwen3_rmsnorm", ["eager", "liger"])
    assert "| 8192 | 40.0 | 3.36 | 84% | 400 | 38.0 | 0.95x |" in table
    assert "| 1 | 5.0 | 0.00 | 0% | - | 6.0 | 1.20x |" in table
    card = tmp_path / "CARD.md"
    card.write_text(f"# k\n\n{BEGIN}\nold\n{END}\n\ntail\n")
    assert update_card(card, table)
    text = card.read_text()
    assert "old" not in text and "0.95x" in text and text.endswith("tail\n")
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not update_card(plain, table)


def test_committed_results_have_the_required_columns_and_all_sizes():
    files = sorted((ROOT / "kernels" / "qwen3-rmsnorm" / "results").glob("*.parquet"))
    assert files, "no committed benchmark results"
    rows = read_results(files[0])
    for op in ("rms_norm", "fused_add_rms_norm"):
        for impl in ("qwen3_rmsnorm", "eager", "compile", "F.rms_norm", "liger"):
            tokens = {r["tokens"] for r in rows if r["op"] == op and r["impl"] == impl}
            assert tokens == {1, 16, 128, 512, 2048, 8192, 32768}, (op, impl, tokens)
    assert all(r["us_median"] > 0 and r["copy_tb_s"] > 1 for r in rows)


def test_swap_rebinds_forward_and_unswap_restores():
    swap = _swap_module()
    swap_rmsnorm, unswap_rmsnorm = swap.swap_rmsnorm, swap.unswap_rmsnorm
    torch = pytest.importorskip("torch")

    class Qwen3RMSNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(4))
            self.variance_epsilon = 1e-6

        def forward(self, x):
            return x

    class Swapped(torch.nn.Module):
        def forward(self, x):
            return x * self.weight * 2

    model = torch.nn.Sequential(Qwen3RMSNorm(), torch.nn.Linear(4, 4), Qwen3RMSNorm())
    kernel = types.SimpleNamespace(layers=types.SimpleNamespace(Qwen3RMSNorm=Swapped))
    x = torch.ones(1, 4)
    assert swap_rmsnorm(model, kernel) == 2
    assert torch.equal(model[0](x), 2 * x)
    assert set(model.state_dict()) == {"0.weight", "1.weight", "1.bias", "2.weight"}
    assert unswap_rmsnorm(model) == 2
    assert torch.equal(model[0](x), x)


def test_kernel_children_import_the_harness_of_the_lab_that_runs_them(tmp_path):
    """A benchmark imports runner.kernels; from a source checkout (nothing installed; `-S` hides
    the editable install here) the child still finds the runner that launched it."""
    import subprocess
    import sys

    import runner
    from runner.kernels.build import Build
    from runner.kernels.runs import child_env

    build = Build(None, "v", tmp_path / "variant", tmp_path / "variant" / "pkg", "ext", tmp_path / "lib.so", "9.0")
    env = child_env(build)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "variant")
    done = subprocess.run([sys.executable, "-S", "-c", "import runner; print(runner.__file__)"], env=env,
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == Path(runner.__file__).resolve()
