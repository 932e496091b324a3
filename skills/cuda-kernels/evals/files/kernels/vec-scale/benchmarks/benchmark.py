"""Benchmark of vec-scale against PyTorch eager: not written yet.

`lab kernel bench vec-scale` runs this file on a GPU; kernels/qwen3-rmsnorm/benchmarks/benchmark.py
shows the harness (runner.kernels.Timer) a benchmark uses.
"""
raise SystemExit("vec-scale has no benchmark yet")
