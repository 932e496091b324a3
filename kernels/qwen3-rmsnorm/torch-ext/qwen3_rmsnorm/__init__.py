"""RMSNorm for Qwen3 (transformers' Qwen3RMSNorm numerics) as CUDA ops.

    rms_norm(x, weight, eps)                         -> y
    fused_add_rms_norm(x, residual, weight, eps)     -> y   (residual += x in place)
    qk_rms_norm(q, k, q_weight, k_weight, eps)       -> (q_normed, k_normed)

x is [..., hidden] with a contiguous last dimension; bfloat16, float16 or
float32, weight of the same dtype and shape [hidden].
"""
from __future__ import annotations

import torch

from . import layers, tuning
from ._ops import ops

__all__ = ["rms_norm", "fused_add_rms_norm", "qk_rms_norm", "layers", "ops", "tuning", "TUNING_CONFIGS",
           "config_name"]

_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _max_hidden(x: torch.Tensor) -> int:
    """Row length the kernels keep in registers: 16-byte packs, else single elements."""
    vec = 16 // x.element_size()
    aligned = x.size(-1) % vec == 0 and x.data_ptr() % 16 == 0
    return 2048 * vec if aligned else 8192


def _check(x: torch.Tensor, weight: torch.Tensor, name: str = "input", w_name: str = "weight") -> None:
    """The C++ ops check the same; raising here gives Python errors with the argument's name."""
    if not x.is_cuda:
        raise ValueError(f"{name}: must be a CUDA tensor (got {x.device})")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{name}: dtype {x.dtype} is not supported (bfloat16, float16, float32)")
    if weight.dtype != x.dtype or weight.device != x.device:
        raise TypeError(f"{w_name}: dtype {weight.dtype} on {weight.device} must match {name}'s "
                        f"{x.dtype} on {x.device}")
    if weight.dim() != 1 or weight.numel() != x.size(-1) or not weight.is_contiguous():
        raise ValueError(f"{w_name}: shape {tuple(weight.shape)} must be [{x.size(-1)}] and contiguous")
    if x.size(-1) > 1 and x.stride(-1) != 1:
        raise ValueError(f"{name}: the last dimension must be contiguous (stride {x.stride(-1)}); "
                         "call .contiguous() first")
    seen_row = False
    for d in range(x.dim() - 2, -1, -1):
        if x.size(d) == 1:
            continue
        if seen_row and x.stride(d) != x.stride(d + 1) * x.size(d + 1) and x.size(d + 1) != 1:
            raise ValueError(f"{name}: leading dimensions cannot be flattened into rows of one stride "
                             f"(sizes {tuple(x.shape)}, strides {x.stride()}); call .contiguous() first")
        seen_row = True
    if x.size(-1) > _max_hidden(x):
        raise ValueError(f"{name}: hidden size {x.size(-1)} is above the supported maximum {_max_hidden(x)}")


TUNED_HIDDEN = 4096
TUNED_SIZES = (1, 16, 128, 512, 2048, 8192, 32768)


def _tuned(op: str, *tensors: torch.Tensor) -> int:
    """The tuning table's kernel shape for these rows (`op`: NORM or FUSED), 0 for the built-in
    choice or when the rows are not what the table was tuned for (contiguous bf16 of 4096)."""
    x = tensors[0]
    if x.dtype != torch.bfloat16 or x.size(-1) != TUNED_HIDDEN or \
            not all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in tensors):
        return 0
    rows = x.numel() // TUNED_HIDDEN
    size = next((s for s in TUNED_SIZES if rows <= s), TUNED_SIZES[-1])
    return int(getattr(tuning, f"{op}_{size}", 0))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """weight * (x / rms(x)) normalised in fp32, rounded to x.dtype, then scaled."""
    _check(x, weight)
    out = torch.empty_like(x) if out is None else out
    config = _tuned("NORM", x, out)
    if config:
        ops.rms_norm_config(out, x, weight, eps, config)
    else:
        ops.rms_norm(out, x, weight, eps)
    return out


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """residual <- x + residual (in place, rounded to the dtype); returns rms_norm(residual).

    Pass out=x to write the normalised rows over x, as serving engines do.
    """
    _check(x, weight)
    _check(residual, weight, "residual")
    out = torch.empty_like(x) if out is None else out
    config = _tuned("FUSED", x, residual, out)
    if config:
        ops.fused_add_rms_norm_config(out, x, residual, weight, eps, config)
    else:
        ops.fused_add_rms_norm(out, x, residual, weight, eps)
    return out


def qk_rms_norm(q: torch.Tensor, k: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
                eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head RMSNorm of q [..., heads, head_dim] and k [..., kv_heads, head_dim] in one launch."""
    _check(q, q_weight, "q", "q_weight")
    _check(k, k_weight, "k", "k_weight")
    q_out = torch.empty_like(q)
    k_out = torch.empty_like(k)
    ops.qk_rms_norm(q_out, k_out, q, k, q_weight, k_weight, eps)
    return q_out, k_out


# Fixed kernel shapes for tuning sweeps (bfloat16, rows that split exactly into the packs, e.g.
# hidden 4096): config = grid * 1000 + hints * 100 + weight * 10 + packs per thread. Must match
# launch_tuning_shape in csrc/rmsnorm.cu.
TUNING_CONFIGS = (104, 4, 204, 304, 14, 2, 1, 8, 1004, 1024, 2024, 2124, 2224, 2324, 2014, 2022, 2028)
_GRIDS = ("rows", "persistent", "prefetch")
_HINTS = ("plain", "cs", "nc", "nc+cs")
_WEIGHTS = ("w", "wlate", "wregs")


def config_name(config: int) -> str:
    """A readable name: grid-hints-weight-packs, e.g. 2024 -> 'prefetch-plain-wregs-v4'."""
    return (f"{_GRIDS[config // 1000]}-{_HINTS[config // 100 % 10]}-{_WEIGHTS[config // 10 % 10]}"
            f"-v{config % 10}")


def rms_norm_with_config(x: torch.Tensor, weight: torch.Tensor, eps: float, config: int,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """rms_norm with a fixed kernel shape from TUNING_CONFIGS (for sweeps)."""
    _check(x, weight)
    out = torch.empty_like(x) if out is None else out
    ops.rms_norm_config(out, x, weight, eps, config)
    return out


def fused_add_rms_norm_with_config(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                                   config: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """fused_add_rms_norm with a fixed kernel shape from TUNING_CONFIGS (for sweeps)."""
    _check(x, weight)
    _check(residual, weight, "residual")
    out = torch.empty_like(x) if out is None else out
    ops.fused_add_rms_norm_config(out, x, residual, weight, eps, config)
    return out


def rms_norm_with_vpt(x: torch.Tensor, weight: torch.Tensor, eps: float, vpt: int) -> torch.Tensor:
    """rms_norm through the generic block kernel with 1, 2 or 4 16-byte packs per thread (tests)."""
    _check(x, weight)
    out = torch.empty_like(x)
    ops.rms_norm_vpt(out, x, weight, eps, vpt)
    return out
