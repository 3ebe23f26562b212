"""Spectral toolkit: Haar DWT, FFT band splits, speckle statistics and band-wise divergence.

Taught in chapter 1, ``book/01_spectral_analysis.ipynb``. A leaf of the package: it depends only
on torch, numpy, pytorch_wavelets and PyWavelets.

* :mod:`.wavelet`    -- ``haar_dwt``/``haar_idwt``, ``haar_subbands``,
  DS2D2's ``high_frequency_map``, DIPKD's ``wavelet_denoise``
* :mod:`.fourier`    -- ``fft_bands`` (FreqKD's split), ``band_mask``, ``radial_power_spectrum``,
  ``band_energy``
* :mod:`.speckle`    -- ``simulate_speckle``, ``enl``, ``ssi``, ``smpi``, ``feature_speckle_map``,
  ``fft_lowpass_denoise``
* :mod:`.divergence` -- ``band_divergence``, ``layerwise_band_divergence``, ``bootstrap_ci``,
  ``divergence_ratio``, ``band_energy_concentration``
* :mod:`.analysis`   -- chapter 1's analysis helpers: ``haar_shares``, ``block_mean_map``,
  ``shift_change``, ``flattest_window``, ``gram``, ``ridge_alignment``, ``align``, ``concentration_ci``
"""

from .analysis import (
    align,
    block_mean_map,
    concentration_ci,
    flattest_window,
    gram,
    haar_shares,
    ridge_alignment,
    shift_change,
)
from .divergence import (
    band_divergence,
    band_energy_concentration,
    bootstrap_ci,
    divergence_ratio,
    layerwise_band_divergence,
)
from .fourier import band_energy, band_mask, fft_bands, radial_frequency, radial_power_spectrum
from .speckle import enl, feature_speckle_map, fft_lowpass_denoise, simulate_speckle, smpi, ssi
from .wavelet import haar_dwt, haar_idwt, haar_subbands, high_frequency_map, max_haar_level, wavelet_denoise

__all__ = [
    "haar_dwt",
    "haar_idwt",
    "haar_subbands",
    "high_frequency_map",
    "wavelet_denoise",
    "max_haar_level",
    "fft_bands",
    "band_mask",
    "radial_frequency",
    "radial_power_spectrum",
    "band_energy",
    "simulate_speckle",
    "enl",
    "ssi",
    "smpi",
    "feature_speckle_map",
    "fft_lowpass_denoise",
    "band_divergence",
    "layerwise_band_divergence",
    "bootstrap_ci",
    "divergence_ratio",
    "band_energy_concentration",
    "haar_shares",
    "block_mean_map",
    "shift_change",
    "flattest_window",
    "gram",
    "ridge_alignment",
    "align",
    "concentration_ci",
]
