"""Small model utilities shared by distillation and recipes: freezing and strict weight loading."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

FROZEN_FLAG = "_rskd_frozen"


class CheckpointError(RuntimeError):
    """A weight file cannot be read (truncated, not a torch file) or does not fit the model; the message
    names the file."""


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file: a missing file is a
    ``FileNotFoundError``, an unreadable one (truncated, another format) a :class:`CheckpointError`."""
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"checkpoint not found: {where}")
    try:
        return torch.load(where, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, ImportError, AttributeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{where}: not a readable checkpoint ({os.path.getsize(where)} bytes; "
                              f"truncated or not written by torch.save?): {reason}") from None
    except Exception as e:  # pickle.UnpicklingError (weights_only refusal) and friends
        raise CheckpointError(f"{where}: not a readable checkpoint: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module``: no parameter requires grad, eval mode, and a flag that keeps it in eval mode
    under a :class:`~rskd_tutorial.distill.base.Distiller`'s ``train()``."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    setattr(module, FROZEN_FLAG, True)
    return module


def is_frozen(module: nn.Module) -> bool:
    return bool(getattr(module, FROZEN_FLAG, False))


def keep_frozen_in_eval(module: nn.Module) -> None:
    """Put every :func:`freeze`-flagged submodule of ``module`` back in eval mode (after ``train()``)."""
    for m in module.modules():
        if is_frozen(m):
            m.eval()


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _is_frozen_key(model: nn.Module, key: str) -> bool:
    prefixes = tuple(f"{n}." for n, m in model.named_modules() if n and is_frozen(m))
    return bool(prefixes) and key.startswith(prefixes)


def model_state(source: str | os.PathLike | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """The weights of a state dict or of a file written by ``engine.fit`` (``final.pt`` / ``checkpoint.pt``,
    whose weights sit under ``"model"``), loaded on the CPU with ``weights_only=True``."""
    if not isinstance(source, Mapping):
        source = read_checkpoint(source)
    return source.get("model", source) if isinstance(source.get("model", None), Mapping) else source


def weights_under(source: str | os.PathLike | Mapping[str, torch.Tensor], prefix: str, *,
                  required: bool = False) -> dict[str, torch.Tensor]:
    """A sub-module's weights from a whole model's: the keys under ``prefix`` (``"student."`` of a
    Distiller run, ``"detector."`` of a wrapped detector) with the prefix removed. Without any such key the
    weights are returned as they are (they already are the sub-module's) -- or, with ``required``, that is
    an error naming the source."""
    state = model_state(source)
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if out:
        return out
    if required:
        where = "the given state dict" if isinstance(source, Mapping) else os.fspath(source)
        raise RuntimeError(f"{where} holds no '{prefix}*' weights")
    return dict(state)


def load_state_strict(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load weights into ``model`` strictly: any missing or unexpected key is an error that lists them.

    ``source`` is a state dict or a file written by ``engine.fit`` (``final.pt`` / ``checkpoint.pt``,
    whose weights sit under ``"model"``), loaded with ``weights_only=True``.
    """
    where = "the given state dict" if isinstance(source, Mapping) else os.fspath(source)
    state = model_state(source)
    own = model.state_dict()   # a Distiller leaves its frozen teacher out of both sides
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not _is_frozen_key(model, k)]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        def show(keys: list[str]) -> str:
            return f"{keys[:4]}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
        raise CheckpointError(
            f"weights in {where} do not match {type(model).__name__}: missing {show(missing)}, "
            f"unexpected {show(unexpected)}, wrong shape {show(mismatched)}"
        )
    model.load_state_dict(state, strict=True)
    return model
