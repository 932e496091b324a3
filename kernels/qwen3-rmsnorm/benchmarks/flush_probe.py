"""How much of the gap to the 2 GiB copy figure is the L2 flush's dirty lines?

The benchmark's cold-L2 flush *writes* a buffer larger than L2, so every timed call
starts with L2 full of dirty lines that must be written back to DRAM while the
call runs. This times a plain copy of the same bytes, our rms_norm and Liger's
(when importable) at 8192 and 32768 tokens after that write flush and after a
*read* flush (L2 full of clean lines), same events and medians. Prints a table.
Run like the benchmark (PYTHONPATH = the build's variant folder).
"""
from __future__ import annotations

import sys

import torch

import qwen3_rmsnorm
from runner.kernels import Timer


class ReadFlushTimer(Timer):
    def flush(self) -> None:
        self.sink = self.flush_buffer.sum()  # reads the buffer: L2 ends full of clean lines


def main() -> int:
    device = torch.device("cuda")
    write_t, read_t = Timer(device, repeats=300), ReadFlushTimer(device, repeats=300)
    write_t.flush_buffer.fill_(0x5A5A5A5A)
    read_t.flush_buffer = write_t.flush_buffer
    copy_tb_s = write_t.copy_bandwidth()
    try:
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    except ImportError:
        LigerRMSNormFunction = None
    print(f"copy bandwidth (2 GiB, write flush): {copy_tb_s:.2f} TB/s")
    print(f"{'tokens':>6} {'impl':<10} {'write-flush us':>14} {'TB/s':>5} {'read-flush us':>13} {'TB/s':>5}")
    for tokens in (8192, 32768):
        x = torch.randn(tokens, 4096, device=device, dtype=torch.bfloat16)
        w = torch.randn(4096, device=device, dtype=torch.bfloat16) * 0.1 + 1
        dst = torch.empty_like(x)
        fns = {"copy": lambda: dst.copy_(x), "ours": lambda: qwen3_rmsnorm.rms_norm(x, w, 1e-6)}
        if LigerRMSNormFunction is not None:
            fns["liger"] = lambda: LigerRMSNormFunction.apply(x, w, 1e-6, 0.0, "llama", False)
        nbytes = 2 * x.numel() * 2
        for name, fn in fns.items():
            a = write_t.time(fn, use_graph=False).us_median
            b = read_t.time(fn, use_graph=False).us_median
            print(f"{tokens:>6} {name:<10} {a:14.2f} {nbytes / a / 1e6:5.2f} {b:13.2f} {nbytes / b / 1e6:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
