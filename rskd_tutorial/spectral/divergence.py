"""Band-wise divergence between paired features, with bootstrap confidence intervals.

Taught in chapter 1, ``book/01_spectral_analysis.ipynb``; the FreqKD study of chapter 4 uses it
to reproduce the abstract's claim that RGB/IR feature divergence is about 2.4x larger in the high
band than in the low band (500 pairs, averaged over transformer layers).

For paired features ``a, b`` of shape ``[N, C, H, W]`` (or token grids ``[N, D, h, w]``: drop
CLS/register tokens and reshape row-major first), each is split into a low and a high band and,
per sample ``i`` and band ``B`` (vectors over all ``C*H*W`` entries of the band):

* ``nmse``:   ``||a_B - b_B||^2 / (||a_B||^2 + ||b_B||^2 + eps)``. Normalised by the energy of both
  sides, so bands of very different energy are comparable; range ``[0, 2]`` (0 identical,
  1 orthogonal or one side zero, 2 for ``b = -a``).
* ``cosine``: ``1 - cos(a_B, b_B)`` (our default for FreqKD, whose metric is not published), range
  ``[0, 2]``; defined as 0 when the two band vectors are identical (including both zero).
* ``rel_mse``: ``||a_B - b_B||^2 / (||a_B||^2 + eps)``, a second divergence to check the
  cosine one against (``a`` is the reference, e.g. the teacher).

The bands: ``split="fft"`` uses :func:`~rskd_tutorial.spectral.fft_bands` (``cutoff`` in cycles per
sample, default 0.25 = half of Nyquist); ``split="haar"`` uses a one-level orthonormal Haar DWT,
low = LL, high = the three detail bands (:func:`~rskd_tutorial.spectral.haar_dwt`; ``cutoff`` and
``kind`` are ignored, the Haar split sits at about 0.25 cycles per sample anyway).

:func:`band_energy_concentration` asks *where* a difference map's energy lies (inside boxes, on
edges), overall and per Haar band; chapter 1 uses it on teacher-student FPN differences.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ._common import compute_dtype, no_autocast
from .fourier import fft_bands
from .wavelet import _analysis

__all__ = [
    "band_divergence",
    "layerwise_band_divergence",
    "bootstrap_ci",
    "divergence_ratio",
    "band_energy_concentration",
]

_METRICS = ("nmse", "cosine", "rel_mse")
_SPLITS = ("fft", "haar")


def _split(x: torch.Tensor, cutoff: float, kind: str, split: str, window: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Low and high band of an ``[N, C, H, W]`` working-precision tensor, each flattened to ``[N, -1]``."""
    n = x.shape[0]
    if split == "fft":
        if window == "hann":
            h, w = x.shape[-2:]
            win = torch.hann_window(h, periodic=False, dtype=x.dtype, device=x.device)[:, None] * torch.hann_window(
                w, periodic=False, dtype=x.dtype, device=x.device
            )[None, :]
            x = x * win
        elif window is not None:
            raise ValueError(f"window must be None or 'hann', got {window!r}")
        low, high = fft_bands(x, cutoff, kind)
    else:
        low, (high,) = _analysis(x, 1, "zero")
    return low.reshape(n, -1), high.reshape(n, -1)


def _divergence(a: torch.Tensor, b: torch.Tensor, metric: str, eps: float) -> torch.Tensor:
    if metric == "nmse":
        return ((a - b) ** 2).sum(1) / ((a**2).sum(1) + (b**2).sum(1) + eps)
    if metric == "rel_mse":
        return ((a - b) ** 2).sum(1) / ((a**2).sum(1) + eps)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)
    d = 1.0 - cos
    identical = (a - b).abs().amax(dim=1) == 0
    return torch.where(identical, torch.zeros_like(d), d)


def band_divergence(
    f_a: torch.Tensor,
    f_b: torch.Tensor,
    cutoff: float = 0.25,
    kind: str = "ideal",
    metric: str = "nmse",
    split: str = "fft",
    window: str | None = None,
    eps: float = 1e-12,
) -> dict[str, torch.Tensor]:
    """Per-sample divergence of paired features in the low and the high band.

    ``d_B[i] = nmse(a_{i,B}, b_{i,B})`` (or ``cosine``/``rel_mse``), see the module docstring for
    the equations and ranges.

    Args:
        f_a, f_b: paired features of the same shape ``[N, C, H, W]`` (``[N, H, W]`` is read as
            one channel; more dimensions between N and (H, W) are flattened into channels).
        cutoff, kind: FFT band split (:func:`~rskd_tutorial.spectral.fft_bands`); ignored for Haar.
        metric: ``"nmse"``, ``"cosine"`` or ``"rel_mse"``.
        split: ``"fft"`` or ``"haar"``.
        window: ``None`` or ``"hann"``: multiply both maps by a 2-D Hann window before the FFT,
            which limits the border leakage into the high band (a token grid is not periodic, so
            the FFT sees its border as an edge).
        eps: added to the denominators.

    Returns:
        ``dict(low=Tensor[N], high=Tensor[N])`` in float32 (float64 for float64 inputs), not
        detached. Identical inputs give exactly 0 in both bands for ``nmse``/``rel_mse`` and
        ``cosine``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``; used in chapter 4 (FreqKD).
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if f_a.shape != f_b.shape:
        raise ValueError(f"paired features must have the same shape, got {tuple(f_a.shape)} and {tuple(f_b.shape)}")
    if f_a.dim() < 3:
        raise ValueError(f"features must be [N, C, H, W] or [N, H, W], got shape {tuple(f_a.shape)}")
    n, (h, w) = f_a.shape[0], f_a.shape[-2:]
    work = compute_dtype(f_a)
    with no_autocast(f_a.device):
        a = f_a.to(work).reshape(n, -1, h, w)
        b = f_b.to(work).reshape(n, -1, h, w)
        a_low, a_high = _split(a, cutoff, kind, split, window)
        b_low, b_high = _split(b, cutoff, kind, split, window)
        return {"low": _divergence(a_low, b_low, metric, eps), "high": _divergence(a_high, b_high, metric, eps)}


def layerwise_band_divergence(
    feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor], **kwargs
) -> list[dict[str, torch.Tensor]]:
    """:func:`band_divergence` for each layer of paired feature lists (same samples in every layer).

    ``kwargs`` are passed on (``cutoff``, ``kind``, ``metric``, ``split``, ``window``, ``eps``).
    Returns one ``dict(low=Tensor[N], high=Tensor[N])`` per layer.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``; used in chapter 4 (FreqKD).
    """
    if len(feats_a) != len(feats_b):
        raise ValueError(f"got {len(feats_a)} layers for a and {len(feats_b)} for b")
    return [band_divergence(fa, fb, **kwargs) for fa, fb in zip(feats_a, feats_b)]


def _to_1d_float64(values: Union[torch.Tensor, np.ndarray, Sequence[float]]) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).reshape(-1)
    return torch.as_tensor(np.asarray(values, dtype=np.float64)).reshape(-1)


def _percentiles(boots: torch.Tensor, ci: float) -> tuple[float, float]:
    alpha = (1.0 - ci) / 2.0
    q = torch.quantile(boots, torch.tensor([alpha, 1.0 - alpha], dtype=boots.dtype))
    return float(q[0]), float(q[1])


def _check_boot(n_boot: int, ci: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def bootstrap_ci(
    values: Union[torch.Tensor, np.ndarray, Sequence[float]],
    n_boot: int = 1000,
    ci: float = 0.95,
    generator: torch.Generator | None = None,
    statistic: str = "mean",
) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval of the mean (or median) of ``values``.

    ``estimate = stat(values)``; ``n_boot`` resamples of size ``n`` drawn with replacement give
    ``stat`` values whose ``(1-ci)/2`` and ``(1+ci)/2`` quantiles are ``(lo, hi)`` (Efron &
    Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13). Deterministic for a seeded CPU
    ``torch.Generator``; ``None`` uses torch's global RNG.

    Returns:
        ``(estimate, lo, hi)`` as Python floats.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    _check_boot(n_boot, ci)
    if statistic == "mean":
        stat = lambda t, dim=None: t.mean() if dim is None else t.mean(dim=dim)  # noqa: E731
    elif statistic == "median":
        stat = lambda t, dim=None: torch.quantile(t, 0.5) if dim is None else torch.quantile(t, 0.5, dim=dim)  # noqa: E731
    else:
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    v = _to_1d_float64(values)
    n = v.numel()
    if n == 0:
        raise ValueError("bootstrap_ci got no values")
    idx = torch.randint(0, n, (n_boot, n), generator=generator)
    lo, hi = _percentiles(stat(v[idx], dim=1), ci)
    return float(stat(v)), lo, hi


def _safe_ratio(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    # 0/0 (both bands identical) is defined as 1; x/0 with x > 0 stays +inf.
    r = high / low
    return torch.where((high == 0) & (low == 0), torch.ones_like(r), r)


def divergence_ratio(
    div: Union[Mapping[str, torch.Tensor], Sequence[Mapping[str, torch.Tensor]]],
    n_boot: int = 1000,
    ci: float = 0.95,
    generator: torch.Generator | None = None,
) -> tuple[float, float, float]:
    """High-to-low divergence ratio with a paired bootstrap CI.

    For one layer ``ratio = mean_i(d_high[i]) / mean_i(d_low[i])``. For a list of layers (from
    :func:`layerwise_band_divergence`) ``ratio = (1/|L|) sum_l mean_i(d^l_high) / mean_i(d^l_low)``,
    the per-layer average (the abstract's ratio is averaged over layers). The bootstrap resamples
    *samples* jointly: the same indices for the low and the high band and for every layer, since
    they come from the same images. Percentile interval as in :func:`bootstrap_ci`.

    Degenerate case: when both mean divergences are 0 (e.g. identical inputs) the ratio is defined
    as 1.0 (no band diverges more than the other); a zero low band with a positive high band gives
    ``inf`` (and then an interval that may hold ``inf``/``nan``).

    Returns:
        ``(ratio_estimate, lo, hi)`` as Python floats.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``; used in chapter 4 (FreqKD).
    """
    _check_boot(n_boot, ci)
    layers = [div] if isinstance(div, Mapping) else list(div)
    if not layers:
        raise ValueError("divergence_ratio got no layers")
    low = torch.stack([_to_1d_float64(d["low"]) for d in layers])  # [L, N]
    high = torch.stack([_to_1d_float64(d["high"]) for d in layers])
    if low.shape != high.shape or low.shape[1] == 0:
        raise ValueError(f"low and high divergences must be non-empty and paired, got {tuple(low.shape)} and {tuple(high.shape)}")
    n = low.shape[1]
    estimate = float(_safe_ratio(high.mean(1), low.mean(1)).mean())
    idx = torch.randint(0, n, (n_boot, n), generator=generator)
    boots = _safe_ratio(high[:, idx].mean(-1), low[:, idx].mean(-1)).mean(0)  # [n_boot]
    lo, hi = _percentiles(boots, ci)
    return estimate, lo, hi


def _energy_maps(d: Tensor) -> dict[str, Tensor]:
    """Per-cell energy of ``d`` ``[N, C, H, W]``: ``all`` (``sum_c d^2``, ``[N, H, W]``) and the one-level
    Haar ``low`` (LL) and ``high`` (the three detail bands) on the half-size grid."""
    ll, (high,) = _analysis(d, 1, "zero")
    return {"all": (d**2).sum(1), "low": (ll**2).sum(1), "high": (high**2).sum((1, 2))}


def band_energy_concentration(
    diff: torch.Tensor, masks: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Where the energy of a difference map lies: its share inside each region over the region's area.

    For ``diff`` ``D`` of shape ``[N, C, H, W]`` (e.g. teacher minus student features of one FPN
    level) and region masks ``m`` of shape ``[N, H, W]`` on the same grid, with values in ``[0, 1]``
    (1 inside; a soft mask gives the fraction of each cell inside the region):

    .. math::
        e_{\\text{all}} = \\textstyle\\sum_c D_c^2,\\quad
        e_{\\text{low}} = \\sum_c \\mathrm{LL}(D_c)^2,\\quad
        e_{\\text{high}} = \\sum_c \\sum_{k=1}^{3} D^{(k)}(D_c)^2,
        \\qquad
        \\text{enrichment}_B(m) = \\frac{\\sum e_B\\, m_B / \\sum e_B}{\\operatorname{mean}(m_B)}

    with a one-level Haar DWT in ``mode="zero"`` (DS2D2's split): ``e_low`` and
    ``e_high`` live on the ``ceil(H/2) x ceil(W/2)`` grid, where ``m_B`` is the mask's mean over the
    2x2 cells each coefficient summarises; for ``all``, ``m_B = m``. Sums run over the whole batch.
    Enrichment 1 means the energy is spread like the region's area; 3 means the region holds three
    times its area's share of the energy. The transform is orthonormal, so
    ``sum e_low + sum e_high = sum e_all``.

    Returns:
        ``{mask_name: {"area": mean(m), "all": ..., "low": ..., "high": ...}}`` as Python floats;
        ``nan`` where a band carries no energy or a mask has zero area.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (section 3).
    """
    if diff.dim() != 4:
        raise ValueError(f"diff must be [N, C, H, W], got shape {tuple(diff.shape)}")
    n, _, h, w = diff.shape
    work = compute_dtype(diff)
    with no_autocast(diff.device):
        d = diff.detach().to(work)
        energy = _energy_maps(d)
        out: dict[str, dict[str, float]] = {}
        for name, m in masks.items():
            if tuple(m.shape) != (n, h, w):
                raise ValueError(f"mask {name!r} must have shape {(n, h, w)} like diff's [N, H, W], got {tuple(m.shape)}")
            m = m.detach().to(device=d.device, dtype=work)
            if m.numel() and (m.min() < 0 or m.max() > 1):
                raise ValueError(f"mask {name!r} must have values in [0, 1]")
            m_half = F.avg_pool2d(m[:, None], 2, ceil_mode=True)[:, 0]  # mean over each coefficient's cells
            row = {"area": float(m.mean())}
            # a band holding less than 1e-12 of the map's energy is rounding noise of the transform: no energy
            floor = 1e-12 * float(energy["all"].sum())
            for band, e in energy.items():
                mb = m if band == "all" else m_half
                total, area = float(e.sum()), float(mb.mean())
                row[band] = float((e * mb).sum()) / total / area if total > floor and area > 0 else math.nan
            out[name] = row
    return out
