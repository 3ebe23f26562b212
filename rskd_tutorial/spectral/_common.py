"""Small helpers shared by the spectral modules (not part of the public API)."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def no_autocast(device: torch.device) -> ContextManager:
    """Context that switches autocast off on ``device`` (a no-op where autocast does not exist)."""
    if device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Working precision: float64 stays float64, everything else (fp16, bf16, ints) goes to float32.

    FFTs and DWTs are computed in fp32 even under AMP (half-precision cuFFT handles power-of-two
    sizes only).
    """
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def output_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype results are cast back to: the input's own dtype if floating, else float32."""
    return x.dtype if x.is_floating_point() else torch.float32


def as_4d(x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """View an ``[H,W]``, ``[C,H,W]`` or ``[N,C,H,W]`` tensor as NCHW; return it and an un-do function.

    A 3-D input is read as one image with C channels (``[1,C,H,W]``).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    nd = x.dim()
    if nd == 4:
        return x, lambda y: y
    if nd == 3:
        return x.unsqueeze(0), lambda y: y.squeeze(0)
    if nd == 2:
        return x[None, None], lambda y: y[0, 0]
    raise ValueError(f"{name} must have 2 (HW), 3 (CHW) or 4 (NCHW) dimensions, got shape {tuple(x.shape)}")
