"""Kernel projects in the Hugging Face kernel-builder layout (kernels/<name>/).

project: load and describe a project (build.toml); check: static checks and nvcc
compiles; build: JIT build for the local GPU; package: the Hub layout; timing and
results: the benchmark harness; card: CARD.md's results table; swap: module swaps.
Nothing here imports torch at module level, so `lab kernel check` runs without it.
"""
