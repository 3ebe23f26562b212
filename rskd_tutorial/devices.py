"""Where things run: the one device helper of the package, the device check and the AMP dtype.

* :func:`default_device` -- the device every chapter and recipe trains and evaluates on: an *indexed*
  CUDA device (``cuda:0``, or the current device) when a GPU is visible, else the CPU.
  ``torch.cuda.set_device`` and DDP's ``device_ids`` need the index, so a bare ``cuda`` never leaves here.
* :func:`resolve_device` -- any ``device`` argument (``None``, ``"cuda"``, ``"cuda:1"``, ``"cpu"``) as an
  indexed ``torch.device``.
* :func:`check_devices` -- every parameter and buffer of a module on the training device, or a
  :class:`DeviceMismatchError` that names each one that is not and both devices.
* :func:`amp_dtype` -- the autocast dtype of a training run: bf16 on GPUs that compute in it natively
  (compute capability >= 8.0: Ampere and later), fp16 (with a ``GradScaler``) on older ones such as
  the T4 (7.5), which reports ``torch.cuda.is_bf16_supported()`` but emulates bf16 slowly.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

AMP_MODES = ("auto", "bf16", "fp16", "off")
BF16_MIN_CAPABILITY = (8, 0)      # native bf16 tensor cores: Ampere (8.0) and later
_SHOWN = 5                        # tensors named in a device error


class DeviceMismatchError(ValueError):
    """A parameter or buffer is not on the training device (the message names it and both devices)."""


def default_device() -> torch.device:
    """``cuda:<current device>`` (``cuda:0`` unless another was selected) when a GPU is visible, else
    ``cpu`` (the d2l ``try_gpu`` of this book)."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device: torch.device | str | None = None, *, index: int | None = None) -> torch.device:
    """``device`` as a ``torch.device`` with an index where the type has one.

    ``None`` is :func:`default_device`; a bare ``cuda`` becomes ``cuda:<index>`` (default: the current
    CUDA device, ``0`` where CUDA is not initialised or absent -- whatever uses it then fails loudly);
    indexed devices and the CPU are returned as they are.
    """
    if device is None:
        return default_device()
    device = torch.device(device)
    if device.type != "cuda" or device.index is not None:
        return device
    if index is None:
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return torch.device("cuda", index)


def module_device(module: nn.Module) -> torch.device | None:
    """The device of ``module``'s first parameter (else first buffer); ``None`` if it holds neither."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return first.device if first is not None else None


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Equal types and indices; a missing index (a bare ``cuda``) matches any index."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def misplaced_tensors(module: nn.Module, device: torch.device | str) -> list[tuple[str, str, torch.device]]:
    """``(kind, name, device)`` of every parameter and buffer of ``module`` that is not on ``device``."""
    named = itertools.chain((("parameter", n, t) for n, t in module.named_parameters()),
                            (("buffer", n, t) for n, t in module.named_buffers()))
    return [(kind, name, t.device) for kind, name, t in named if not same_device(t.device, device)]


def check_devices(module: nn.Module, device: torch.device | str, *, where: str = "",
                  movable: bool = False) -> None:
    """Raise :class:`DeviceMismatchError` unless every parameter and buffer of ``module`` is on ``device``.

    The message names the offending tensors (``student.net.head.weight``, ``kd_losses.fitnet...``) with
    their device and the training device. ``movable=True`` (before a ``module.to(device)``) reports only
    what ``.to()`` cannot move: tensors on the ``meta`` device, which hold no data. ``where`` prefixes
    the message (e.g. ``"fit()"``).
    """
    device = torch.device(device)
    found = misplaced_tensors(module, device)
    if movable:
        found = [f for f in found if f[2].type == "meta"]
    if not found:
        return
    listed = ", ".join(f"{kind} '{name}' is on {dev}" for kind, name, dev in found[:_SHOWN])
    more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    hint = ("a meta tensor holds no data and cannot be moved: materialise it first (to_empty() + load_state_dict)"
            if any(dev.type == "meta" for _, _, dev in found)
            else "move the module with .to(device); tensors a module keeps must be registered parameters or buffers")
    prefix = f"{where}: " if where else ""
    raise DeviceMismatchError(f"{prefix}{len(found)} tensor(s) not on the training device {device}: "
                              f"{listed}{more} ({hint})")


def amp_dtype(device: torch.device | str, mode: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a training run on ``device`` (``None``: no autocast).

    ``mode`` is ``TrainConfig.amp``: ``off`` -> ``None``; ``bf16`` / ``fp16`` as asked; ``auto`` -> bf16
    where the GPU's compute capability is >= 8.0, else fp16 (to be used with a ``GradScaler``). Autocast
    is for CUDA only: the CPU always trains in fp32.
    """
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {mode!r}")
    device = torch.device(device)
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    return torch.bfloat16 if tuple(torch.cuda.get_device_capability(device)) >= BF16_MIN_CAPABILITY else torch.float16
