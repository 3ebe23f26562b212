"""SAR speckle: simulation, speckle-suppression metrics (ENL, SSI, SMPI), an FFT baseline denoiser.

Taught in chapter 1, ``book/01_spectral_analysis.ipynb``; used in chapter 3 (DIPKD Fig. 3).

The metrics follow their published definitions (cited per function below; DIPKD names them in
Fig. 3 without defining them). ``x`` is the noisy (original) map, ``y`` the filtered
one; ``mu`` and ``sigma`` are the mean and the **population** standard deviation (ddof=0) over the
region (or whole map) passed in:

* ENL  = ``mu_y^2 / sigma_y^2`` (equivalent number of looks; higher = smoother). For fully
  developed L-look intensity speckle over a homogeneous area ENL = L (Oliver & Quegan,
  *Understanding Synthetic Aperture Radar Images*, 1998).
* SSI  = ``(sigma_y / mu_y) / (sigma_x / mu_x)`` (speckle suppression index, lower = better;
  Sheng & Xia, IGARSS 1996).
* SMPI = ``(1 + |mu_x - mu_y|) * sigma_y / sigma_x`` (speckle suppression and mean preservation
  index, lower = better; Shamsoddini & Trinder, ISPRS TC VII Symposium 2010).

The metrics accept torch tensors or NumPy arrays and return Python floats (computed in float64).
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from .fourier import fft_bands

__all__ = ["simulate_speckle", "enl", "ssi", "smpi", "feature_speckle_map", "fft_lowpass_denoise"]

ArrayLike = Union[torch.Tensor, np.ndarray]


def _stats(a: ArrayLike) -> tuple[float, float]:
    """Mean and population std (ddof=0) in float64."""
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        raise ValueError("empty region")
    return float(a.mean()), float(a.std(ddof=0))


def simulate_speckle(
    intensity: ArrayLike,
    looks: float,
    generator: torch.Generator | np.random.Generator | int | None = None,
) -> ArrayLike:
    """Multiply an intensity image by fully developed L-look speckle.

    ``I_noisy = I * n`` with ``n ~ Gamma(shape=L, scale=1/L)`` i.i.d. per pixel, so
    ``E[n] = 1`` and ``Var[n] = 1/L`` (Goodman, JOSA 1976; Oliver & Quegan 1998; the package's
    synthetic SAR scenes use this multiplicative Gamma speckle with L looks). This models
    *intensity* (power) images; for amplitude images take the square root of the result.

    Args:
        intensity: non-negative clean intensity, a torch tensor or a NumPy array (any shape).
        looks: number of looks ``L > 0`` (need not be an integer).
        generator: for a tensor input a ``torch.Generator`` (its state advances; the draw uses a
            NumPy Gamma sampler seeded from it), for an array input a ``np.random.Generator`` or an
            int seed; ``None`` uses fresh randomness.

    Returns:
        The speckled image, same type, shape, device and (floating) dtype as ``intensity``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    if not looks > 0:
        raise ValueError(f"looks must be > 0, got {looks}")
    if isinstance(intensity, torch.Tensor):
        if generator is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        elif isinstance(generator, torch.Generator):
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        else:
            raise TypeError("for a torch tensor input, generator must be a torch.Generator or None")
        rng = np.random.default_rng(seed)
        noise = rng.gamma(shape=looks, scale=1.0 / looks, size=tuple(intensity.shape))
        dtype = intensity.dtype if intensity.is_floating_point() else torch.float32
        return intensity.to(dtype) * torch.from_numpy(noise).to(device=intensity.device, dtype=dtype)
    arr = np.asarray(intensity)
    if isinstance(generator, torch.Generator):
        raise TypeError("for a NumPy input, generator must be a np.random.Generator, an int seed or None")
    rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
    noise = rng.gamma(shape=looks, scale=1.0 / looks, size=arr.shape)
    return (arr * noise).astype(dtype, copy=False)


def enl(region: ArrayLike) -> float:
    """Equivalent number of looks ``ENL = mu^2 / sigma^2`` (population variance, ddof=0).

    Use a homogeneous region: there, L-look intensity speckle gives ENL = L (Oliver & Quegan
    1998). A constant region returns ``inf``.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    mu, sd = _stats(region)
    if sd == 0.0:
        return math.inf
    return mu**2 / sd**2


def ssi(noisy: ArrayLike, filtered: ArrayLike) -> float:
    """Speckle suppression index ``SSI = (sigma_f / mu_f) / (sigma_n / mu_n)`` (Sheng & Xia 1996).

    Ratio of the coefficients of variation after and before filtering; lower is better (< 1 means
    speckle was reduced). DIPKD's Fig. 3 plots ``1/SSI``. Population std (ddof=0).

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    mu_n, sd_n = _stats(noisy)
    mu_f, sd_f = _stats(filtered)
    if sd_n == 0.0 or mu_n == 0.0 or mu_f == 0.0:
        raise ValueError("ssi needs non-zero means and a noisy map with non-zero variance")
    return (sd_f / mu_f) / (sd_n / mu_n)


def smpi(noisy: ArrayLike, filtered: ArrayLike) -> float:
    """Speckle suppression and mean preservation index ``SMPI = (1 + |mu_n - mu_f|) * sigma_f / sigma_n``.

    Shamsoddini & Trinder 2010; lower is better: it rewards variance reduction and penalises a
    shift of the mean. DIPKD's Fig. 3 plots ``1/SMPI``. Population std (ddof=0). Note the mean
    difference is in the map's own units, so SMPI depends on scale.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    mu_n, sd_n = _stats(noisy)
    mu_f, sd_f = _stats(filtered)
    if sd_n == 0.0:
        raise ValueError("smpi needs a noisy map with non-zero variance")
    return (1.0 + abs(mu_n - mu_f)) * sd_f / sd_n


def feature_speckle_map(feat: ArrayLike) -> ArrayLike:
    """Channel-mean magnitude ``V = (1/C) sum_c |F_c|`` of a feature map (our choice).

    The same quantity SNS uses for its spatial attention (DIPKD Eq. 3); it turns a
    ``[N, C, H, W]`` (or ``[C, H, W]``) feature into ``[N, H, W]`` (or ``[H, W]``) non-negative
    maps on which ENL/SSI/SMPI are computed per image and then averaged.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    if feat.ndim not in (3, 4):
        raise ValueError(f"feature_speckle_map expects [C,H,W] or [N,C,H,W], got shape {tuple(feat.shape)}")
    if isinstance(feat, torch.Tensor):
        return feat.abs().mean(dim=-3)
    return np.abs(np.asarray(feat)).mean(axis=-3)


def fft_lowpass_denoise(x: torch.Tensor, cutoff: float, kind: str = "ideal") -> torch.Tensor:
    """FFT low-pass baseline denoiser: the low band of :func:`~rskd_tutorial.spectral.fft_bands`.

    ``x_L = Re F^{-1}(M_L * F(x))`` with ``M_L = 1[rho <= cutoff]`` (or the Gaussian mask). The
    chapter compares it with wavelet soft-thresholding (DIPKD Fig. 3a): it removes speckle and
    edges alike, while the wavelet denoiser keeps large coefficients wherever they are.

    Taught in chapter 1, ``book/01_spectral_analysis.ipynb``.
    """
    return fft_bands(x, cutoff, kind)[0]
