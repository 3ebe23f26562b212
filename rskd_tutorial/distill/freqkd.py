"""FreqKD: frequency-decoupled cross-modal feature distillation (FreqKD, 2026; abstract only).

What the abstract states: split teacher (RGB) and student (infrared) features into a low- and a
high-frequency band; supervise the low band with a *strict MSE* and the high band with a *relaxed
log-MSE* weighted 0.1. Everything else -- the transform, the cutoff, the normalisation, the exact
"log-MSE" -- is **our reconstruction**, exposed as arguments:

.. math::
    X^L = \\Re\\,\\mathcal F^{-1}(M_L \\odot \\mathcal F X),\\quad X^H = X - X^L
    \\qquad(\\text{ideal radial mask } M_L = \\mathbb 1[\\rho \\le r_c])

.. math::
    \\mathcal L_{low} = \\operatorname{mean}\\big(n(X_S^L) - \\mathrm{sg}[n(X_T^L)]\\big)^2,\\qquad
    \\mathcal L_{high} = \\operatorname{mean}\\big(\\psi(n(X_S^H)) - \\mathrm{sg}[\\psi(n(X_T^H))]\\big)^2

.. math::
    \\mathcal L_{FreqKD} = \\mathcal L_{low} + w_H\\,\\mathcal L_{high},\\qquad
    \\psi(x) = \\operatorname{sign}(x)\\log(1 + |x|),\\quad w_H = 0.1

with ``n`` the L2 normalisation of every token's channel vector (after the split) and means over
all ``B * D * h * w`` entries. Options: ``log_mse="log1p_of_mse"`` gives
``L_high = log(1 + mean (n(X_S^H) - n(X_T^H))^2)``; ``log_mse="none"`` a strict MSE on both bands;
``split="haar"`` takes the low band as the one-level Haar approximation (LL synthesised back to
full size: the 2x2 block means) and the high band as the rest; ``split="none"`` is the plain
full-band MSE control row (no split: ``L = mean (n(X_S) - n(X_T))^2``).

Taught in chapter 4 (``book/04_freqkd_divergence.ipynb``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rskd_tutorial.models.outputs import ModelOutput
from rskd_tutorial.spectral import fft_bands, haar_dwt, haar_idwt

__all__ = ["FreqKDLoss", "band_split", "freqkd_loss", "signed_log1p"]

LOG_MSE = ("signed_log1p", "log1p_of_mse", "none")
SPLITS = ("fft", "haar", "none")


def signed_log1p(x: Tensor) -> Tensor:
    """``psi(x) = sign(x) * log(1 + |x|)`` (FD-CMKD's definition of "log-MSE").

    ``psi(x) ~ x`` for ``|x| << 1`` and grows like ``log |x|`` for large ``|x|``: it compresses large
    differences, which is what makes the high-band term "relaxed". Its slope is ``1 / (1 + |x|)``.
    """
    return torch.sign(x) * torch.log1p(x.abs())


def band_split(x: Tensor, cutoff: float = 0.25, *, split: str = "fft", kind: str = "ideal") -> tuple[Tensor, Tensor]:
    """``(low, high)`` of an ``[N, C, h, w]`` map with ``low + high == x``.

    * ``"fft"``: :func:`~rskd_tutorial.spectral.fft_bands` (ortho 2-D FFT, radial ``cutoff`` in
      cycles per token, DC in the low band, ``kind`` = ``"ideal"`` or ``"gaussian"`` mask).
    * ``"haar"``: low = one-level Haar approximation synthesised back to full size (each 2x2 block
      replaced by its mean; ``cutoff``/``kind`` ignored), high = ``x - low``.
    * ``"none"``: low = ``x``, high = zeros (the full-band control).

    Computed in float32 (float64 stays float64) with autocast off.
    """
    if split == "fft":
        return fft_bands(x, cutoff, kind)
    if split == "haar":
        ll, (detail,) = haar_dwt(x, levels=1, mode="symmetric")
        low = haar_idwt(ll, [torch.zeros_like(detail)], mode="symmetric", size=tuple(x.shape[-2:]))
        return low, x - low
    if split == "none":
        return x, torch.zeros_like(x)
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _token_normalize(x: Tensor, eps: float) -> Tensor:
    """L2-normalise every token's channel vector of an ``[N, C, h, w]`` map (norm clamped at ``eps``)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def freqkd_loss(f_student: Tensor, f_teacher: Tensor, cutoff: float = 0.25, high_weight: float = 0.1,
                log_mse: str = "signed_log1p", l2_normalize: bool = True, *, split: str = "fft",
                kind: str = "ideal", low_weight: float = 1.0, eps: float = 1e-8,
                return_terms: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """FreqKD's loss on one pair of maps (see the module docstring for the equations).

    Args:
        f_student, f_teacher: ``[N, D, h, w]`` of the same shape (ViT patch tokens reshaped
            row-major; the teacher is detached here, whatever the caller did).
        cutoff: low-band radius in cycles per token (0.5 = Nyquist along an axis) [ours: 0.25].
        high_weight: ``w_H`` [abstract: 0.1].
        log_mse: ``"signed_log1p"`` [ours, FD-CMKD's], ``"log1p_of_mse"`` or ``"none"`` (strict MSE).
        l2_normalize: per-token L2 normalisation of each band before the losses [ours].
        split: ``"fft"`` [ours], ``"haar"`` or ``"none"`` (full-band MSE control).
        kind: FFT mask, ``"ideal"`` [ours] or ``"gaussian"``.
        low_weight: weight of the low-band term (1 in FreqKD).
        eps: clamp of the token norms.
        return_terms: also return ``{"low": L_low, "high": L_high}`` (not detached).

    Returns:
        the scalar ``low_weight * L_low + high_weight * L_high`` (float32), and the terms if asked.
    """
    if f_student.shape != f_teacher.shape:
        raise ValueError(f"student and teacher maps differ in shape: {tuple(f_student.shape)} vs "
                         f"{tuple(f_teacher.shape)} (resize / project the student first)")
    if f_student.dim() != 4:
        raise ValueError(f"freqkd_loss expects [N, D, h, w] maps, got shape {tuple(f_student.shape)}")
    if log_mse not in LOG_MSE:
        raise ValueError(f"log_mse must be one of {LOG_MSE}, got {log_mse!r}")
    work = torch.float64 if f_student.dtype == torch.float64 else torch.float32
    with torch.autocast(f_student.device.type, enabled=False):
        s_low, s_high = band_split(f_student.to(work), cutoff, split=split, kind=kind)
        t_low, t_high = band_split(f_teacher.detach().to(work), cutoff, split=split, kind=kind)
        if l2_normalize:
            s_low, t_low = _token_normalize(s_low, eps), _token_normalize(t_low, eps)
            if split != "none":
                s_high, t_high = _token_normalize(s_high, eps), _token_normalize(t_high, eps)
        low = (s_low - t_low).pow(2).mean()
        if split == "none":
            high = low.new_zeros(())
        elif log_mse == "signed_log1p":
            high = (signed_log1p(s_high) - signed_log1p(t_high)).pow(2).mean()
        elif log_mse == "log1p_of_mse":
            high = torch.log1p((s_high - t_high).pow(2).mean())
        else:
            high = (s_high - t_high).pow(2).mean()
        total = low_weight * low + high_weight * high
    if return_terms:
        return total, {"low": low, "high": high}
    return total


class FreqKDLoss(nn.Module):
    """FreqKD as a Distiller term: :func:`freqkd_loss` averaged over the distilled taps.

    Reads ``out.taps["features"]`` of both models (a :class:`~rskd_tutorial.models.vit.FeatureModel`
    or a detector). For each teacher tap in ``levels`` the student tap of the same name (or the
    matching entry of ``student_levels``) is bilinearly resized to the teacher's grid when they
    differ and, when ``student_channels != teacher_channels``, projected by a learned 1x1 conv
    (the ResNet-50 -> ViT row). ``last_terms`` holds the level-averaged ``low`` and
    ``high`` terms (unweighted) after each call.

    Args:
        levels: teacher tap names (default: every teacher tap).
        student_levels: the student's tap for each of ``levels`` (default: the same names).
        student_channels, teacher_channels: channel widths (needed only when they differ).
        cutoff, high_weight, log_mse, l2_normalize, split, kind, low_weight: see :func:`freqkd_loss`.
    """

    def __init__(self, levels: Sequence[str] | None = None, *, student_levels: Sequence[str] | None = None,
                 student_channels: int | None = None, teacher_channels: int | None = None,
                 cutoff: float = 0.25, high_weight: float = 0.1, log_mse: str = "signed_log1p",
                 l2_normalize: bool = True, split: str = "fft", kind: str = "ideal", low_weight: float = 1.0):
        super().__init__()
        if log_mse not in LOG_MSE:
            raise ValueError(f"log_mse must be one of {LOG_MSE}, got {log_mse!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if student_levels is not None and (levels is None or len(student_levels) != len(levels)):
            raise ValueError("student_levels needs levels of the same length")
        self.levels = list(levels) if levels is not None else None
        self.student_levels = list(student_levels) if student_levels is not None else None
        self.options: dict[str, Any] = dict(cutoff=cutoff, high_weight=high_weight, log_mse=log_mse,
                                            l2_normalize=l2_normalize, split=split, kind=kind, low_weight=low_weight)
        needs_proj = student_channels is not None and teacher_channels is not None and student_channels != teacher_channels
        self.proj = nn.Conv2d(student_channels, teacher_channels, 1) if needs_proj else nn.Identity()
        self.last_terms: dict[str, Tensor] = {}

    def pairs(self, s_out: ModelOutput, t_out: ModelOutput) -> list[tuple[str, Tensor, Tensor]]:
        """``(teacher level, student map, teacher map)`` with the student resized and projected."""
        s_feats: Mapping[str, Tensor] = s_out.taps["features"]
        t_feats: Mapping[str, Tensor] = t_out.taps["features"]
        t_names = self.levels if self.levels is not None else list(t_feats)
        s_names = self.student_levels or t_names
        out = []
        for tn, sn in zip(t_names, s_names):
            if tn not in t_feats or sn not in s_feats:
                raise KeyError(f"FreqKD tap missing: teacher {tn!r} (has {list(t_feats)}), student {sn!r} (has {list(s_feats)})")
            s, t = s_feats[sn], t_feats[tn]
            if s.shape[-2:] != t.shape[-2:]:
                s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
            s = self.proj(s)
            if s.shape[1] != t.shape[1]:
                raise ValueError(f"student tap {sn!r} has {s.shape[1]} channels, teacher {tn!r} {t.shape[1]}: "
                                 f"pass student_channels and teacher_channels to learn a 1x1 projection")
            out.append((tn, s, t))
        return out

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        pairs = self.pairs(s_out, t_out)
        total, low, high = 0.0, 0.0, 0.0
        for _, s, t in pairs:
            value, terms = freqkd_loss(s, t, return_terms=True, **self.options)
            total, low, high = total + value, low + terms["low"], high + terms["high"]
        n = len(pairs)
        self.last_terms = {"low": (low / n).detach(), "high": (high / n).detach()}
        return total / n

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items())
