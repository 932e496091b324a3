"""RMSNorm for Qwen3 (transformers' Qwen3RMSNorm numerics) as CUDA ops.

    rms_norm(x, weight, eps)                         -> y
    fused_add_rms_norm(x, residual, weight, eps)     -> y   (residual += x in place)
    qk_rms_norm(q, k, q_weight, k_weight, eps)       -> (q_normed, k_normed)

x is [..., hidden] with a contiguous last dimension; bfloat16, float16 or
float32, weight of the same dtype and shape [hidden].
"""
from __future__ import annotations

import torch

from . import layers
from ._ops import ops

__all__ = ["rms_norm", "fused_add_rms_norm", "qk_rms_norm", "layers", "ops"]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """weight * (x / rms(x)) normalised in fp32, rounded to x.dtype, then scaled."""
    out = torch.empty_like(x) if out is None else out
    ops.rms_norm(out, x, weight, eps)
    return out


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """residual <- x + residual (in place, rounded to the dtype); returns rms_norm(residual).

    Pass out=x to write the normalised rows over x, as serving engines do.
    """
    out = torch.empty_like(x) if out is None else out
    ops.fused_add_rms_norm(out, x, residual, weight, eps)
    return out


def qk_rms_norm(q: torch.Tensor, k: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
                eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head RMSNorm of q [..., heads, head_dim] and k [..., kv_heads, head_dim] in one launch."""
    q_out = torch.empty_like(q)
    k_out = torch.empty_like(k)
    ops.qk_rms_norm(q_out, k_out, q, k, q_weight, k_weight, eps)
    return q_out, k_out


def rms_norm_with_vpt(x: torch.Tensor, weight: torch.Tensor, eps: float, vpt: int) -> torch.Tensor:
    """rms_norm with a fixed number of 16-byte packs per thread (1, 2 or 4): for tuning sweeps."""
    out = torch.empty_like(x)
    ops.rms_norm_vpt(out, x, weight, eps, vpt)
    return out
