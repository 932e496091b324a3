"""Correctness of qwen3-rmsnorm against a float64 reference with Qwen3's rounding order.

Fresh random inputs and random weights (never all-ones) for every case, outputs
poisoned with NaN before each call, odd and unaligned sizes, every dtype the
card claims. Tolerances (elementwise, |out - ref| <= atol + rtol * |ref|):
bfloat16 rtol 1.6e-2 (two bf16 ulps: the output is rounded twice, as in the
model), float16 rtol 2e-3, float32 rtol 1e-5; atol = rtol / 4.
Run with `lab kernel test qwen3-rmsnorm` (builds, then puts the package on PYTHONPATH).
"""
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

if torch.cuda.is_available():
    import qwen3_rmsnorm

ERRORS = (ValueError, TypeError, RuntimeError)
RTOL = {torch.bfloat16: 1.6e-2, torch.float16: 2e-3, torch.float32: 1e-5}
DTYPES = list(RTOL)
EPS = 1e-6


def reference(x, weight, eps=EPS):
    """Qwen3RMSNorm in float64: normalise, round to x.dtype, multiply by the weight, round."""
    h = x.double()
    normed = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return (normed.double() * weight.double()).to(x.dtype)


def rand(*shape, dtype, gen, mean=0.0, std=1.0):
    return (torch.randn(*shape, generator=gen, device="cuda") * std + mean).to(dtype)


def assert_close(out, ref):
    rtol = RTOL[out.dtype]
    assert torch.isfinite(out).all(), "output has NaN/inf: an element was not written"
    diff = (out.double() - ref.double()).abs()
    bound = rtol / 4 + rtol * ref.double().abs()
    worst = (diff - bound).max().item()
    assert worst <= 0, f"max excess error {worst:.3g} (max diff {diff.max().item():.3g}, rtol {rtol})"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [4096, 128, 8, 1000, 4104, 5120, 12288, 7, 33, 2050])
@pytest.mark.parametrize("tokens", [1, 3, 17, 1000])
def test_rms_norm(dtype, hidden, tokens):
    gen = torch.Generator(device="cuda").manual_seed(hidden * 7919 + tokens)
    x = rand(tokens, hidden, dtype=dtype, gen=gen, std=3.0)
    w = rand(hidden, dtype=dtype, gen=gen, mean=1.0, std=0.5)
    out = torch.full_like(x, float("nan"))
    if dtype == torch.float32 and hidden > 8192:  # fp32 rows are limited to 8192 (registers)
        with pytest.raises(ERRORS, match="above the supported maximum"):
            qwen3_rmsnorm.rms_norm(x, w, EPS, out=out)
        return
    qwen3_rmsnorm.rms_norm(x, w, EPS, out=out)
    assert_close(out, reference(x, w))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [4096, 1000, 7])
def test_fused_add_updates_residual_in_place(dtype, hidden):
    gen = torch.Generator(device="cuda").manual_seed(hidden)
    x = rand(37, hidden, dtype=dtype, gen=gen)
    residual = rand(37, hidden, dtype=dtype, gen=gen)
    w = rand(hidden, dtype=dtype, gen=gen, mean=1.0, std=0.5)
    summed = x + residual  # rounded to dtype, as the model's residual add is
    x_before = x.clone()
    out = qwen3_rmsnorm.fused_add_rms_norm(x, residual, w, EPS)
    assert torch.equal(residual, summed)
    assert torch.equal(x, x_before)
    assert_close(out, reference(summed, w))
    # in place over x, as serving engines call it
    residual2 = rand(37, hidden, dtype=dtype, gen=gen)
    summed2 = x + residual2
    qwen3_rmsnorm.fused_add_rms_norm(x, residual2, w, EPS, out=x)
    assert torch.equal(residual2, summed2)
    assert_close(x, reference(summed2, w))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens", [1, 5, 300])
def test_qk_rms_norm_per_head(dtype, tokens):
    gen = torch.Generator(device="cuda").manual_seed(tokens)
    q = rand(tokens, 32, 128, dtype=dtype, gen=gen, std=2.0)
    k = rand(tokens, 8, 128, dtype=dtype, gen=gen, std=2.0)
    wq = rand(128, dtype=dtype, gen=gen, mean=1.0, std=0.5)
    wk = rand(128, dtype=dtype, gen=gen, mean=1.0, std=0.5)
    q_out, k_out = qwen3_rmsnorm.qk_rms_norm(q, k, wq, wk, EPS)
    assert_close(q_out, reference(q, wq))
    assert_close(k_out, reference(k, wk))


def test_matches_transformers_qwen3_rmsnorm():
    modeling = pytest.importorskip("transformers.models.qwen3.modeling_qwen3")
    gen = torch.Generator(device="cuda").manual_seed(3)
    module = modeling.Qwen3RMSNorm(4096, eps=EPS).cuda().to(torch.bfloat16)
    module.weight.data = rand(4096, dtype=torch.bfloat16, gen=gen, mean=1.0, std=0.5)
    x = rand(2, 9, 4096, dtype=torch.bfloat16, gen=gen)
    ours = qwen3_rmsnorm.rms_norm(x, module.weight, EPS)
    theirs = module(x)
    # Same rounding order: at most one bf16 ulp apart (the fp32 sum order differs).
    assert_close(ours, theirs)
    assert (ours != theirs).float().mean().item() < 0.01


def test_strided_rows_and_unaligned_rows():
    gen = torch.Generator(device="cuda").manual_seed(11)
    big = rand(64, 4096 + 64, dtype=torch.bfloat16, gen=gen)
    w = rand(4096, dtype=torch.bfloat16, gen=gen, mean=1.0, std=0.5)
    strided = big[:, :4096]             # row stride 4160: handled
    assert_close(qwen3_rmsnorm.rms_norm(strided, w, EPS), reference(strided, w))
    unaligned = big[:, 1:4097]          # 2-byte offset: the scalar path
    assert_close(qwen3_rmsnorm.rms_norm(unaligned, w, EPS), reference(unaligned, w))
    qkv = rand(6, 48 * 128, dtype=torch.bfloat16, gen=gen)
    q = qkv[:, : 32 * 128].view(6, 32, 128)  # token stride 6144 != 32 * 128: no single row stride
    wq = rand(128, dtype=torch.bfloat16, gen=gen, mean=1.0, std=0.5)
    with pytest.raises(ERRORS, match="flattened"):
        qwen3_rmsnorm.rms_norm(q, wq, EPS)


def test_refusals_are_clear():
    x = torch.randn(4, 64, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ERRORS, match="last dimension must be contiguous"):
        qwen3_rmsnorm.rms_norm(torch.randn(64, 4, device="cuda", dtype=torch.bfloat16).t(), w, EPS)
    with pytest.raises(ERRORS, match="dtype"):
        qwen3_rmsnorm.rms_norm(x, w.float(), EPS)
    with pytest.raises(ERRORS, match="shape"):
        qwen3_rmsnorm.rms_norm(x, w[:32], EPS)
    with pytest.raises(ERRORS, match="CUDA tensor"):
        qwen3_rmsnorm.rms_norm(x.cpu(), w.cpu(), EPS)
    with pytest.raises(ERRORS, match="above the supported maximum"):
        big = torch.randn(1, 40000, device="cuda", dtype=torch.bfloat16)
        qwen3_rmsnorm.rms_norm(big, torch.randn(40000, device="cuda", dtype=torch.bfloat16), EPS)


def test_cpp_checks_raise_instead_of_crashing():
    """The C++ argument checks, reached by calling the ops directly (past the Python checks), raise
    RuntimeError; in a child process, since the failure this guards against was a segfault."""
    code = ("import torch, qwen3_rmsnorm\n"
            "x = torch.randn(4, 64, device='cuda', dtype=torch.bfloat16)\n"
            "calls = [lambda: qwen3_rmsnorm.ops.rms_norm(torch.empty_like(x), x, x[0, :32].contiguous(), 1e-6),\n"
            "         lambda: qwen3_rmsnorm.ops.rms_norm(torch.empty_like(x), x, x[0].float(), 1e-6),\n"
            "         lambda: qwen3_rmsnorm.ops.rms_norm_config(torch.empty_like(x), x, x[0].contiguous(), 1e-6, 9999)]\n"
            "for call in calls:\n"
            "    try:\n        call()\n    except RuntimeError as e:\n        print('raised:', str(e).splitlines()[0])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ)
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stderr[-2000:]}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    assert "shape [32] must be [64]" in lines[0] and "dtype" in lines[1] and "tuning config" in lines[2], lines


def test_empty_input_is_a_no_op():
    x = torch.empty(0, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    assert qwen3_rmsnorm.rms_norm(x, w, EPS).shape == (0, 4096)


def test_graph_capture_and_vpt_variants_agree():
    gen = torch.Generator(device="cuda").manual_seed(5)
    x = rand(16, 4096, dtype=torch.bfloat16, gen=gen)
    w = rand(4096, dtype=torch.bfloat16, gen=gen, mean=1.0, std=0.5)
    expected = qwen3_rmsnorm.rms_norm(x, w, EPS)
    for vpt in (1, 2, 4):  # the generic (guarded) block kernel: same function, another fp32 sum order
        other = qwen3_rmsnorm.rms_norm_with_vpt(x, w, EPS, vpt)
        assert_close(other, reference(x, w))
        assert (other != expected).float().mean().item() < 1e-3
    out = torch.empty_like(x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        qwen3_rmsnorm.rms_norm(x, w, EPS, out=out)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 1000, 3001, 5000])
def test_wide_rows_one_block_per_row_and_persistent(dtype, tokens):
    """Every automatic shape: on a 132-multiprocessor GPU, 1000 and 3001 rows take the persistent grid
    for rms_norm (3001: blocks loop over rows), 3001 and 5000 rows one block per row for the fused op."""
    gen = torch.Generator(device="cuda").manual_seed(tokens + 17)
    x = rand(tokens, 4096, dtype=dtype, gen=gen, std=2.0)
    residual = rand(tokens, 4096, dtype=dtype, gen=gen)
    w = rand(4096, dtype=dtype, gen=gen, mean=1.0, std=0.5)
    out = torch.full_like(x, float("nan"))
    qwen3_rmsnorm.rms_norm(x, w, EPS, out=out)
    assert_close(out, reference(x, w))
    summed = x + residual
    out.fill_(float("nan"))
    qwen3_rmsnorm.fused_add_rms_norm(x, residual, w, EPS, out=out)
    assert torch.equal(residual, summed)
    assert_close(out, reference(summed, w))


CONFIGS = qwen3_rmsnorm.TUNING_CONFIGS if torch.cuda.is_available() else ()


@pytest.mark.parametrize("config", CONFIGS)
def test_every_tuning_config_is_correct(config):
    """The sweep's fixed kernel shapes compute the same function (few rows, and rows > grid)."""
    for tokens in (3, 3001):
        gen = torch.Generator(device="cuda").manual_seed(config * 31 + tokens)
        x = rand(tokens, 4096, dtype=torch.bfloat16, gen=gen, std=2.0)
        residual = rand(tokens, 4096, dtype=torch.bfloat16, gen=gen)
        w = rand(4096, dtype=torch.bfloat16, gen=gen, mean=1.0, std=0.5)
        out = torch.full_like(x, float("nan"))
        qwen3_rmsnorm.rms_norm_with_config(x, w, EPS, config, out=out)
        assert_close(out, reference(x, w))
        summed = x + residual
        out.fill_(float("nan"))
        qwen3_rmsnorm.fused_add_rms_norm_with_config(x, residual, w, EPS, config, out=out)
        assert torch.equal(residual, summed), qwen3_rmsnorm.config_name(config)
        assert_close(out, reference(summed, w))


def test_the_tuning_table_picks_the_kernel_shape_per_token_count(monkeypatch):
    """rms_norm consults tuning.py for contiguous bf16 rows of 4096 (an unknown shape is refused,
    which proves the lookup happens) and leaves other rows on the built-in choice."""
    monkeypatch.setattr(qwen3_rmsnorm.tuning, "NORM_16", 9999)
    monkeypatch.setattr(qwen3_rmsnorm.tuning, "FUSED_16", 9999)
    gen = torch.Generator(device="cuda").manual_seed(7)
    w = rand(4096, dtype=torch.bfloat16, gen=gen, mean=1.0, std=0.5)
    for tokens in (9, 16):
        x = rand(tokens, 4096, dtype=torch.bfloat16, gen=gen)
        with pytest.raises(ERRORS, match="tuning config"):
            qwen3_rmsnorm.rms_norm(x, w, EPS)
        with pytest.raises(ERRORS, match="tuning config"):
            qwen3_rmsnorm.fused_add_rms_norm(x, x.clone(), w, EPS)
    for x in (rand(17, 4096, dtype=torch.bfloat16, gen=gen), rand(16, 4096, dtype=torch.float16, gen=gen),
              rand(16, 8192, dtype=torch.bfloat16, gen=gen)[:, :4096]):
        w_x = rand(4096, dtype=x.dtype, gen=gen, mean=1.0, std=0.5)
        assert_close(qwen3_rmsnorm.rms_norm(x, w_x, EPS), reference(x, w_x))
