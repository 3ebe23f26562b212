"""Tests for rskd_tutorial.spectral.analysis (chapter 1's analysis helpers), on hand-computable tensors."""

from __future__ import annotations

import math

import pytest
import torch

from rskd_tutorial.distill.masks import edge_masks, region_masks
from rskd_tutorial.spectral import (
    align,
    band_energy_concentration,
    block_mean_map,
    concentration_ci,
    flattest_window,
    gram,
    haar_shares,
    ridge_alignment,
    shift_change,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- haar_shares

@pytest.mark.parametrize("pattern, band", [
    ([[1.0, 1.0], [1.0, 1.0]], "LL"),      # constant: all in the block mean
    ([[1.0, 1.0], [-1.0, -1.0]], "LH"),    # rows alternate: top minus bottom
    ([[1.0, -1.0], [1.0, -1.0]], "HL"),    # columns alternate: left minus right
    ([[1.0, -1.0], [-1.0, 1.0]], "HH"),    # checkerboard: diagonal
])
def test_haar_shares_of_pure_patterns(pattern, band) -> None:
    x = 3.0 * torch.tensor(pattern).repeat(4, 3)          # 8 x 6, aligned with the 2x2 blocks
    shares = haar_shares(x)
    assert set(shares) == {"LL", "LH", "HL", "HH"}
    for k, v in shares.items():
        assert v == pytest.approx(1.0 if k == band else 0.0, abs=1e-12), (k, shares)


def test_haar_shares_hand_block_and_batch() -> None:
    # [[4, 0], [0, 0]]: every band is (+-4)/2 = 2, so each holds 4 of the energy 16
    shares = haar_shares(torch.tensor([[4.0, 0.0], [0.0, 0.0]]))
    assert shares == pytest.approx({"LL": 0.25, "LH": 0.25, "HL": 0.25, "HH": 0.25}, abs=1e-12)
    x = torch.randn(3, 5, 7, 9, generator=_gen(0))       # odd sizes: zero padding keeps the norm
    assert sum(haar_shares(x).values()) == pytest.approx(1.0, abs=1e-12)


def test_haar_shares_rejects_zero_energy() -> None:
    with pytest.raises(ValueError):
        haar_shares(torch.zeros(4, 4))


# ---------------------------------------------------------------- block_mean_map / shift_change

def test_block_mean_map_and_shift_change() -> None:
    x = torch.tensor([[4.0, 0.0], [0.0, 0.0]])[None, None]
    torch.testing.assert_close(block_mean_map(x), torch.ones(1, 1, 2, 2))   # block mean 1 everywhere
    t = torch.randn(1, 2, 8, 8, generator=_gen(1))
    change, moved = shift_change(lambda z: 2 * z, t)                          # shift-equivariant: no change
    assert change == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(moved, 2 * t)
    # "top-left pixel of each 2x2 block, repeated": tied to the grid, so a one-pixel shift changes it
    def top_left(z):
        return z[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1)
    change, _ = shift_change(top_left, t)
    assert change > 0.5


# ---------------------------------------------------------------- flattest_window

def test_flattest_window_finds_planted_flat_patch() -> None:
    clean = 1.0 + torch.rand(40, 48, generator=_gen(2), dtype=torch.float64)
    clean[12:22, 26:36] = 1.7                                                  # a 10 x 10 constant patch
    rows, cols = flattest_window(clean, 10)
    assert (rows, cols) == (slice(12, 22), slice(26, 36))
    assert float(clean[rows, cols].std()) == 0.0


# ---------------------------------------------------------------- gram / ridge_alignment / align

def test_gram_hand_values() -> None:
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])     # [1, 2, 1, 2]
    b = torch.tensor([[[[1.0, 1.0]]]])                    # [1, 1, 1, 2]
    g = gram(a, b)
    assert g.dtype == torch.float64 and g.shape == (2, 1)
    torch.testing.assert_close(g, torch.tensor([[3.0], [7.0]], dtype=torch.float64))
    # summed over the batch: two copies double it
    torch.testing.assert_close(gram(torch.cat([a, a]), torch.cat([b, b])), 2 * g)
    torch.testing.assert_close(gram(a, a), torch.tensor([[5.0, 11.0], [11.0, 25.0]], dtype=torch.float64))


def _teacher(c: int = 4) -> dict[str, torch.Tensor]:
    g = _gen(3)
    return {"p2": torch.randn(3, c, 6, 6, generator=g, dtype=torch.float64),
            "p3": torch.randn(3, c, 3, 3, generator=g, dtype=torch.float64)}


def test_ridge_alignment_recovers_a_permutation() -> None:
    teacher = _teacher()
    perm = torch.eye(4, dtype=torch.float64)[[2, 0, 3, 1]]                     # student = teacher @ P
    student = align(teacher, perm)
    phi = ridge_alignment(student, teacher, ridge=0.0)
    assert phi.shape == (4, 4) and phi.dtype == torch.float64
    torch.testing.assert_close(phi, perm.T, atol=1e-10, rtol=0)               # P^-1 = P^T
    aligned = align(student, phi)
    for lvl in teacher:
        torch.testing.assert_close(aligned[lvl], teacher[lvl], atol=1e-10, rtol=0)


def test_ridge_alignment_recovers_a_mixing_matrix_and_shape() -> None:
    teacher = _teacher(c=3)
    mix = torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)   # C_t=3 -> C_s=2
    # student channels are two mixtures of the teacher's; the best map back is the projection
    student = align(teacher, mix)
    phi = ridge_alignment(student, teacher, ridge=0.0)
    assert phi.shape == (2, 3)
    # square, invertible case: phi = M^-1 exactly
    square = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
    phi = ridge_alignment(align(teacher, square), teacher, ridge=0.0)
    torch.testing.assert_close(phi, torch.linalg.inv(square), atol=1e-10, rtol=0)
    # the default relative ridge barely moves it; float32 features give a float32 adapter
    phi_r = ridge_alignment(align(teacher, square), teacher)
    torch.testing.assert_close(phi_r, torch.linalg.inv(square), atol=1e-4, rtol=0)
    t32 = {k: v.float() for k, v in teacher.items()}
    assert ridge_alignment(align(t32, square.float()), t32).dtype == torch.float32


def test_ridge_alignment_needs_the_same_levels() -> None:
    teacher = _teacher()
    with pytest.raises(ValueError):
        ridge_alignment({"p2": teacher["p2"]}, teacher)


# ---------------------------------------------------------------- region_masks / edge_masks

def test_region_masks_one_box_on_a_4x4_grid() -> None:
    # input 8 x 8 px, grid 4 x 4 (2 px per cell); box x 2..6, y 2..4 -> cols 1..3, rows 1..2
    targets = [{"boxes": torch.tensor([[2.0, 2.0, 6.0, 4.0]])}, {"boxes": torch.zeros(0, 4)}]
    expected = torch.zeros(4, 4)
    expected[1:3, 1:4] = 1.0
    edges = torch.zeros(2, 8, 8)
    edges[0, 0:2, 0:2] = 1.0        # fills cell (0, 0)
    edges[0, 6, 6:8] = 1.0          # half of cell (3, 3)
    masks = region_masks(targets, (4, 4), (8, 8), small_area=10.0, edges=edges)    # box area 8 < 10: small
    assert set(masks) == {"all boxes", "small boxes", "edges"}
    torch.testing.assert_close(masks["all boxes"][0], expected)
    torch.testing.assert_close(masks["small boxes"][0], expected)
    assert masks["all boxes"][1].sum() == 0 and masks["small boxes"][1].sum() == 0
    want_edges = torch.zeros(4, 4)
    want_edges[0, 0], want_edges[3, 3] = 1.0, 0.5
    torch.testing.assert_close(masks["edges"][0], want_edges)
    assert masks["edges"][1].sum() == 0
    big = region_masks(targets, (4, 4), (8, 8), small_area=8.0)                      # area 8 is not < 8
    assert set(big) == {"all boxes", "small boxes"}
    assert big["small boxes"].sum() == 0
    torch.testing.assert_close(big["all boxes"][0], expected)


def test_edge_masks_of_a_vertical_step() -> None:
    img = torch.zeros(1, 3, 8, 8)
    img[..., 4:] = 1.0                         # left half 0, right half 1
    m = edge_masks(img)                        # 16 of 64 pixels have a gradient: all above the 90th percentile
    expected = torch.zeros(1, 8, 8)
    expected[..., 3:5] = 1.0
    torch.testing.assert_close(m, expected)
    torch.testing.assert_close(edge_masks([img[0], img[0]]), expected.repeat(2, 1, 1))   # a list of images


# ---------------------------------------------------------------- concentration_ci

def _concentration_inputs(n: int = 12):
    g = _gen(4)
    residual = torch.randn(n, 3, 8, 8, generator=g)
    masks = {"box": torch.zeros(n, 8, 8), "soft": torch.rand(n, 8, 8, generator=g)}
    masks["box"][:, 2:6, 2:6] = 1.0
    residual[:, :, 2:6, 2:6] *= 1 + 2 * torch.rand(n, 1, 1, 1, generator=g)   # energy inside varies by image
    return residual, masks


def test_concentration_ci_brackets_the_point_value() -> None:
    residual, masks = _concentration_inputs()
    out = concentration_ci(residual, masks, n_boot=400, generator=_gen(5))
    point = band_energy_concentration(residual, masks)
    assert set(out) == set(masks)
    for name in masks:
        assert set(out[name]) == {"all", "low", "high"}
        for band, (value, lo, hi) in out[name].items():
            assert value == point[name][band]                     # the table's number, unchanged
            assert lo < hi and lo <= value <= hi, (name, band, value, lo, hi)
    assert out["box"]["all"][0] > 1.5                             # the planted enrichment
    again = concentration_ci(residual, masks, n_boot=400, generator=_gen(5))
    assert again == out                                           # deterministic for a seeded generator


def test_concentration_ci_is_degenerate_for_identical_images() -> None:
    residual, masks = _concentration_inputs(n=1)
    residual = residual.repeat(6, 1, 1, 1)
    masks = {k: v.repeat(6, 1, 1) for k, v in masks.items()}
    out = concentration_ci(residual, masks, n_boot=200, generator=_gen(6))
    for name in masks:
        for band, (value, lo, hi) in out[name].items():
            assert hi - lo < 1e-9, (name, band, lo, hi)
            assert lo == pytest.approx(value, rel=1e-5)


def test_concentration_ci_empty_region_is_nan() -> None:
    residual, masks = _concentration_inputs(n=4)
    out = concentration_ci(residual, {"none": torch.zeros(4, 8, 8)}, n_boot=50, generator=_gen(7))
    assert all(math.isnan(v) for triple in out["none"].values() for v in triple)
    with pytest.raises(ValueError):
        concentration_ci(residual, masks, n_boot=0)
