"""The Distiller: teacher -> frozen -> student + weighted KD terms.

Every chapter follows the same recipe, and this module is it::

    distiller = Distiller(student, teacher, losses={"fitnet": FitNetLoss(...)}, weights={"fitnet": 1.0})
    engine.fit(distiller, train_set, config, out_dir)

**The loss protocol.** A KD term is an ``nn.Module`` called as ``loss(student_out, teacher_out,
targets)`` that returns a scalar tensor. ``student_out`` / ``teacher_out`` are the
:class:`~rskd_tutorial.models.outputs.ModelOutput` of one call of each model (features, head outputs
and image sizes are in ``.taps``), so no loss re-runs a model. A term may keep a dict of detached
sub-terms in ``self.last_terms`` after each call; the Distiller logs them.

**Teacher handling**: the teacher is frozen (``requires_grad=False``),
stays in eval mode whatever ``train()`` is called (so do any module a loss froze with
:func:`~rskd_tutorial.models.utils.freeze`, such as DS2D2's amplifier heads), and runs under
``torch.no_grad()`` with ``taps_only=True``.

**First-step checks** (against KD that silently does nothing): on the first training call every
parameter and buffer of the student, the teacher and every KD term must be on the device of the
batch, every KD term must be finite, must give a non-zero gradient to the student's parameters, and
nothing of the teacher may require grad -- otherwise a :class:`DistillationCheckError` names the
tensor or the term.

Taught in chapter 0 (``book/00_distilling_a_detector.ipynb``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rskd_tutorial.devices import DeviceMismatchError, check_devices
from rskd_tutorial.models.outputs import ModelOutput
from rskd_tutorial.models.utils import (
    freeze,
    is_frozen,
    keep_frozen_in_eval,
    load_state_strict,
)


class DistillationCheckError(RuntimeError):
    """A KD term is not finite, gives the student no gradient, or the teacher would receive one; or a
    parameter / buffer of the student, the teacher or a KD term is not on the batch's device."""


def student_loss(losses: Mapping[str, Any]) -> float:
    """The student's own (supervised) loss in a Distiller's loss dict or a logged ``metrics.jsonl`` line: the
    sum of the ``loss_*`` entries that are not weighted KD terms (``loss_kd_*``)."""
    return float(sum(float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()
                     if k.startswith("loss_") and not k.startswith("loss_kd_")))


class Distiller(nn.Module):
    """Student + frozen teacher + named KD losses with weights.

    Args:
        student: trained; called as ``student(inputs, targets)`` and returning a ``ModelOutput``
            (its own supervised ``losses`` may be empty, e.g. FreqKD's feature-only stage).
        teacher: frozen here; called as ``teacher(inputs, taps_only=True)`` under ``no_grad``.
        losses: KD terms by name (see the module docstring for the protocol).
        weights: one weight per KD term name; the objective is
            ``sum(student losses) + sum(weights[name] * losses[name](...))``.
        student_input, teacher_input: when a batch's inputs are a mapping (e.g. ``{"ir": ..., "rgb": ...}``
            or images at several resolutions), the key each model reads; ``None`` passes the inputs as is.
        teacher_weights: optional checkpoint path (or state dict) loaded into the teacher *strictly*.
        check_first_step: run the first-step checks (cost: one extra backward per KD term, once).

    In training mode the call returns a ``ModelOutput`` whose ``losses`` hold the student's own terms,
    ``loss_kd_<name>`` (weighted, optimised) and ``kd_<name>`` (raw, logged only); in eval mode it
    returns the student's output, so evaluators treat a Distiller as its student.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, losses: Mapping[str, nn.Module],
                 weights: Mapping[str, float], *, student_input: Any = None, teacher_input: Any = None,
                 teacher_weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
                 check_first_step: bool = True):
        super().__init__()
        missing = [n for n in losses if n not in weights]
        unknown = [n for n in weights if n not in losses]
        if missing or unknown:
            raise ValueError(f"Distiller weights must name every KD term: missing {missing}, unknown {unknown}")
        if teacher is student:
            raise ValueError("teacher and student are the same module")
        if teacher_weights is not None:
            load_state_strict(teacher, teacher_weights)
        self.student = student
        self.teacher = freeze(teacher)
        self.kd_losses = nn.ModuleDict(dict(losses))
        self.weights = {k: float(v) for k, v in weights.items()}
        self.student_input = student_input
        self.teacher_input = teacher_input
        self._checked = not check_first_step

    def _frozen_prefixes(self) -> tuple[str, ...]:
        return tuple(f"{name}." for name, m in self.named_modules() if name and is_frozen(m))

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Student and trainable KD modules only: the frozen teacher (and frozen heads inside losses)
        are rebuilt from their own checkpoints, so checkpoints stay student-sized."""
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        frozen = tuple(prefix + p for p in self._frozen_prefixes())
        return type(state)((k, v) for k, v in state.items() if not k.startswith(frozen))

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False) -> Any:
        """Load a :meth:`state_dict` (frozen modules keep their weights); ``strict`` checks the
        student and KD keys."""
        frozen = self._frozen_prefixes()
        state = {k: v for k, v in state_dict.items() if not k.startswith(frozen)}
        result = super().load_state_dict(state, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(frozen)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"Distiller state does not match: missing {missing[:5]}, "
                               f"unexpected {result.unexpected_keys[:5]}")
        return result

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        keep_frozen_in_eval(self)
        return self

    def _route(self, inputs: Any, key: Any) -> Any:
        if key is None:
            return inputs
        if not isinstance(inputs, Mapping) or key not in inputs:
            have = list(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
            raise KeyError(f"Distiller expects inputs with key {key!r}; got {have}")
        return inputs[key]

    @torch.no_grad()
    def teacher_forward(self, inputs: Any) -> ModelOutput:
        """The teacher's taps for ``inputs`` (the full batch inputs; routed by ``teacher_input``)."""
        self.teacher.eval()
        return self.teacher(self._route(inputs, self.teacher_input), taps_only=True)

    def forward(self, inputs: Any, targets: Any = None) -> ModelOutput:
        student_in = self._route(inputs, self.student_input)
        if not self.training:
            return self.student(student_in)
        if not self._checked:
            self.check_devices(inputs)
        s_out = self.student(student_in, targets)
        t_out = self.teacher_forward(inputs)
        losses: dict[str, Tensor] = dict(s_out.losses)
        raw: dict[str, Tensor] = {}
        for name, fn in self.kd_losses.items():
            value = fn(s_out, t_out, targets)
            if value.dim() != 0:
                raise DistillationCheckError(f"KD term {name!r} returned shape {tuple(value.shape)}, not a scalar")
            raw[name] = value
            losses[f"loss_kd_{name}"] = self.weights[name] * value
            losses[f"kd_{name}"] = value.detach()
            for sub, v in (getattr(fn, "last_terms", None) or {}).items():
                losses[f"kd_{name}.{sub}"] = v.detach() if torch.is_tensor(v) else torch.tensor(float(v))
        if not self._checked:
            self._first_step_checks(raw, t_out)
            self._checked = True
        return ModelOutput(losses=losses, taps=s_out.taps, predictions=s_out.predictions)

    def check_devices(self, inputs: Any) -> None:
        """Every parameter and buffer of the student, the teacher and the KD terms must be on the device of
        the batch ``inputs`` (the training device; its first tensor's). Runs before the first training
        step, so that a misplaced adapter is named instead of failing inside a convolution."""
        device = next((t.device for t in _tensors(inputs)), None)
        if device is None:
            return
        try:
            check_devices(self, device, where="Distiller")
        except DeviceMismatchError as err:
            raise DistillationCheckError(str(err)) from err

    def _first_step_checks(self, raw: Mapping[str, Tensor], t_out: ModelOutput) -> None:
        leaks = [n for n, p in self.teacher.named_parameters() if p.requires_grad]
        leaks += [n for m_name, m in self.named_modules() if is_frozen(m)
                  for n, p in m.named_parameters(prefix=m_name) if p.requires_grad]
        if leaks:
            raise DistillationCheckError(f"frozen parameters require grad: {leaks[:5]}")
        if any(torch.is_tensor(t) and t.requires_grad for t in _tensors(t_out.taps)):
            raise DistillationCheckError("a teacher tap requires grad: the teacher must run under no_grad")
        params = [p for p in self.student.parameters() if p.requires_grad]
        for name, value in raw.items():
            if not torch.isfinite(value).all():
                raise DistillationCheckError(f"KD term {name!r} is not finite at the first step: {float(value)}")
            if not value.requires_grad:
                raise DistillationCheckError(f"KD term {name!r} carries no gradient (is it computed from detached tensors?)")
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            if not any(g is not None and bool(g.abs().sum() > 0) for g in grads):
                raise DistillationCheckError(
                    f"KD term {name!r} gives the student no gradient: every student gradient is zero or None "
                    f"(check which taps it reads and that they are not detached)"
                )


def _tensors(obj: Any):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)
