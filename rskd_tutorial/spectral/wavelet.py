"""Haar wavelet tools: DWT/IDWT, named sub-bands, DS2D2's high-frequency map, DIPKD's denoiser.

Taught in chapter 1, ``book/01_spectral_analysis.ipynb`` (used again in chapters 2 and 3).

Conventions. For every non-overlapping 2x2 block
``[[a, b], [c, d]]`` with top-left corner at ``(2i, 2j)``::

    LL = (a + b + c + d) / 2      D1 = LH = (a + b - c - d) / 2
    D2 = HL = (a - b + c - d) / 2 D3 = HH = (a - b - c + d) / 2

The filters are +-1/sqrt(2), so the transform is orthonormal: for even sizes
``||x||^2 = ||LL||^2 + ||D1||^2 + ||D2||^2 + ||D3||^2``. These are exactly the coefficients of
``pytorch_wavelets.DWTForward(wave='haar')`` and of ``pywt.dwt2(x, 'haar')`` (``pywt``'s
``(cH, cV, cD)`` are ``(D1, D2, D3)``).

Odd sizes. ``mode="zero"`` (DS2D2's choice) appends one zero row at the bottom / one zero column
at the right before blocking; ``mode="symmetric"`` (PyWavelets' default, DIPKD's choice) appends
a copy of the last row / column, which is PyWavelets' half-sample symmetric extension for a
length-2 filter. Either way each level has ``ceil(H/2) x ceil(W/2)`` coefficients.

Implementation note: the padding is done here, explicitly and differentiably, and the cached
pytorch-wavelets modules then only ever see even sizes. pytorch-wavelets' own backward pass for
``mode='symmetric'`` crops the gradient of the padded sample instead of adding it back onto the
last row, so its gradients are wrong on the border of odd-sized maps; with explicit padding the
autograd of ``F.pad`` is exact. Forward values are identical to ``DWTForward(J, 'haar', mode)``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

with warnings.catch_warnings():  # pytorch-wavelets 1.3 imports the deprecated pkg_resources
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from pytorch_wavelets import DWTForward, DWTInverse

from ._common import as_4d, compute_dtype, no_autocast, output_dtype

__all__ = [
    "haar_dwt",
    "haar_idwt",
    "haar_subbands",
    "high_frequency_map",
    "wavelet_denoise",
    "max_haar_level",
]

_MODES = ("zero", "symmetric")
_PAD_MODE = {"zero": "constant", "symmetric": "replicate"}


@functools.lru_cache(maxsize=None)
def _dwt_module(device: torch.device, dtype: torch.dtype) -> DWTForward:
    # One single-level module per (device, dtype): padding (the only mode-dependent step for
    # Haar) is done outside, and levels are a loop, so this key covers every (levels, mode).
    return _exact_haar(DWTForward(J=1, wave="haar", mode="zero"), device, dtype)


@functools.lru_cache(maxsize=None)
def _idwt_module(device: torch.device, dtype: torch.dtype) -> DWTInverse:
    return _exact_haar(DWTInverse(wave="haar", mode="zero"), device, dtype)


def _exact_haar(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    # pytorch-wavelets stores its filters in float32; re-set the taps to +-1/sqrt(2) in the
    # working dtype so float64 inputs get a float64-exact (orthonormal) transform.
    module = module.to(device=device, dtype=dtype)
    with torch.no_grad():
        for buf in module.buffers():
            buf.copy_(torch.sign(buf) * torch.tensor(0.5, dtype=torch.float64).sqrt().to(dtype))
    return module


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def _analysis(x: torch.Tensor, levels: int, mode: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Multi-level Haar analysis of an NCHW tensor already in its working dtype, autocast off."""
    dwt = _dwt_module(x.device, x.dtype)
    ll, highs = x, []
    for _ in range(levels):
        ph, pw = ll.shape[-2] % 2, ll.shape[-1] % 2
        if ph or pw:
            ll = F.pad(ll, (0, pw, 0, ph), mode=_PAD_MODE[mode])
        ll, (high,) = dwt(ll)
        highs.append(high)
    return ll, highs


def _synthesis(ll: torch.Tensor, highs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Multi-level Haar synthesis; returns the padded level-1 size ``2*h1 x 2*w1``.

    ``DWTInverse`` drops the extra last row/column of a coarser LL that came from padding.
    """
    if len(highs) == 0:
        return ll
    return _idwt_module(ll.device, ll.dtype)((ll, list(highs)))


def haar_dwt(x: torch.Tensor, levels: int = 1, mode: str = "zero") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Multi-level 2-D Haar DWT (conventions in the module docstring; DS2D2 uses one level, DIPKD three).

    Args:
        x: real tensor ``[N,C,H,W]`` (``[C,H,W]`` and ``[H,W]`` are accepted; outputs then drop the
            same leading dimensions).
        levels: number of decomposition levels (>= 0).
        mode: ``"zero"`` (append a zero row/column to odd sizes, DS2D2) or ``"symmetric"``
            (append a copy of the last row/column, PyWavelets' default, DIPKD).

    Returns:
        ``(ll, highs)`` like ``pytorch_wavelets.DWTForward``: ``ll`` is the coarsest approximation
        ``[N,C,h_J,w_J]``; ``highs[j]`` is ``[N,C,3,h_j,w_j]`` for level ``j+1`` (finest first),
        holding D1, D2, D3 = LH, HL, HH, with ``h_j = ceil(h_{j-1}/2)``. Computed in float32
        (float64 stays float64) with autocast off, returned in the input's dtype.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    _check_mode(mode)
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    x4, restore = as_4d(x)
    out_dtype = output_dtype(x)
    with no_autocast(x4.device):
        ll, highs = _analysis(x4.to(compute_dtype(x4)), int(levels), mode)
    return restore(ll.to(out_dtype)), [restore(h.to(out_dtype)) for h in highs]


def haar_idwt(
    ll: torch.Tensor,
    highs: Sequence[torch.Tensor],
    mode: str = "zero",
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Inverse of :func:`haar_dwt` (Haar synthesis).

    Args:
        ll: coarsest approximation as returned by :func:`haar_dwt`.
        highs: detail bands, finest level first, each ``[..., 3, h_j, w_j]``.
        mode: the mode used in the analysis. For Haar the synthesis is the same for both modes
            (the padded row/column is simply reconstructed), so it is only validated.
        size: ``(H, W)`` of the original input. The synthesis returns the padded size
            ``2*ceil(H/2) x 2*ceil(W/2)``; with ``size`` given the result is cropped to ``H x W``,
            which is then an exact reconstruction for both modes.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    _check_mode(mode)
    ll4, restore = as_4d(ll, "ll")
    nd_extra = 4 - ll.dim()
    highs4 = []
    for h in highs:
        if h.dim() != ll.dim() + 1:
            raise ValueError(f"each high band must have one more dimension than ll; got {tuple(h.shape)} for ll {tuple(ll.shape)}")
        highs4.append(h.reshape((1,) * nd_extra + tuple(h.shape)))
    out_dtype = output_dtype(ll)
    work = compute_dtype(ll4)
    with no_autocast(ll4.device):
        y = _synthesis(ll4.to(work), [h.to(work) for h in highs4])
    if size is not None:
        hh, ww = int(size[0]), int(size[1])
        if hh > y.shape[-2] or ww > y.shape[-1]:
            raise ValueError(f"size {tuple(size)} is larger than the reconstruction {tuple(y.shape[-2:])}")
        y = y[..., :hh, :ww]
    return restore(y.to(out_dtype))


def haar_subbands(x: torch.Tensor, mode: str = "zero") -> dict[str, torch.Tensor]:
    """One-level Haar sub-bands by name, for plots: ``dict(LL=..., LH=..., HL=..., HH=...)``.

    ``LH = D1 = (a+b-c-d)/2`` (top row minus bottom row: responds to horizontal edges),
    ``HL = D2 = (a-b+c-d)/2`` (left minus right: vertical edges), ``HH = D3 = (a-b-c+d)/2``
    (diagonal), ``LL = (a+b+c+d)/2`` (see the module docstring). Each has the input's
    leading dimensions and spatial size ``ceil(H/2) x ceil(W/2)``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    ll, (high,) = haar_dwt(x, levels=1, mode=mode)
    d1, d2, d3 = high.unbind(dim=-3)
    return {"LL": ll, "LH": d1, "HL": d2, "HH": d3}


def high_frequency_map(x: torch.Tensor) -> torch.Tensor:
    """DS2D2's high-frequency map (official code: the summed detail bands, up-sampled).

    .. math::
        \\mathcal H(F) = \\operatorname{Up}^{\\text{bilinear, align\\_corners=False}}_{H\\times W}
        \\Big(\\sum_{k=1}^{3} D^{(k)}(F)\\Big)

    with a one-level Haar DWT in ``mode="zero"``. By the block formulas of the module docstring,
    for every 2x2 block ``[[a, b], [c, d]]``

    .. math::
        D^{(1)} + D^{(2)} + D^{(3)} = \\tfrac12(3a - b - c - d) = 2\\,(a - \\bar x_{2\\times2}) = 2a - \\mathrm{LL},

    i.e. twice the deviation of the block's *top-left* pixel from the block mean, then bilinearly
    up-sampled. The sign convention matters: another library's signs select another corner.
    For odd sizes the zero-padded row/column takes part in the last blocks, as in DS2D2.

    Args:
        x: ``[N,C,H,W]`` (or ``[C,H,W]``, ``[H,W]``).

    Returns:
        Tensor of the input's shape and dtype (computed in float32, autocast off).

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``; used in chapter 2 (DS2D2).
    """
    x4, restore = as_4d(x)
    out_dtype = output_dtype(x)
    with no_autocast(x4.device):
        _, (high,) = _analysis(x4.to(compute_dtype(x4)), 1, "zero")
        hf = F.interpolate(high.sum(dim=2), size=x4.shape[-2:], mode="bilinear", align_corners=False)
    return restore(hf.to(out_dtype))


def max_haar_level(h: int, w: int) -> int:
    """``floor(log2(min(h, w)))``: the deepest clean Haar level (PyWavelets' ``dwt_max_level``)."""
    m = min(int(h), int(w))
    return max(m.bit_length() - 1, 0) if m > 0 else 0


_warned_levels: set[tuple[int, int, int]] = set()


def wavelet_denoise(
    x: torch.Tensor,
    levels: int = 3,
    threshold_scale: float = 0.5,
    mode: str = "symmetric",
    odd_size: str = "crop",
) -> torch.Tensor:
    """Wavelet soft-threshold denoiser of DIPKD's SNS (the released code's, made differentiable).

    DIPKD Eq. 7 writes the SNS output as ``F' = f_wld(A^C * A^S * F)`` with ``f_wld`` a
    wavelet-domain denoiser; the released code makes it this one. Per image ``b`` (all channels
    together):

    1. ``levels``-level Haar DWT (``mode`` padding, default ``"symmetric"`` like
       ``pywt.wavedec2(X, 'db1', level=3)``).
    2. For each level ``j``: ``t_j = threshold_scale * std(cH_j)``, the population std (ddof=0)
       over all channels and positions of that level's first detail band ``cH_j = D1_j``; the
       same ``t_j`` soft-thresholds all three detail bands,
       ``S_t(d) = sign(d) * max(|d| - t_j, 0)``. The approximation is untouched.
    3. Inverse DWT.

    The result is differentiable with respect to ``x`` (gradient 1 through kept coefficients,
    0 through zeroed ones); the thresholds are computed under stop-gradient, ``t_j = sg[...]``.
    With ``threshold_scale=0`` it is the identity.

    Odd sizes: the synthesis returns ``2*ceil(H/2) x 2*ceil(W/2)``.
    ``odd_size="crop"`` (default) keeps the first ``H x W``: the padded signal is reconstructed
    exactly, so cropping gives perfect reconstruction at zero threshold. ``odd_size="bilinear"``
    resizes (``align_corners=False``) like the official NumPy code, which is then not the
    identity even at zero threshold; use it to reproduce the official
    numbers.

    Small maps: if ``levels > floor(log2(min(H, W)))`` the number of
    levels is reduced to that value with a one-time warning per (levels, H, W); maps smaller
    than 2x2 are returned unchanged. (PyWavelets would instead warn and decompose anyway, with
    heavy boundary effects.)

    Args:
        x: ``[N,C,H,W]`` (``[C,H,W]`` is one image, ``[H,W]`` one single-channel image).
        levels: requested number of levels (DIPKD: 3).
        threshold_scale: factor on ``std(cH_j)`` (DIPKD: 0.5).
        mode: ``"symmetric"`` (DIPKD) or ``"zero"``.
        odd_size: ``"crop"`` or ``"bilinear"``.

    Returns:
        Denoised tensor, same shape and dtype as ``x`` (computed in float32, autocast off).

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``; used in chapter 3 (DIPKD).
    """
    _check_mode(mode)
    if odd_size not in ("crop", "bilinear"):
        raise ValueError(f"odd_size must be 'crop' or 'bilinear', got {odd_size!r}")
    if threshold_scale < 0:
        raise ValueError(f"threshold_scale must be >= 0, got {threshold_scale}")
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    x4, restore = as_4d(x)
    H, W = x4.shape[-2:]
    allowed = max_haar_level(H, W)
    if levels > allowed:
        key = (int(levels), int(H), int(W))
        if key not in _warned_levels:
            _warned_levels.add(key)
            warnings.warn(
                f"wavelet_denoise: {levels} Haar levels requested on a {H}x{W} map; "
                f"using floor(log2(min(H, W))) = {allowed} levels",
                stacklevel=2,
            )
        levels = allowed
    if levels == 0:
        return x

    out_dtype = output_dtype(x)
    n = x4.shape[0]
    with no_autocast(x4.device):
        ll, highs = _analysis(x4.to(compute_dtype(x4)), int(levels), mode)
        kept = []
        for high in highs:
            t = threshold_scale * high[:, :, 0].detach().reshape(n, -1).std(dim=1, correction=0)
            t = t.view(n, 1, 1, 1, 1)
            # d - clamp(d, -t, t) == sign(d) * max(|d| - t, 0), with a clean gradient.
            kept.append(high - torch.clamp(high, min=-t, max=t))
        y = _synthesis(ll, kept)
        if y.shape[-2:] != (H, W):
            if odd_size == "crop":
                y = y[..., :H, :W]
            else:
                y = F.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)
    return restore(y.to(out_dtype))
