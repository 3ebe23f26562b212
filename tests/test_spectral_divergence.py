"""Tests for rskd_tutorial.spectral.divergence (band-wise divergence and its bootstrap CIs)."""

from __future__ import annotations

import math

import pytest
import torch

from rskd_tutorial.spectral import (
    band_divergence,
    band_energy_concentration,
    bootstrap_ci,
    divergence_ratio,
    fft_bands,
    haar_dwt,
    haar_idwt,
    layerwise_band_divergence,
)


def _features(seed: int, shape=(6, 4, 12, 12)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("metric", ["nmse", "cosine", "rel_mse"])
@pytest.mark.parametrize("split", ["fft", "haar"])
def test_identical_inputs_give_zero(metric: str, split: str) -> None:
    a = _features(0)
    d = band_divergence(a, a.clone(), metric=metric, split=split)
    assert d["low"].shape == d["high"].shape == (6,)
    assert torch.all(d["low"] == 0) and torch.all(d["high"] == 0)
    assert divergence_ratio(d, n_boot=50, generator=torch.Generator().manual_seed(0)) == (1.0, 1.0, 1.0)


def test_cosine_of_identical_constant_maps_is_zero() -> None:
    a = torch.ones(2, 3, 4, 4)  # high band is exactly zero on both sides
    d = band_divergence(a, a.clone(), metric="cosine")
    assert torch.all(d["high"] == 0) and torch.all(d["low"] == 0)


def test_hand_values() -> None:
    a = _features(1)
    for split in ("fft", "haar"):
        neg = band_divergence(a, -a, split=split)
        torch.testing.assert_close(neg["low"], torch.full((6,), 2.0))
        torch.testing.assert_close(neg["high"], torch.full((6,), 2.0))
        zero = band_divergence(a, torch.zeros_like(a), split=split)
        torch.testing.assert_close(zero["high"], torch.ones(6))
        cos = band_divergence(a, -a, split=split, metric="cosine")
        torch.testing.assert_close(cos["high"], torch.full((6,), 2.0))
        rel = band_divergence(a, 2 * a, split=split, metric="rel_mse")
        torch.testing.assert_close(rel["low"], torch.ones(6))


@pytest.mark.parametrize("metric", ["nmse", "cosine"])
def test_high_frequency_noise_only_raises_high_band(metric: str) -> None:
    a = _features(2)
    _, noise_high = fft_bands(_features(3), 0.25)
    small_low, _ = fft_bands(_features(4), 0.25)
    b = a + noise_high + 0.05 * small_low
    d = band_divergence(a, b, cutoff=0.25, metric=metric)
    assert torch.all(d["high"] > 10 * d["low"])
    ratio, lo, hi = divergence_ratio(d, n_boot=200, generator=torch.Generator().manual_seed(0))
    assert ratio > 1 and lo > 1 and lo <= ratio <= hi


def test_haar_detail_noise_only_raises_high_band() -> None:
    a = _features(5)
    ll, (hi,) = haar_dwt(a)
    noise = haar_idwt(torch.zeros_like(ll), [torch.randn_like(hi)])
    d = band_divergence(a, a + noise, split="haar")
    assert d["low"].abs().max().item() < 1e-10
    assert torch.all(d["high"] > 0.1)
    assert divergence_ratio(d, n_boot=100, generator=torch.Generator().manual_seed(0))[0] > 1


def test_layerwise_band_divergence() -> None:
    fa = [_features(6), _features(7, (6, 8, 6, 6))]
    fb = [f + 0.1 * torch.randn_like(f) for f in fa]
    out = layerwise_band_divergence(fa, fb, metric="cosine")
    assert len(out) == 2
    for f1, f2, d in zip(fa, fb, out):
        ref = band_divergence(f1, f2, metric="cosine")
        torch.testing.assert_close(d["low"], ref["low"])
        torch.testing.assert_close(d["high"], ref["high"])
    with pytest.raises(ValueError):
        layerwise_band_divergence(fa, fb[:1])
    with pytest.raises(ValueError):
        band_divergence(fa[0], fa[1])


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    values = torch.rand(40, generator=torch.Generator().manual_seed(8))
    est, lo, hi = bootstrap_ci(values, n_boot=500, generator=torch.Generator().manual_seed(1))
    assert est == pytest.approx(values.double().mean().item())
    assert lo < est < hi
    again = bootstrap_ci(values, n_boot=500, generator=torch.Generator().manual_seed(1))
    assert again == (est, lo, hi)
    other = bootstrap_ci(values, n_boot=500, generator=torch.Generator().manual_seed(2))
    assert other[1:] != (lo, hi)
    med = bootstrap_ci(values.numpy(), n_boot=200, generator=torch.Generator().manual_seed(1), statistic="median")
    assert med[1] <= med[0] <= med[2]
    assert bootstrap_ci([3.0, 3.0, 3.0], n_boot=20) == (3.0, 3.0, 3.0)


def test_divergence_ratio_hand_values_and_pairing() -> None:
    low = torch.rand(30, generator=torch.Generator().manual_seed(9)) + 0.1
    # high = 2 * low per sample: every *paired* resample has ratio exactly 2
    ratio, lo, hi = divergence_ratio({"low": low, "high": 2 * low}, n_boot=300, generator=torch.Generator().manual_seed(0))
    assert ratio == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    layers = [{"low": low, "high": 2 * low}, {"low": low, "high": 4 * low}]
    ratio, lo, hi = divergence_ratio(layers, n_boot=100, generator=torch.Generator().manual_seed(0))
    assert (ratio, lo, hi) == pytest.approx((3.0, 3.0, 3.0))


def test_band_energy_concentration_hand_values() -> None:
    n, h, w = 2, 8, 8
    region = torch.zeros(n, h, w)
    region[:, :4, :4] = 1.0  # a quarter of the area, aligned with the 2x2 Haar blocks
    # energy spread uniformly: every region holds its area's share (enrichment 1), all in LL
    out = band_energy_concentration(torch.ones(n, 3, h, w), {"r": region, "half": torch.full((n, h, w), 0.5)})
    assert out["r"]["area"] == pytest.approx(0.25)
    assert out["r"]["all"] == pytest.approx(1.0) and out["r"]["low"] == pytest.approx(1.0)
    assert math.isnan(out["r"]["high"])  # a constant map has no detail energy
    assert out["half"]["all"] == pytest.approx(1.0)  # soft mask: share 0.5 over area 0.5
    # all the energy inside the region: enrichment = 1 / area = 4, in the band it lives in
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    board = ((-1.0) ** (i + j)).expand(n, 3, h, w) * region[:, None]  # pure HH inside the region
    out = band_energy_concentration(board, {"r": region})
    assert out["r"]["all"] == pytest.approx(4.0) and out["r"]["high"] == pytest.approx(4.0)
    assert math.isnan(out["r"]["low"])
    blob = 2.0 * region[:, None].expand(n, 3, h, w)  # constant on 2x2 blocks: pure LL
    out = band_energy_concentration(blob, {"r": region, "outside": 1 - region})
    assert out["r"]["low"] == pytest.approx(4.0) and out["outside"]["all"] == pytest.approx(0.0)


def test_band_energy_concentration_odd_grid_and_errors() -> None:
    d = _features(10, (3, 4, 5, 7))
    every = torch.ones(3, 5, 7)
    out = band_energy_concentration(d, {"every": every, "none": torch.zeros(3, 5, 7)})
    assert out["every"] == pytest.approx({"area": 1.0, "all": 1.0, "low": 1.0, "high": 1.0})
    assert all(math.isnan(out["none"][b]) for b in ("all", "low", "high"))
    with pytest.raises(ValueError, match="shape"):
        band_energy_concentration(d, {"bad": torch.ones(3, 4, 4)})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        band_energy_concentration(d, {"bad": 2 * every})
