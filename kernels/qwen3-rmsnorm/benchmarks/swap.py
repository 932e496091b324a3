"""Swap a model's RMSNorm layers for a kernel's forward (inference only).

The kernel package's `layers.<Class>.forward` reads the replaced module's own
attributes (`weight`, `variance_epsilon`), so the swap rebinds `forward` on
each matching module and keeps its parameters and state_dict unchanged.
"""
from __future__ import annotations

import types

DEFAULT_CLASSES = ("Qwen3RMSNorm",)


def swap_rmsnorm(model, kernel, classes: tuple[str, ...] = DEFAULT_CLASSES, layer: str = "Qwen3RMSNorm") -> int:
    """Rebind forward of every module whose class name is in `classes`; returns how many were swapped."""
    forward = getattr(kernel.layers, layer).forward
    count = 0
    for module in model.modules():
        if type(module).__name__ in classes:
            if not hasattr(module, "_benchlab_original_forward"):
                module._benchlab_original_forward = module.forward
            module.forward = types.MethodType(forward, module)
            count += 1
    return count


def unswap_rmsnorm(model) -> int:
    """Undo swap_rmsnorm; returns how many modules were restored."""
    count = 0
    for module in model.modules():
        original = module.__dict__.pop("_benchlab_original_forward", None)
        if original is not None:
            module.__dict__.pop("forward", None)
            count += 1
    return count
