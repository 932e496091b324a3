"""Drop-in forwards for the `kernels` library's kernelize() and for module swaps.

A layer here defines only `forward`; it reads the attributes of the module it
replaces (transformers' Qwen3RMSNorm has `weight` and `variance_epsilon`).
"""
from __future__ import annotations

import torch
from torch import nn

from ._ops import ops


class Qwen3RMSNorm(nn.Module):
    weight: torch.Tensor
    variance_epsilon: float

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(hidden_states)
        ops.rms_norm(out, hidden_states, self.weight, self.variance_epsilon)
        return out


RMSNorm = Qwen3RMSNorm

__all__ = ["Qwen3RMSNorm", "RMSNorm"]
