"""Box masks and attention maps on hand-made layouts."""

from __future__ import annotations

import pytest
import torch

from rskd_tutorial.distill.masks import attention_maps, box_grid_extents, box_scale_masks


def test_extents_use_floor_ceil_and_padded_size():
    # 8x8 grid over a 32x32 padded batch: a box [4, 4, 10, 6] -> cells x 1..3, y 1..2 (inclusive)
    ext = box_grid_extents(torch.tensor([[4.0, 4.0, 10.0, 6.0]]), (8, 8), (32, 32))
    assert ext.tolist() == [[1, 1, 3, 2]]
    # a box past the border is clamped to the grid
    assert box_grid_extents(torch.tensor([[28.0, 0.0, 40.0, 3.0]]), (8, 8), (32, 32)).tolist() == [[7, 0, 7, 1]]


def test_scale_masks_max_over_overlaps_and_normalised_background():
    # 4x4 grid over an 8x8 batch (scale 1/2); FGD's mapping: floor(x1 s) .. ceil(x2 s), inclusive
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0],     # x, y 0..ceil(2)=2: 3x3 = 9 cells
                          [0.0, 0.0, 8.0, 2.0]])    # x 0..3 (clamped), y 0..ceil(1)=1: 8 cells
    fg, bg = box_scale_masks([boxes], (4, 4), (8, 8))
    assert fg.shape == (1, 1, 4, 4)
    assert fg[0, 0, 0, 0] == pytest.approx(1 / 8)      # max(1/9, 1/8)
    assert fg[0, 0, 2, 2] == pytest.approx(1 / 9)      # first box only
    assert fg[0, 0, 0, 3] == pytest.approx(1 / 8)      # second box only
    assert fg[0, 0, 3, 3] == 0
    # union 9 + 8 - 6 = 11 cells, so 5 background cells of 1/5 each
    assert bg[0, 0, 3, 3] == pytest.approx(1 / 5) and bg[0, 0, 0, 0] == 0 and bg.sum() == pytest.approx(1.0)


def test_scale_masks_empty_image_and_full_cover():
    fg, bg = box_scale_masks([torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 8.0, 8.0]])], (4, 4), (8, 8))
    assert fg[0].sum() == 0 and bg[0].sum() == pytest.approx(1.0)
    assert fg[1].sum() == pytest.approx(1.0) and bg[1].sum() == 0   # no background left: all zero, no NaN


def test_attention_sums_and_temperature():
    feat = torch.randn(2, 5, 3, 4)
    sp, ch = attention_maps(feat, tau=0.5)
    assert sp.shape == (2, 1, 3, 4) and ch.shape == (2, 5, 1, 1)
    assert torch.allclose(sp.sum(dim=(2, 3)), torch.full((2, 1), 12.0))
    assert torch.allclose(ch.sum(dim=1), torch.full((2, 1, 1), 5.0))
    # hand case: one channel, two positions with |F| = 0 and tau*ln 3 -> softmax (1/4, 3/4), times HW = 2
    f = torch.tensor([0.0, 0.5 * torch.log(torch.tensor(3.0))]).reshape(1, 1, 1, 2)
    sp, _ = attention_maps(f, tau=0.5)
    assert sp.flatten().tolist() == pytest.approx([0.5, 1.5])
