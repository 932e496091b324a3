"""The kernel lab's target (`lab init --template kernel`): build qwen3-rmsnorm, check it against a
float64 reference on fresh random inputs, time it with the harness, print the lab's summary.

    correct: 1|0                 every op and size within tolerance of the float64 reference
    max_rel_err: <x>             the worst ||out - ref|| / ||ref|| seen
    <op>_<tokens>_us: <x>        per op and size: median µs (device events, cold L2, graphs <= 512 rows)
    <op>_<tokens>_copy_us: <x>   the same for one copy of the bytes the op moves, timed interleaved with it
    vs_copy: <x>                 geometric mean over every op and size of (one copy of the same bytes,
                                 timed interleaved with the op) / (the op): the objective, higher is faster
    latency_us: <x>              geometric mean of the µs over every op and size
    (vs_copy and the timings are printed ONLY when correct is 1)

Sizes: LAB_KERNEL_SIZES (tokens, comma-separated; the lab names them in lab.yaml target.env).
The tuning table is this worktree's torch-ext/qwen3_rmsnorm/tuning.py; the compiled library is
shared between experiments with the same CUDA sources ($LAB_CACHE/kernel-build/<sources hash>).
`run()` takes the ops and the timer as arguments, so the rules above are tested on a CPU.
"""
from __future__ import annotations

import math
import os
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNEL = HERE.parent
HIDDEN, EPS = 4096, 1e-6
OPS = ("rms_norm", "fused_add_rms_norm")
TOLERANCE = 1e-2          # bf16 outputs: ||out - ref|| / ||ref|| lands between 1e-3 and 1e-2
GRAPH_MAX_TOKENS = 512
BYTES_MOVED = {"rms_norm": 1, "fused_add_rms_norm": 2}   # in x's sizes, read + written once each
ROUNDS = 10


def sizes() -> list[int]:
    return [int(s) for s in os.environ.get("LAB_KERNEL_SIZES", "1,16,128,512,2048,8192,32768").split(",")]


def make_inputs(torch, op: str, tokens: int, device, seed: int) -> dict:
    gen = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape, mean=0.0, std=1.0):
        return torch.randn(*shape, generator=gen, device=device).mul_(std).add_(mean).to(torch.bfloat16)
    t = {"x": rand(tokens, HIDDEN), "w": rand(HIDDEN, mean=1.0, std=0.1)}
    if op == "fused_add_rms_norm":
        t["r"] = rand(tokens, HIDDEN)
    return t


def reference(torch, op: str, t: dict):
    """Qwen3's numerics in float64: (x [+ r rounded to bf16]) normalised, rounded, scaled."""
    x = t["x"]
    if op == "fused_add_rms_norm":
        x = (t["x"].double() + t["r"].double()).to(torch.bfloat16)
    h = x.double()
    h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)).to(torch.bfloat16).double()
    return t["w"].double() * h


def relative_error(torch, out, ref) -> float:
    out = out.double()
    if not bool(torch.isfinite(out).all()):
        return math.inf
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def check(torch, ops: dict, tokens_list: list[int], device, seed: int) -> float:
    """The worst relative error over every op and size, on fresh inputs drawn from `seed`."""
    worst = 0.0
    for op in OPS:
        for tokens in tokens_list:
            t = make_inputs(torch, op, tokens, device, seed + tokens)
            ref = reference(torch, op, t)
            out = ops[op]({k: v.clone() for k, v in t.items()})
            worst = max(worst, relative_error(torch, out, ref))
    return worst


def measure(torch, ops: dict, tokens_list: list[int], device, timer) -> dict:
    """{(op, tokens): (µs, µs to copy the same bytes)}, the two timed interleaved in one loop, so
    that the clock and launch drift between runs moves both alike (their ratio is the objective)."""
    found = {}
    for op in OPS:
        for tokens in tokens_list:
            t = make_inputs(torch, op, tokens, device, tokens)
            src = torch.ones(BYTES_MOVED[op] * t["x"].numel(), dtype=t["x"].dtype, device=device)
            dst = torch.empty_like(src)
            timing = timer.time_many({"op": lambda t=t: ops[op](t), "copy": lambda: dst.copy_(src)},
                                     use_graph=tokens <= GRAPH_MAX_TOKENS, rounds=ROUNDS)
            found[(op, tokens)] = (timing["op"].us_median, timing["copy"].us_median)
    return found


def summary(worst: float, timings: dict) -> list[str]:
    """The lab's summary lines; no latency at all unless every output was right."""
    correct = worst <= TOLERANCE
    lines = [f"correct: {int(correct)}", f"max_rel_err: {worst:.6g}"]
    if not correct:
        return lines
    lines += [f"{op}_{tokens}_us: {us:.4f}" for (op, tokens), (us, _) in timings.items()]
    lines += [f"{op}_{tokens}_copy_us: {copy:.4f}" for (op, tokens), (_, copy) in timings.items()]
    lines.append(f"vs_copy: {_geomean([copy / us for us, copy in timings.values()]):.4f}")
    lines.append(f"latency_us: {_geomean([us for us, _ in timings.values()]):.4f}")
    return lines


def run(torch, ops: dict, device, timer, seed: int) -> list[str]:
    tokens_list = sizes()
    worst = check(torch, ops, tokens_list, device, seed)
    timings = measure(torch, ops, tokens_list, device, timer) if worst <= TOLERANCE else {}
    return summary(worst, timings)


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def kernel_ops(package) -> dict:
    return {"rms_norm": lambda t: package.rms_norm(t["x"], t["w"], EPS),
            "fused_add_rms_norm": lambda t: package.fused_add_rms_norm(t["x"], t["r"], t["w"], EPS)}


def built_package():
    """Build (or reuse) the library for these sources; import it with this worktree's tuning table."""
    from runner.kernels.build import build, sources_key
    from runner.kernels.project import load_project

    project = load_project(KERNEL.parents[1], KERNEL.name)
    cache = Path(os.environ.get("LAB_CACHE") or KERNEL.parents[1] / ".lab" / "cache")
    made = build(project, cache / "kernel-build" / sources_key(project))
    sys.path.insert(0, str(made.variant_dir))
    package = __import__(project.python_name)
    table = runpy.run_path(str(project.package_dir / "tuning.py"))
    for name, value in table.items():
        if name.isupper():
            setattr(package.tuning, name, value)   # this experiment's table, whatever was staged
    return package


def main() -> int:
    import torch
    if not torch.cuda.is_available():
        print("error: the kernel lab's target needs a CUDA GPU", file=sys.stderr)
        return 2
    from runner.kernels import Timer
    package = built_package()
    seed = int(os.environ.get("LAB_SEED", "0")) * 7919 + int.from_bytes(os.urandom(2), "little")
    for line in run(torch, kernel_ops(package), torch.device("cuda"), Timer(repeats=100), seed):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
