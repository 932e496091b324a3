"""Kernel projects in the Hugging Face kernel-builder layout (kernels/<name>/).

project: load and describe a project (build.toml); check: static checks and nvcc
compiles; build: JIT build for the local GPU; package: the Hub layout. The
benchmark harness a kernel's own benchmarks/ import from the installed benchlab:
`Timer` (device events, cold L2, CUDA graphs, medians), `write_results` and
`gpu_slug` (results/<gpu>.parquet), `results_markdown` and `update_card`
(CARD.md's table). Nothing here imports torch at module level, so `lab kernel
check` runs without it; model-specific code lives in the kernel's directory.
"""
from .card import results_markdown, update_card
from .results import gpu_slug, read_results, write_results
from .timing import Timer

__all__ = ["Timer", "gpu_slug", "read_results", "results_markdown", "update_card", "write_results"]
