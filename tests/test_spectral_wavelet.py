"""Tests for rskd_tutorial.spectral.wavelet (Haar DWT, DS2D2's high-frequency map, DIPKD's denoiser)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from rskd_tutorial.spectral import (
    haar_dwt,
    haar_idwt,
    haar_subbands,
    high_frequency_map,
    max_haar_level,
    simulate_speckle,
    wavelet_denoise,
)
from rskd_tutorial.spectral import wavelet as wavelet_mod


def _block(a: float, b: float, c: float, d: float) -> torch.Tensor:
    return torch.tensor([[[[a, b], [c, d]]]])


# ---------------------------------------------------------------- DWT / IDWT


@pytest.mark.parametrize("mode", ["zero", "symmetric"])
@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (13, 6)])
@pytest.mark.parametrize("levels", [1, 3])
def test_dwt_idwt_round_trip(mode: str, hw: tuple[int, int], levels: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw)
    ll, highs = haar_dwt(x, levels=levels, mode=mode)
    assert len(highs) == levels
    h, w = hw
    for hi in highs:
        h, w = (h + 1) // 2, (w + 1) // 2
        assert hi.shape == (2, 3, 3, h, w)
    assert ll.shape == (2, 3, h, w)
    rec = haar_idwt(ll, highs, mode=mode, size=hw)
    assert rec.shape == x.shape
    torch.testing.assert_close(rec, x, atol=1e-5, rtol=0)


def test_odd_size_padding_conventions() -> None:
    # 3x3 map: the block at (1, 1) holds x[2,2] = e and the padding.
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    e = 9.0
    ll, (hi,) = haar_dwt(x, mode="zero")  # [[e, 0], [0, 0]]
    assert ll.shape == (1, 1, 2, 2)
    assert ll[0, 0, 1, 1].item() == pytest.approx(e / 2)
    assert hi[0, 0, :, 1, 1].tolist() == pytest.approx([e / 2, e / 2, e / 2])
    ll, (hi,) = haar_dwt(x, mode="symmetric")  # [[e, e], [e, e]]
    assert ll[0, 0, 1, 1].item() == pytest.approx(2 * e)
    assert hi[0, 0, :, 1, 1].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-5)  # float32 filter rounding
    # without size, the synthesis returns the padded map: a zero row/column for mode="zero".
    full = haar_idwt(*haar_dwt(x, mode="zero"))
    assert full.shape == (1, 1, 4, 4)
    torch.testing.assert_close(full[..., :3, :3], x, atol=1e-5, rtol=0)
    assert full[..., 3, :].abs().max().item() < 1e-6 and full[..., :, 3].abs().max().item() < 1e-6


def test_subbands_of_a_2x2_block_follow_common_md() -> None:
    a, b, c, d = 1.0, 2.0, 3.0, 5.0
    bands = haar_subbands(_block(a, b, c, d))
    expected = {
        "LL": (a + b + c + d) / 2,
        "LH": (a + b - c - d) / 2,
        "HL": (a - b + c - d) / 2,
        "HH": (a - b - c + d) / 2,
    }
    for name, value in expected.items():
        assert bands[name].shape == (1, 1, 1, 1)
        assert bands[name].item() == pytest.approx(value), name
    # 2-D input keeps its leading dims
    assert haar_subbands(torch.zeros(6, 4))["HH"].shape == (3, 2)


def test_energy_conservation_even_sizes() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 12, dtype=torch.float64)
    ll, highs = haar_dwt(x, levels=2)
    energy = (ll**2).sum() + sum((h**2).sum() for h in highs)
    torch.testing.assert_close(energy, (x**2).sum(), rtol=1e-12, atol=0)


def test_detail_sum_identity() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    ll, (hi,) = haar_dwt(x)
    torch.testing.assert_close(hi.sum(dim=2), 2 * x[..., ::2, ::2] - ll)
    block_mean = F.avg_pool2d(x, 2)
    torch.testing.assert_close(hi.sum(dim=2), 2 * (x[..., ::2, ::2] - block_mean))


def test_matches_pywavelets() -> None:
    torch.manual_seed(3)
    x = torch.randn(1, 2, 9, 7, dtype=torch.float64)
    for mode in ("zero", "symmetric"):
        ll, (hi,) = haar_dwt(x, mode=mode)
        cA, (cH, cV, cD) = pywt.dwt2(x.numpy(), "haar", mode=mode)
        np.testing.assert_allclose(ll.numpy(), cA, atol=1e-12)
        for k, ref in enumerate((cH, cV, cD)):
            np.testing.assert_allclose(hi[:, :, k].numpy(), ref, atol=1e-12)


def test_precision_dtype_and_module_cache() -> None:
    x = torch.randn(1, 2, 6, 6).half()
    ll, (hi,) = haar_dwt(x)
    assert ll.dtype == torch.float16 and hi.dtype == torch.float16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ll32, _ = haar_dwt(torch.randn(1, 2, 6, 6))
    assert ll32.dtype == torch.float32
    m1 = wavelet_mod._dwt_module(torch.device("cpu"), torch.float32)
    m2 = wavelet_mod._dwt_module(torch.device("cpu"), torch.float32)
    assert m1 is m2
    with pytest.raises(ValueError, match="mode"):
        haar_dwt(x, mode="periodization")


# ---------------------------------------------------------------- high-frequency map


def test_high_frequency_map_constant_is_zero() -> None:
    hf = high_frequency_map(torch.full((1, 2, 8, 8), 3.0))
    assert hf.shape == (1, 2, 8, 8)
    assert hf.abs().max().item() < 1e-6


def test_high_frequency_map_checkerboard() -> None:
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    board = ((-1.0) ** (i + j)).float()[None, None]  # each block [[1,-1],[-1,1]]: a=1, mean 0
    torch.testing.assert_close(high_frequency_map(board), torch.full_like(board, 2.0))
    torch.testing.assert_close(high_frequency_map(-board), torch.full_like(board, -2.0))


def test_high_frequency_map_selects_top_left_corner() -> None:
    # the sign convention picks the top-left pixel: 2*(1 - 1/4) vs 2*(0 - 1/4)
    assert high_frequency_map(_block(1, 0, 0, 0)).flatten().tolist() == pytest.approx([1.5] * 4)
    assert high_frequency_map(_block(0, 0, 0, 1)).flatten().tolist() == pytest.approx([-0.5] * 4)


def test_high_frequency_map_closed_form_random() -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 3, 10, 14)
    closed = 2 * (x[..., ::2, ::2] - F.avg_pool2d(x, 2))
    expected = F.interpolate(closed, size=(10, 14), mode="bilinear", align_corners=False)
    torch.testing.assert_close(high_frequency_map(x), expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- wavelet denoising


def _official_dipkd_denoise(x: np.ndarray) -> torch.Tensor:
    """The released DIPKD NumPy pipeline (``mmdet/losses/kd.py`` of the official code), re-written here."""
    coeffs = pywt.wavedec2(x, "db1", level=3)
    out = [coeffs[0]]
    for cH, cV, cD in coeffs[1:]:
        t = 0.5 * np.std(cH)
        out.append(tuple(pywt.threshold(c, t, "soft") for c in (cH, cV, cD)))
    rec = torch.from_numpy(pywt.waverec2(out, "db1"))[None]
    return F.interpolate(rec, size=x.shape[-2:], mode="bilinear", align_corners=False)[0]


def test_wavelet_denoise_matches_official_pipeline() -> None:
    torch.manual_seed(5)
    x = torch.randn(2, 4, 13, 20, dtype=torch.float64).exp()
    ours = wavelet_denoise(x, odd_size="bilinear")
    ref = torch.stack([_official_dipkd_denoise(x[b].numpy()) for b in range(2)])
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)


def test_wavelet_denoise_keeps_dyadic_piecewise_constant_map() -> None:
    torch.manual_seed(6)
    blocks = torch.rand(2, 3, 4, 4) * 10
    x = blocks.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)  # 32x32, 8x8 blocks
    torch.testing.assert_close(wavelet_denoise(x), x, atol=1e-5, rtol=0)


def test_wavelet_denoise_reduces_speckle_variance() -> None:
    flat = torch.full((1, 1, 64, 64), 5.0)
    noisy = simulate_speckle(flat, looks=2, generator=torch.Generator().manual_seed(0))
    den = wavelet_denoise(noisy)
    assert den.var().item() < 0.5 * noisy.var().item()
    assert abs(den.mean().item() - noisy.mean().item()) < 0.1 * noisy.mean().item()


def test_wavelet_denoise_zero_threshold_is_identity_for_odd_sizes_with_crop() -> None:
    x = torch.randn(1, 2, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(wavelet_denoise(x, levels=2, threshold_scale=0.0), x)
    # the official bilinear resize is not the identity on odd sizes
    assert (wavelet_denoise(x, levels=2, threshold_scale=0.0, odd_size="bilinear") - x).abs().max() > 1e-3


def test_wavelet_denoise_gradient_reaches_input() -> None:
    torch.manual_seed(7)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    wavelet_denoise(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # with zero threshold the map is the identity, so d<y, w>/dx = w exactly (threshold detached)
    x2 = torch.randn(1, 2, 10, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn_like(x2)
    (wavelet_denoise(x2, threshold_scale=0.0, levels=1) * w).sum().backward()
    torch.testing.assert_close(x2.grad, w)


def test_wavelet_denoise_level_guard_on_5x5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wavelet_mod, "_warned_levels", set())
    assert max_haar_level(5, 5) == 2
    x = torch.rand(1, 2, 5, 5)
    with pytest.warns(UserWarning, match="using floor"):
        y = wavelet_denoise(x, levels=3)
    assert y.shape == x.shape
    torch.testing.assert_close(y, wavelet_denoise(x, levels=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wavelet_denoise(x, levels=3)  # warned once only
    tiny = torch.rand(1, 1, 1, 4)
    with pytest.warns(UserWarning):
        assert torch.equal(wavelet_denoise(tiny), tiny)


def test_wavelet_denoise_threshold_is_stop_gradient() -> None:
    # One level, even size: y = A^T S_t(A x) with A orthonormal. With t = sg[...], the
    # vector-Jacobian product is A^T (1[|d| > t] * A w); a threshold carrying gradient would add
    # a term through std(cH).
    torch.manual_seed(8)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn_like(x)
    (wavelet_denoise(x, levels=1) * w).sum().backward()
    _, (hi,) = haar_dwt(x.detach(), levels=1, mode="symmetric")
    t = 0.5 * hi[:, :, 0].reshape(2, -1).std(dim=1, correction=0)
    keep = hi.abs() > t.view(2, 1, 1, 1, 1)
    w_ll, (w_hi,) = haar_dwt(w, levels=1, mode="symmetric")
    expected = haar_idwt(w_ll, [w_hi * keep], mode="symmetric")
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize("mode", ["zero", "symmetric"])
def test_dwt_gradient_is_exact_on_odd_sizes(mode: str) -> None:
    # pytorch-wavelets' own backward drops the padded sample's gradient in symmetric mode;
    # the explicit padding used here must give the true Jacobian.
    x = torch.randn(1, 1, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: haar_dwt(z, levels=2, mode=mode)[1][0], (x,))
    assert torch.autograd.gradcheck(lambda z: haar_dwt(z, levels=2, mode=mode)[0], (x,))
