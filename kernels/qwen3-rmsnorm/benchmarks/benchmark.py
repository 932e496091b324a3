"""Benchmark qwen3-rmsnorm against PyTorch eager, torch.compile, F.rms_norm and Liger.

Run through `lab kernel bench qwen3-rmsnorm` (which builds the kernel and puts
it on PYTHONPATH). Method (the harness's runner.kernels.Timer): L2 flushed before every
timed call, CUDA events, CUDA graphs for <= 512 tokens for every
implementation alike, medians of --repeats calls; copy bandwidth measured in
the same run. Writes results/<gpu>.parquet and regenerates CARD.md's table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNEL = HERE.parent

import torch
import torch._dynamo  # noqa: F401
import torch.nn.functional as F

import qwen3_rmsnorm
from runner.kernels import Timer, gpu_slug, results_markdown, update_card, write_results

OURS = "qwen3_rmsnorm"
BASELINES = ["eager", "compile", "F.rms_norm", "liger"]
TOKENS = [1, 16, 128, 512, 2048, 8192, 32768]
HIDDEN, HEAD_DIM, Q_HEADS, KV_HEADS, EPS = 4096, 128, 32, 8, 1e-6
GRAPH_MAX_TOKENS = 512


def qwen3_rmsnorm_eager(x, weight, eps=EPS):
    """transformers' Qwen3RMSNorm.forward, as written there."""
    dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(dtype)


def eager_norm():
    try:
        from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm
    except ImportError:
        return "local copy", qwen3_rmsnorm_eager

    cache = {}

    def run(x, weight, eps=EPS):
        module = cache.get(weight.data_ptr())
        if module is None:
            module = Qwen3RMSNorm(weight.numel(), eps=eps).to(weight.device, weight.dtype)
            module.weight.data = weight
            cache[weight.data_ptr()] = module
        return module(x)
    return "transformers", run


def liger_fns():
    try:
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    except ImportError as exc:
        print(f"liger-kernel not importable ({exc}); its column is left out", file=sys.stderr)
        return None, None

    def norm(x, w, eps=EPS):
        return LigerRMSNormFunction.apply(x, w, eps, 0.0, "llama", False)

    def fused(x, r, w, eps=EPS):
        return LigerFusedAddRMSNormFunction.apply(x, r, w, eps, 0.0, "llama", False)[0]
    return norm, fused


def implementations(op: str):
    """{impl: fn(inputs) -> output} for one op; inputs is a dict of tensors."""
    _, eager = eager_norm()
    liger_norm, liger_fused = liger_fns()
    rms = lambda x, w: F.rms_norm(x, (x.shape[-1],), w, EPS)  # noqa: E731
    if op == "rms_norm":
        impls = {OURS: lambda t: qwen3_rmsnorm.rms_norm(t["x"], t["w"], EPS),
                 "eager": lambda t: eager(t["x"], t["w"]),
                 "compile": torch.compile(lambda t: qwen3_rmsnorm_eager(t["x"], t["w"])),
                 "F.rms_norm": lambda t: rms(t["x"], t["w"])}
        if liger_norm:
            impls["liger"] = lambda t: liger_norm(t["x"], t["w"])
    elif op == "fused_add_rms_norm":
        def eager_fused(t):
            t["r"].copy_(t["x"] + t["r"])  # the model: residual = residual + hidden; then norm
            return eager(t["r"], t["w"])

        def compiled_body(t):
            s = t["x"] + t["r"]
            t["r"].copy_(s)
            return qwen3_rmsnorm_eager(s, t["w"])
        impls = {OURS: lambda t: qwen3_rmsnorm.fused_add_rms_norm(t["x"], t["r"], t["w"], EPS),
                 "eager": eager_fused, "compile": torch.compile(compiled_body),
                 "F.rms_norm": lambda t: rms(t["r"].add_(t["x"]), t["w"])}
        if liger_fused:
            impls["liger"] = lambda t: liger_fused(t["x"], t["r"], t["w"])
    else:  # qk_rms_norm: per-head norm of q [T, 32, 128] and k [T, 8, 128]
        def both(fn):
            return lambda t: (fn(t["q"], t["wq"]), fn(t["k"], t["wk"]))
        impls = {OURS: lambda t: qwen3_rmsnorm.qk_rms_norm(t["q"], t["k"], t["wq"], t["wk"], EPS),
                 "eager": both(eager), "compile": torch.compile(both(qwen3_rmsnorm_eager)),
                 "F.rms_norm": both(rms)}
        if liger_norm:
            impls["liger"] = both(liger_norm)
    return impls


def sweep_implementations(op: str, configs) -> dict:
    """Our kernel at each fixed shape of TUNING_CONFIGS (one of them is what "ours" runs)."""
    impls = {}
    for config in configs:
        name = f"{OURS}[{qwen3_rmsnorm.config_name(config)}]"
        if op == "rms_norm":
            impls[name] = lambda t, c=config: qwen3_rmsnorm.rms_norm_with_config(t["x"], t["w"], EPS, c)
        elif op == "fused_add_rms_norm":
            impls[name] = lambda t, c=config: qwen3_rmsnorm.fused_add_rms_norm_with_config(
                t["x"], t["r"], t["w"], EPS, c)
    return impls


def inputs(op: str, tokens: int, dtype, device):
    gen = torch.Generator(device=device).manual_seed(tokens)

    def rand(*shape, mean=0.0, std=1.0):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).mul_(std).add_(mean).to(dtype)
    if op == "qk_rms_norm":
        return {"q": rand(tokens, Q_HEADS, HEAD_DIM), "k": rand(tokens, KV_HEADS, HEAD_DIM),
                "wq": rand(HEAD_DIM, mean=1.0, std=0.1), "wk": rand(HEAD_DIM, mean=1.0, std=0.1)}
    t = {"x": rand(tokens, HIDDEN), "w": rand(HIDDEN, mean=1.0, std=0.1)}
    if op == "fused_add_rms_norm":
        t["r"] = rand(tokens, HIDDEN)
    return t


def bytes_moved(op: str, tokens: int, elem: int) -> tuple[int, int]:
    """(bytes the op must move, hidden reported)."""
    if op == "qk_rms_norm":
        return 2 * tokens * (Q_HEADS + KV_HEADS) * HEAD_DIM * elem + 2 * HEAD_DIM * elem, HEAD_DIM
    passes = 4 if op == "fused_add_rms_norm" else 2
    return passes * tokens * HIDDEN * elem + HIDDEN * elem, HIDDEN


def first(out):
    return out[0] if isinstance(out, tuple) else out


def check_output(fn, inputs_, reference):
    out = first(fn({k: v.clone() for k, v in inputs_.items()}))
    ok = bool(torch.isfinite(out).all())
    if reference is not None and ok:
        ok = bool(torch.allclose(out.float(), reference.float(), rtol=2e-2, atol=2e-2))
    return ok, out


def measure_size(timer, op, impls, tokens, dtype, device, context) -> list[dict]:
    """All implementations of one (op, dtype, tokens), timed interleaved; one row each."""
    base = inputs(op, tokens, dtype, device)
    own = {impl: {k: v.clone() for k, v in base.items()} for impl in impls}  # in-place ops: inputs per impl
    ok, reference = check_output(impls[OURS], base, None)
    checks = {OURS: ok}
    for impl, fn in impls.items():
        if impl != OURS:
            checks[impl] = check_output(fn, base, reference)[0]
    timings = timer.time_many({impl: (lambda fn=fn, t=own[impl]: fn(t)) for impl, fn in impls.items()},
                              use_graph=tokens <= GRAPH_MAX_TOKENS)
    first_tensor = base[next(iter(base))]
    nbytes, hidden = bytes_moved(op, tokens, first_tensor.element_size())
    copy_same = timer.copy_time(first_tensor)
    rows = []
    for impl, timing in timings.items():
        rows.append(dict(context, op=op, impl=impl, dtype=str(dtype).replace("torch.", ""), tokens=tokens,
                         hidden=hidden, us_median=timing.us_median, us_p10=timing.us_p10, us_p90=timing.us_p90,
                         bytes=nbytes, tb_s=nbytes / (timing.us_median * 1e-6) / 1e12, graph=timing.graph,
                         repeats=timing.repeats, ok=checks[impl], note="", copy_same_us=copy_same))
    return rows


def run(args) -> list[dict]:
    device = torch.device("cuda")
    torch.manual_seed(0)
    for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 256)
    timer = Timer(device, warmup=args.warmup, repeats=args.repeats)
    copy_tb_s = timer.copy_bandwidth()
    name = torch.cuda.get_device_name(device)
    context = {"gpu": name, "copy_tb_s": copy_tb_s, "torch": torch.__version__}
    print(f"{name}: copy bandwidth {copy_tb_s:.2f} TB/s (2 GiB, read + write)", file=sys.stderr)
    plan = [(op, dtype, tokens) for op in args.ops for dtype in args.dtypes for tokens in args.tokens]
    rows: list[dict] = []
    started = time.time()
    with torch.no_grad():
        for index, (op, dtype, tokens) in enumerate(plan, 1):
            impls = implementations(op)
            if args.sweep and dtype == torch.bfloat16:
                impls.update(sweep_implementations(op, args.configs))
            for row in measure_size(timer, op, impls, tokens, dtype, device, context):
                rows.append(row)
                print(f"[{index}/{len(plan)} {time.time() - started:5.0f}s] {op:<19} {row['dtype']:<9} "
                      f"{tokens:>6} {row['impl']:<20} {row['us_median']:9.2f} us {row['tb_s']:5.2f} TB/s"
                      f"{'' if row['ok'] else '  MISMATCH'}", file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    lines = [f"{'op':<19} {'dtype':<9} {'tokens':>6} {'ours us':>8} {'TB/s':>5} {'%copy':>5} {'copy-same us':>12} "
             f"{'best base':>10} {'base us':>8} {'speedup':>7}"]
    keyed = {}
    for row in rows:
        keyed.setdefault((row["op"], row["dtype"], row["tokens"]), {})[row["impl"]] = row
    for (op, dtype, tokens), impls in keyed.items():
        mine = impls.get(OURS)
        base = {k: v for k, v in impls.items() if k in BASELINES}
        if not mine or not base:
            continue
        best = min(base.values(), key=lambda r: r["us_median"])
        lines.append(f"{op:<19} {dtype:<9} {tokens:>6} {mine['us_median']:8.2f} {mine['tb_s']:5.2f} "
                     f"{100 * mine['tb_s'] / mine['copy_tb_s']:4.0f}% {mine['copy_same_us']:12.2f} "
                     f"{best['impl']:>10} {best['us_median']:8.2f} "
                     f"{best['us_median'] / mine['us_median']:6.2f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=["rms_norm", "fused_add_rms_norm", "qk_rms_norm"])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"])
    parser.add_argument("--tokens", nargs="+", type=int, default=TOKENS)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--sweep", action="store_true",
                        help="also time every fixed kernel shape of TUNING_CONFIGS (bfloat16, wide-row ops)")
    parser.add_argument("--configs", nargs="+", type=int, default=None, help="the shapes --sweep times (default all)")
    parser.add_argument("--out", type=Path, help="results Parquet (default: results/<gpu>.parquet)")
    parser.add_argument("--card", type=Path, default=KERNEL / "CARD.md")
    parser.add_argument("--no-card", action="store_true")
    args = parser.parse_args(argv)
    args.dtypes = [getattr(torch, d) for d in args.dtypes]
    args.configs = args.configs or list(qwen3_rmsnorm.TUNING_CONFIGS)
    rows = run(args)
    out = args.out or KERNEL / "results" / f"{gpu_slug(rows[0]['gpu'])}.parquet"
    write_results(out, rows)
    print(f"wrote {out}", file=sys.stderr)
    if not args.no_card:
        table = results_markdown(rows, OURS, BASELINES)
        print("card updated" if update_card(args.card, table) else f"{args.card}: no results markers",
              file=sys.stderr)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
