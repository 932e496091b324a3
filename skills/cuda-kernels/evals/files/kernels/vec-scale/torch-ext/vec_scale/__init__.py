"""out = alpha * x for float32 CUDA tensors, as a CUDA op.

    vec_scale(x, alpha, out=None) -> out
"""
from __future__ import annotations

import torch

from ._ops import ops

__all__ = ["vec_scale", "ops"]


def vec_scale(x: torch.Tensor, alpha: float, out: torch.Tensor | None = None) -> torch.Tensor:
    if not x.is_cuda or x.dtype != torch.float32:
        raise TypeError(f"x: a float32 CUDA tensor is needed (got {x.dtype} on {x.device})")
    x = x.contiguous()
    out = torch.empty_like(x) if out is None else out
    ops.vec_scale(out, x, float(alpha))
    return out
