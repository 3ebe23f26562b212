"""Analysis helpers of chapter 1: band shares, channel alignment, region masks, bootstrap intervals.

Taught in chapter 1, ``book/01_spectral_analysis.ipynb``. The functions the chapter uses to *read*
images and features with the rest of the toolkit:

* :func:`haar_shares` -- the share of an image's energy in each one-level Haar sub-band (the
  transform is orthonormal, so the shares add up to 1, which the function checks);
* :func:`block_mean_map`, :func:`shift_change` -- the up-sampled LL band and the relative change of
  a map under a one-pixel shift (how grid-bound DS2D2's high-frequency map is);
* :func:`flattest_window` -- the most homogeneous window of a reflectivity map (where ENL is
  measured);
* :func:`gram`, :func:`ridge_alignment`, :func:`align` -- the least-squares 1x1 channel adapter
  from student to teacher features (the role of DS2D2's shared 1x1 conv ``phi``), and its
  application;
* :func:`concentration_ci` -- percentile bootstrap intervals over images for
  :func:`~rskd_tutorial.spectral.band_energy_concentration`.

Dependencies: torch and the rest of :mod:`rskd_tutorial.spectral` (a leaf package). The region masks
the chapter reads the residual with (boxes, small boxes, edges) live beside the other box masks, in
:mod:`rskd_tutorial.distill.masks`.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import compute_dtype, no_autocast
from .divergence import _check_boot, _energy_maps, band_energy_concentration
from .wavelet import haar_dwt, haar_subbands

__all__ = [
    "haar_shares",
    "block_mean_map",
    "shift_change",
    "flattest_window",
    "gram",
    "ridge_alignment",
    "align",
    "concentration_ci",
]

_BANDS = ("all", "low", "high")


def haar_shares(x: Tensor) -> dict[str, float]:
    """Share of the energy of ``x`` in each one-level Haar sub-band.

    With the sub-bands of :func:`~rskd_tutorial.spectral.haar_subbands` (``mode="zero"``: an odd
    size gets a zero row/column, which keeps the norm), ``share_k = ||k(x)||^2 / ||x||^2`` for
    ``k`` in LL, LH, HL, HH. The Haar filters are +-1/sqrt(2), so the transform is orthonormal
    (Parseval): the four energies add up to ``||x||^2``. Computed in float64; raises
    ``AssertionError`` if the energies do not add up to within ``1e-9`` of the total.

    Args:
        x: a real tensor ``[H, W]``, ``[C, H, W]`` or ``[N, C, H, W]``; the energies are summed over
            every leading dimension.

    Returns:
        ``{"LL": ..., "LH": ..., "HL": ..., "HH": ...}`` as Python floats that add up to 1.
        Subtract the mean first to study the fluctuations only (the mean alone sits in LL).

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (sections 1 and 3).
    """
    energy = {k: float((v**2).sum()) for k, v in haar_subbands(x.double()).items()}
    total = float((x.double() ** 2).sum())
    if total <= 0:
        raise ValueError("haar_shares needs a map with non-zero energy")
    assert abs(sum(energy.values()) - total) <= 1e-9 * total, (sum(energy.values()), total)  # orthonormal
    return {k: e / total for k, e in energy.items()}


def block_mean_map(t: Tensor) -> Tensor:
    """The LL band as a map: the 2x2 block mean (``LL / 2``), up-sampled to the input size.

    Up-sampled exactly like DS2D2's high-frequency map
    (:func:`~rskd_tutorial.spectral.high_frequency_map`: bilinear, ``align_corners=False``), so the
    two can be compared under a shift (:func:`shift_change`).

    Args:
        t: ``[N, C, H, W]``.

    Returns:
        Tensor ``[N, C, H, W]`` in the input's dtype.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (section 1).
    """
    return F.interpolate(haar_dwt(t)[0] / 2, size=t.shape[-2:], mode="bilinear", align_corners=False)


def shift_change(fn: Callable[[Tensor], Tensor], t: Tensor,
                 shift: tuple[int, int] = (1, 1)) -> tuple[float, Tensor]:
    """Relative change of ``fn``'s output when its input moves by ``shift`` pixels.

    ``moved = roll(fn(roll(t, shift)), -shift)`` (circular shifts over the last two dimensions;
    the output is moved back so that it can be compared cell by cell), and the change is
    ``||moved - fn(t)|| / ||fn(t)||``. 0 for a shift-equivariant ``fn`` (any convolution with
    circular padding); large for maps tied to a 2x2 grid.

    Args:
        fn: a map from ``[..., H, W]`` tensors to tensors of the same shape.
        t: the input, ``[..., H, W]``.
        shift: pixels (rows, columns) to move the input by.

    Returns:
        ``(relative_change, moved)``: a Python float and ``fn`` of the shifted input, shifted back.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (section 1).
    """
    back = (-shift[0], -shift[1])
    moved = torch.roll(fn(torch.roll(t, shift, (-2, -1))), back, (-2, -1))
    return float((moved - fn(t)).norm() / fn(t).norm()), moved


def flattest_window(clean: Tensor, w: int, stride: int = 2) -> tuple[slice, slice]:
    """The ``w x w`` window of ``clean`` with the lowest coefficient of variation ``sigma / mu``.

    Window means and (population) variances come from average pooling with the given ``stride``;
    the first window with the smallest ``sqrt(var) / mean`` wins. On a SAR reflectivity map this is
    the most homogeneous area, where the equivalent number of looks of the speckled image is
    measured (``ENL = L`` there for ``L``-look speckle of a constant reflectivity).

    Args:
        clean: a positive map ``[H, W]`` (e.g. the clean reflectivity ``sigma_0``).
        w: window side (px), at most ``min(H, W)``.
        stride: step between candidate windows (px).

    Returns:
        ``(rows, cols)``: two slices, so that ``clean[rows, cols]`` is the window.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (section 2).
    """
    if clean.dim() != 2:
        raise ValueError(f"clean must be [H, W], got shape {tuple(clean.shape)}")
    if not 1 <= w <= min(clean.shape):
        raise ValueError(f"w must be in [1, {min(clean.shape)}], got {w}")
    mean = F.avg_pool2d(clean[None, None], w, stride=stride)
    var = F.avg_pool2d(clean[None, None] ** 2, w, stride=stride) - mean**2
    i, j = divmod(int((var.clamp_min(0).sqrt() / mean).flatten().argmin()), mean.shape[-1])
    return slice(stride * i, stride * i + w), slice(stride * j, stride * j + w)


def gram(a: Tensor, b: Tensor) -> Tensor:
    """Channel cross-Gram matrix of two feature maps, summed over the batch and positions.

    ``G[c, d] = sum_{n,h,w} a[n, c, h, w] * b[n, d, h, w]``, i.e. ``A^T B`` with every position of
    every image a row of ``A [NHW, C_a]`` and ``B [NHW, C_b]``.

    Args:
        a: ``[N, C_a, H, W]``.
        b: ``[N, C_b, H, W]`` on the same images and grid.

    Returns:
        Tensor ``[C_a, C_b]`` in float64.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (section 3).
    """
    return torch.einsum("nchw,ndhw->cd", a.double(), b.double())


def ridge_alignment(student_feats: Mapping[str, Tensor], teacher_feats: Mapping[str, Tensor],
                    ridge: float = 1e-6) -> Tensor:
    """The least-squares 1x1 channel adapter from student to teacher features, shared by all levels.

    A bias-free 1x1 convolution ``phi`` in front of the student's features is the adapter of
    feature distillation (DS2D2's explicit stream shares one over all FPN levels). Its best value
    over a batch is the ridge-regularised least-squares solution

    .. math::
        \\phi^\\star = \\arg\\min_W \\sum_l \\|F_T^l - F_S^l W\\|^2 + \\lambda\\|W\\|^2
        = (G + \\lambda I)^{-1} H,\\qquad
        G = \\sum_l \\mathrm{gram}(F_S^l, F_S^l),\\quad H = \\sum_l \\mathrm{gram}(F_S^l, F_T^l),

    with ``lambda = ridge * trace(G) / C_s`` (relative to the mean eigenvalue of ``G``, so the
    default only guards against singular ``G``). Solved in float64.

    Args:
        student_feats: ``{level: [N, C_s, H_l, W_l]}``.
        teacher_feats: ``{level: [N, C_t, H_l, W_l]}`` with the same levels, images and grids.
        ridge: relative ridge ``lambda / (trace(G) / C_s)``; 0 for the plain least squares.

    Returns:
        ``phi`` ``[C_s, C_t]`` (float32; float64 for float64 student features), to be applied with
        :func:`align`. When ``F_S = F_T M`` for an invertible mixing ``M`` and ``ridge=0``,
        ``phi = M^{-1}``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (section 3).
    """
    levels = list(teacher_feats)
    if set(levels) != set(student_feats) or not levels:
        raise ValueError(f"student and teacher features must have the same non-empty levels, got "
                         f"{sorted(student_feats)} and {sorted(teacher_feats)}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    G = sum(gram(student_feats[lvl], student_feats[lvl]) for lvl in levels)
    H = sum(gram(student_feats[lvl], teacher_feats[lvl]) for lvl in levels)
    reg = ridge * torch.trace(G) / G.shape[0] * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    return torch.linalg.solve(G + reg, H).to(compute_dtype(student_feats[levels[0]]))


def align(features: Union[Tensor, Mapping[str, Tensor]], phi: Tensor) -> Union[Tensor, dict[str, Tensor]]:
    """Apply a 1x1 channel adapter: ``out[n, d, h, w] = sum_c features[n, c, h, w] * phi[c, d]``.

    Args:
        features: ``[N, C_s, H, W]``, or ``{level: [N, C_s, H_l, W_l]}``.
        phi: ``[C_s, C_t]`` (e.g. from :func:`ridge_alignment`).

    Returns:
        ``[N, C_t, H, W]`` (or a dict of them, same levels), in the dtype of ``features`` and ``phi``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (section 3).
    """
    if isinstance(features, Mapping):
        return {lvl: align(f, phi) for lvl, f in features.items()}
    return torch.einsum("nchw,cd->ndhw", features, phi)


def _per_image_terms(diff: Tensor, masks: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, dict[str, tuple[Tensor, Tensor]]], int]:
    """Per-image sums behind :func:`band_energy_concentration`, in float64.

    Returns ``(total, terms, cells)``: ``total[band]`` ``[N]`` = sum of ``e_band`` per image;
    ``terms[name][band] = (inside [N], area [N])`` with ``inside = sum e_band * m_band`` and
    ``area = sum m_band`` per image; ``cells[band]`` the grid cells per image of that band.
    """
    n, _, h, w = diff.shape
    work = compute_dtype(diff)
    with no_autocast(diff.device):
        d = diff.detach().to(work)
        energy = _energy_maps(d)
        total = {band: e.flatten(1).sum(1).double().cpu() for band, e in energy.items()}
        cells = {band: e[0].numel() for band, e in energy.items()}
        terms: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
        for name, m in masks.items():
            m = m.detach().to(device=d.device, dtype=work)
            m_half = F.avg_pool2d(m[:, None], 2, ceil_mode=True)[:, 0]
            terms[name] = {}
            for band, e in energy.items():
                mb = m if band == "all" else m_half
                terms[name][band] = ((e * mb).flatten(1).sum(1).double().cpu(), mb.flatten(1).sum(1).double().cpu())
    return total, terms, cells


def concentration_ci(residual: Tensor, masks: Mapping[str, Tensor], n_boot: int = 1000, ci: float = 0.95,
                     generator: torch.Generator | None = None) -> dict[str, dict[str, tuple[float, float, float]]]:
    """:func:`~rskd_tutorial.spectral.band_energy_concentration` with percentile bootstrap intervals over images.

    The enrichment of band ``B`` in region ``m``, ``(sum e_B m_B / sum e_B) / mean(m_B)``, sums over
    the whole batch, so its sampling unit is the image: each of ``n_boot`` resamples draws ``N``
    images with replacement (the same draws for every region and band, which are paired) and
    recomputes the enrichment from the per-image sums; ``(lo, hi)`` are the ``(1-ci)/2`` and
    ``(1+ci)/2`` quantiles of the resampled values (percentile interval, Efron & Tibshirani,
    *An Introduction to the Bootstrap*, 1993, ch. 13). A resample where the region has zero area
    or the band no energy gives no value and is left out of the quantiles (an interval from the
    resamples that do contain the region). Deterministic for a seeded CPU ``torch.Generator``.

    Args:
        residual: ``[N, C, H, W]`` difference map (e.g. teacher minus aligned student features).
        masks: ``{name: [N, H, W]}`` with values in ``[0, 1]`` (e.g. from :func:`region_masks`).
        n_boot: number of resamples (>= 1).
        ci: confidence level in (0, 1).
        generator: random generator of the resampling; ``None`` uses torch's global RNG.

    Returns:
        ``{name: {"all": (value, lo, hi), "low": ..., "high": ...}}`` as Python floats; ``value`` is
        exactly ``band_energy_concentration(residual, masks)[name][band]``, ``nan`` (with a ``nan``
        interval) where that is ``nan``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (section 3).
    """
    _check_boot(n_boot, ci)
    point = band_energy_concentration(residual, masks)  # validates shapes and mask values
    total, terms, cells = _per_image_terms(residual, masks)
    n = residual.shape[0]
    idx = torch.randint(0, n, (n_boot, n), generator=generator)
    counts = torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))
    boot_total = {band: counts @ t for band, t in total.items()}  # [n_boot]
    floor = 1e-12 * boot_total["all"]  # as band_energy_concentration: below this a band holds no energy
    q = torch.tensor([(1.0 - ci) / 2.0, (1.0 + ci) / 2.0], dtype=torch.float64)
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name, per_band in terms.items():
        out[name] = {}
        for band in _BANDS:
            inside, area = per_band[band]
            value = point[name][band]
            tot, mean_area = boot_total[band], (counts @ area) / (n * cells[band])
            boots = (counts @ inside) / tot / mean_area
            valid = (tot > floor) & (mean_area > 0)
            if math.isnan(value) or not bool(valid.any()):
                out[name][band] = (value, math.nan, math.nan)
                continue
            lo, hi = torch.quantile(boots[valid], q).tolist()
            out[name][band] = (value, lo, hi)
    return out
