"""FFT band split, radial power spectrum and band energy.

Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (the FFT split is FreqKD's, chapter 4).

Conventions (our reconstruction: FreqKD's abstract does not say how it splits the bands). On the
last two dimensions ``(h, w)`` of a real tensor, with the unitary DFT ``X = fft2(x, norm="ortho")``
(so Parseval holds with no factor, ``||x||^2 = ||X||^2``) and the radial frequency in cycles per
sample

.. math::
    \\rho(u, v) = \\sqrt{\\nu_u^2 + \\nu_v^2},\\qquad
    \\nu_u = \\texttt{fftfreq}(h)_u,\\ \\nu_v = \\texttt{fftfreq}(w)_v \\in [-\\tfrac12, \\tfrac12),

the low band is ``x_L = Re ifft2(M_L * X)`` and the high band ``x_H = x - x_L``, so
``x_L + x_H = x`` by construction. Masks:

* ``"ideal"``: ``M_L = 1[rho <= cutoff]``. The mask is 0/1 and symmetric under ``nu -> -nu``, so
  ``x_L`` is real and ``x_L`` and ``x_H`` are orthogonal: ``||x||^2 = ||x_L||^2 + ||x_H||^2``.
* ``"gaussian"``: ``M_L = exp(-rho^2 / (2 cutoff^2))``; ``cutoff`` is the standard deviation of
  the Gaussian in cycles per sample (the radius where the low-pass gain is ``exp(-1/2) ~ 0.61``;
  the half-power radius is ``cutoff * sqrt(ln 2) ~ 0.83 cutoff``). The two parts are not
  orthogonal.

DC (``rho = 0``) always has low-pass gain 1. ``cutoff`` is in cycles per sample (per token for
ViT grids), not in FFT bins, so the split does not move with the input size; 0.5 is the
Nyquist frequency along an axis, and the corners of the spectrum reach ``sqrt(0.5) ~ 0.707``.
"""

from __future__ import annotations

import math

import torch

from ._common import compute_dtype, no_autocast, output_dtype

__all__ = ["band_mask", "fft_bands", "radial_power_spectrum", "band_energy", "radial_frequency"]

_KINDS = ("ideal", "gaussian")


def radial_frequency(
    h: int, w: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``rho[u, v] = sqrt(fftfreq(h)[u]^2 + fftfreq(w)[v]^2)`` in cycles per sample, FFT order ``[h, w]``."""
    fy = torch.fft.fftfreq(h, device=device, dtype=dtype)
    fx = torch.fft.fftfreq(w, device=device, dtype=dtype)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def band_mask(
    h: int,
    w: int,
    cutoff: float,
    kind: str = "ideal",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    shift: bool = False,
) -> torch.Tensor:
    """Low-pass mask ``M_L`` of shape ``[h, w]`` (the high-pass gain is ``1 - M_L``).

    ``"ideal"``: ``1[rho <= cutoff]``; ``"gaussian"``: ``exp(-rho^2 / (2 cutoff^2))`` (see the
    module docstring). In FFT order (DC at ``[0, 0]``) unless
    ``shift=True``, which centres DC (``torch.fft.fftshift``) for ``imshow``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if not cutoff >= 0:
        raise ValueError(f"cutoff must be >= 0 cycles/sample, got {cutoff}")
    rho = radial_frequency(h, w, device=device, dtype=dtype)
    if kind == "ideal":
        mask = (rho <= cutoff).to(dtype)
    else:
        if cutoff == 0:
            raise ValueError("a gaussian mask needs cutoff > 0 (it is the Gaussian's standard deviation)")
        mask = torch.exp(-(rho**2) / (2.0 * cutoff**2))
    return torch.fft.fftshift(mask) if shift else mask


def fft_bands(x: torch.Tensor, cutoff: float, kind: str = "ideal") -> tuple[torch.Tensor, torch.Tensor]:
    """Split a real tensor into a low and a high spatial-frequency band.

    .. math::
        x_L = \\Re\\,\\mathcal F^{-1}\\big(M_L \\odot \\mathcal F(x)\\big),\\qquad x_H = x - x_L

    over the last two dimensions, with the unitary DFT (``norm="ortho"``) and ``M_L`` from
    :func:`band_mask`. ``x_L + x_H == x`` (to floating-point rounding); for ``kind="ideal"``
    ``||x||^2 = ||x_L||^2 + ||x_H||^2``. DC is always in the low band.

    The FFT runs in float32 with autocast off (cuFFT half precision only supports power-of-two
    sizes); both bands come back in the input's dtype.

    Args:
        x: real tensor ``[..., h, w]`` (images, NCHW features, token grids ``[N, D, h, w]``).
        cutoff: in cycles per sample (see the module docstring for its meaning per ``kind``).
        kind: ``"ideal"`` or ``"gaussian"``.

    Returns:
        ``(low, high)``, each shaped like ``x``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``; used in chapter 4 (FreqKD).
    """
    if x.is_complex():
        raise TypeError(f"fft_bands expects a real tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"fft_bands needs at least 2 dimensions (h, w), got shape {tuple(x.shape)}")
    out_dtype = output_dtype(x)
    with no_autocast(x.device):
        xf = x.to(compute_dtype(x))
        mask = band_mask(x.shape[-2], x.shape[-1], cutoff, kind, device=x.device, dtype=xf.dtype)
        spec = torch.fft.fft2(xf, norm="ortho")
        low = torch.fft.ifft2(spec * mask, norm="ortho").real
        high = xf - low
    return low.to(out_dtype), high.to(out_dtype)


def radial_power_spectrum(x: torch.Tensor, n_bins: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Azimuthally averaged power spectrum, for log-log plots.

    ``P(rho) = mean |X(u, v)|^2`` over all frequencies with ``rho(u, v)`` in the bin and over every
    leading dimension (batch, channels), with ``X = fft2(x, norm="ortho")``. With the unitary DFT,
    white noise of variance ``s^2`` has ``P = s^2`` at every frequency.

    Bins: ``n_bins`` equal-width bins on ``[0, 0.5]`` cycles per sample (default
    ``max(min(h, w) // 2, 1)``, one bin per frequency step of the shorter axis). Frequencies beyond
    0.5 (the spectrum's corners) are left out; empty bins are dropped. DC falls in the first bin,
    whose centre is ``0.25 / n_bins > 0``, so both outputs can go straight onto log axes.

    Args:
        x: real ``[h, w]``, ``[C, h, w]`` or ``[N, C, h, w]`` (any leading dimensions).
        n_bins: number of radial bins.

    Returns:
        ``(freqs, power)``: 1-D float tensors on the input's device; ``freqs`` are bin centres in
        cycles per sample.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    if x.dim() < 2:
        raise ValueError(f"radial_power_spectrum needs at least 2 dimensions, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if n_bins is None:
        n_bins = max(min(h, w) // 2, 1)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    with no_autocast(x.device):
        xf = x.to(compute_dtype(x))
        power = (torch.fft.fft2(xf, norm="ortho").abs() ** 2).reshape(-1, h, w).mean(dim=0)
        rho = radial_frequency(h, w, device=x.device, dtype=xf.dtype)
        inside = rho <= 0.5
        idx = torch.clamp((rho[inside] / 0.5 * n_bins).long(), max=n_bins - 1)
        sums = torch.zeros(n_bins, dtype=xf.dtype, device=x.device).index_add_(0, idx, power[inside])
        counts = torch.bincount(idx, minlength=n_bins)
        centres = (torch.arange(n_bins, dtype=xf.dtype, device=x.device) + 0.5) * (0.5 / n_bins)
        keep = counts > 0
    return centres[keep], sums[keep] / counts[keep].to(xf.dtype)


def band_energy(x: torch.Tensor, cutoff: float, kind: str = "ideal") -> tuple[float, float]:
    """Fractions of the energy of ``x`` in its low and high band: ``(||x_L||^2/||x||^2, ||x_H||^2/||x||^2)``.

    Sums run over the whole tensor (all samples and channels), with ``x_L, x_H`` from
    :func:`fft_bands`. For ``kind="ideal"`` the fractions add up to 1 (Parseval, orthogonal bands);
    for ``"gaussian"`` they need not (the bands overlap, and the cross term is left out). An
    all-zero input returns ``(nan, nan)``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    low, high = fft_bands(x.to(compute_dtype(x)), cutoff, kind)
    total = float((x.to(low.dtype) ** 2).sum())
    if total == 0.0:
        return math.nan, math.nan
    return float((low**2).sum()) / total, float((high**2).sum()) / total
