"""Tests for rskd_tutorial.spectral.fourier (the FFT band split used for FreqKD)."""

from __future__ import annotations

import math

import pytest
import torch

from rskd_tutorial.spectral import band_energy, band_mask, fft_bands, radial_power_spectrum


def _checkerboard(h: int, w: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((-1.0) ** (i + j)).float()


def _cosine(h: int, w: int, fx: float) -> torch.Tensor:
    j = torch.arange(w, dtype=torch.float32)
    return torch.cos(2 * math.pi * fx * j).expand(h, w).clone()


@pytest.mark.parametrize("kind", ["ideal", "gaussian"])
def test_bands_sum_to_input(kind: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 10)
    low, high = fft_bands(x, 0.2, kind)
    assert low.shape == x.shape and high.shape == x.shape
    torch.testing.assert_close(low + high, x, atol=1e-6, rtol=0)
    assert low.abs().sum() > 0 and high.abs().sum() > 0


def test_ideal_bands_are_orthogonal_in_energy() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    low, high = fft_bands(x, 0.2)
    torch.testing.assert_close((x**2).sum(), (low**2).sum() + (high**2).sum(), rtol=1e-12, atol=0)
    assert abs((low * high).sum().item()) < 1e-10


@pytest.mark.parametrize("kind,cutoff", [("ideal", 0.0), ("ideal", 0.25), ("gaussian", 0.1)])
def test_constant_map_is_all_low(kind: str, cutoff: float) -> None:
    x = torch.full((1, 2, 8, 6), 4.0)
    low, high = fft_bands(x, cutoff, kind)
    torch.testing.assert_close(low, x, atol=1e-5, rtol=0)
    assert high.abs().max().item() < 1e-5


@pytest.mark.parametrize("cutoff", [0.1, 0.25, 0.49])
def test_checkerboard_is_all_high(cutoff: float) -> None:
    x = _checkerboard(8, 8)
    low, high = fft_bands(x, cutoff)
    assert low.abs().max().item() < 1e-5
    torch.testing.assert_close(high, x, atol=1e-5, rtol=0)
    # Gaussian low-pass gain at rho = sqrt(0.5): exp(-0.5 / (2 cutoff^2))
    low_g, _ = fft_bands(x, cutoff, "gaussian")
    torch.testing.assert_close(low_g, math.exp(-0.5 / (2 * cutoff**2)) * x, atol=1e-5, rtol=0)


def test_cosine_goes_to_the_band_of_its_frequency() -> None:
    x = _cosine(16, 16, 0.125)
    low, high = fft_bands(x, 0.2)
    torch.testing.assert_close(low, x, atol=1e-5, rtol=0)
    low, high = fft_bands(x, 0.1)
    torch.testing.assert_close(high, x, atol=1e-5, rtol=0)


def test_band_mask_values() -> None:
    m = band_mask(8, 8, 0.25)
    assert m.shape == (8, 8)
    assert m[0, 0] == 1  # DC
    assert m[0, 2] == 1 and m[0, 3] == 0  # fx = 0.25 in, 0.375 out
    g = band_mask(8, 8, 0.25, "gaussian")
    assert g[0, 2].item() == pytest.approx(math.exp(-0.5))  # rho == cutoff
    shifted = band_mask(8, 8, 0.25, shift=True)
    assert shifted[4, 4] == 1 and torch.equal(shifted, torch.fft.fftshift(m))
    with pytest.raises(ValueError):
        band_mask(8, 8, -0.1)
    with pytest.raises(ValueError):
        band_mask(8, 8, 0.0, "gaussian")
    with pytest.raises(ValueError):
        band_mask(8, 8, 0.2, "butterworth")


def test_half_precision_in_and_out() -> None:
    x = torch.randn(1, 2, 6, 10).half()
    low, high = fft_bands(x, 0.25)
    assert low.dtype == torch.float16 and high.dtype == torch.float16


def test_radial_power_spectrum_white_noise_and_tone() -> None:
    gen = torch.Generator().manual_seed(2)
    noise = 2.0 * torch.randn(8, 2, 32, 32, generator=gen)
    freqs, power = radial_power_spectrum(noise)
    assert freqs.shape == power.shape == (16,)
    assert freqs[0] > 0 and torch.all(freqs[1:] > freqs[:-1]) and freqs[-1] < 0.5
    # unitary DFT: white noise of variance 4 has power 4 at every frequency
    assert power[1:].mean().item() == pytest.approx(4.0, rel=0.05)
    assert power.min().item() > 2.5 and power.max().item() < 5.5
    freqs, power = radial_power_spectrum(_cosine(32, 32, 0.25))  # [h, w] input
    assert abs(freqs[power.argmax()].item() - 0.25) <= 1 / 32


def test_band_energy_fractions() -> None:
    torch.manual_seed(3)
    low, high = band_energy(torch.randn(2, 3, 16, 16), 0.25)
    assert low + high == pytest.approx(1.0)
    assert 0.1 < low < 0.3  # ideal disc of radius 0.25 covers pi/16 ~ 0.196 of the spectrum
    assert band_energy(torch.ones(4, 4), 0.25) == pytest.approx((1.0, 0.0), abs=1e-6)
    assert band_energy(_checkerboard(8, 8), 0.25) == pytest.approx((0.0, 1.0), abs=1e-6)
    assert all(math.isnan(v) for v in band_energy(torch.zeros(4, 4), 0.25))
