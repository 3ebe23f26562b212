"""Tests for rskd_tutorial.spectral.speckle (speckle simulation and the ENL / SSI / SMPI metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rskd_tutorial.spectral import (
    enl,
    feature_speckle_map,
    fft_bands,
    fft_lowpass_denoise,
    simulate_speckle,
    smpi,
    ssi,
)


@pytest.mark.parametrize("looks", [1, 4, 16])
def test_enl_of_simulated_speckle_recovers_looks(looks: int) -> None:
    flat = torch.full((256, 256), 3.0)
    noisy = simulate_speckle(flat, looks, generator=torch.Generator().manual_seed(looks))
    assert enl(noisy) == pytest.approx(looks, rel=0.05)


def test_simulate_speckle_types_moments_and_determinism() -> None:
    flat = np.ones((128, 128), dtype=np.float32)
    a = simulate_speckle(flat, 2.5, generator=0)
    b = simulate_speckle(flat, 2.5, generator=np.random.default_rng(0))
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == flat.shape
    np.testing.assert_array_equal(a, b)
    assert a.mean() == pytest.approx(1.0, abs=0.02)
    assert a.var() == pytest.approx(1 / 2.5, rel=0.05)
    t1 = simulate_speckle(torch.ones(4, 5, dtype=torch.float64), 4, generator=torch.Generator().manual_seed(1))
    t2 = simulate_speckle(torch.ones(4, 5, dtype=torch.float64), 4, generator=torch.Generator().manual_seed(1))
    assert isinstance(t1, torch.Tensor) and t1.dtype == torch.float64 and t1.shape == (4, 5)
    assert torch.equal(t1, t2) and (t1 > 0).all()
    with pytest.raises(ValueError):
        simulate_speckle(flat, 0)


def test_enl_uses_population_variance() -> None:
    region = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, population variance 1.25
    assert enl(np.array(region)) == pytest.approx(5.0)
    assert enl(torch.tensor(region)) == pytest.approx(5.0)
    assert isinstance(enl(torch.tensor(region)), float)
    assert enl(np.full(5, 2.0)) == math.inf


def test_ssi_and_smpi_by_hand() -> None:
    noisy = np.array([1.0, 3.0])  # mean 2, std 1
    filt = np.array([1.5, 2.5])  # mean 2, std 0.5
    assert ssi(noisy, filt) == pytest.approx((0.5 / 2) / (1 / 2))  # 0.5
    assert smpi(noisy, filt) == pytest.approx((1 + 0) * 0.5 / 1)  # 0.5
    shifted = torch.tensor([2.0, 3.0])  # mean 2.5, std 0.5
    assert ssi(torch.tensor(noisy), shifted) == pytest.approx((0.5 / 2.5) / (1 / 2))  # 0.4
    assert smpi(noisy, shifted) == pytest.approx((1 + 0.5) * 0.5 / 1)  # 0.75
    assert isinstance(smpi(noisy, shifted), float)
    with pytest.raises(ValueError):
        ssi(np.ones(3), filt)


def test_feature_speckle_map_is_channel_mean_magnitude() -> None:
    feat = torch.tensor([[[[-1.0, 2.0]], [[3.0, -4.0]]]])  # [1, 2, 1, 2]
    torch.testing.assert_close(feature_speckle_map(feat), torch.tensor([[[2.0, 3.0]]]))
    np.testing.assert_allclose(feature_speckle_map(feat[0].numpy()), [[2.0, 3.0]])


def test_fft_lowpass_denoise_is_the_low_band_and_smooths() -> None:
    gen = torch.Generator().manual_seed(4)
    noisy = simulate_speckle(torch.ones(1, 1, 64, 64), 1, generator=gen)
    den = fft_lowpass_denoise(noisy, 0.1)
    torch.testing.assert_close(den, fft_bands(noisy, 0.1)[0])
    assert enl(den) > 5 * enl(noisy)
    assert ssi(noisy, den) < 0.5 and smpi(noisy, den) < 0.5
