"""anchor_coverage: hand-placed boxes on torchvision's anchor grid (centres at multiples of the stride)."""

import pytest
import torch

from rskd_tutorial.models.anchors import anchor_coverage
from rskd_tutorial.models.detectors import build_detector


def _scene(*boxes, crowd=None):
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.ones(len(boxes), dtype=torch.int64)}
    if crowd is not None:
        target["iscrowd"] = torch.tensor(crowd)
    return torch.zeros(3, 64, 64), target


@pytest.fixture(scope="module")
def retinanet():
    # anchor_factor 0.5: the smallest P3 anchor is 4 * 8 * 0.5 = 16 px, centred on multiples of 8
    return build_detector("retinanet", "resnet18", 1, min_size=64, max_size=64, fpn_channels=8, anchor_factor=0.5)


def test_box_equal_to_an_anchor_has_iou_one(retinanet):
    cov = anchor_coverage(retinanet, [_scene([8.0, 8.0, 24.0, 24.0])])   # the 16 px anchor at (16, 16)
    assert cov["best_iou"] == pytest.approx([1.0], abs=1e-5)
    assert cov["positives"][0] >= 1
    assert cov["size"] == pytest.approx([16.0])


def test_box_half_a_stride_off_the_grid(retinanet):
    # 16 px box centred at (20, 16): the anchors at (16, 16) and (24, 16) overlap it 12 x 16 px,
    # IoU = 192 / (256 + 256 - 192) = 0.6; every other anchor (octave 20 px, ratios) stays below 0.53
    cov = anchor_coverage(retinanet, [_scene([12.0, 8.0, 28.0, 24.0])], iou_threshold=0.55)
    assert cov["best_iou"] == pytest.approx([0.6], abs=1e-4)
    assert cov["positives"][0] == 2
    assert anchor_coverage(retinanet, [_scene([12.0, 8.0, 28.0, 24.0])], iou_threshold=0.61)["positives"][0] == 0


def test_boxes_are_resized_with_the_image():
    det = build_detector("retinanet", "resnet18", 1, min_size=128, max_size=128, fpn_channels=8, anchor_factor=0.5)
    # at 2x the 8 px box becomes the 16 px anchor at (16, 16)
    cov = anchor_coverage(det, [_scene([4.0, 4.0, 12.0, 12.0])])
    assert cov["size"] == pytest.approx([16.0])
    assert cov["best_iou"] == pytest.approx([1.0], abs=1e-5)


def test_faster_rcnn_reads_the_rpn_anchors_at_stride_4():
    # RPN anchors 8 x stride x 0.25 = 8 px at P2, centred on multiples of 4 (torchvision rounds the
    # corners: the ratio-2 anchor is 6 x 12 px). [4, 4, 12, 12] is the square anchor at (8, 8);
    # [2, 2, 10, 10] is centred between grid points, and its best anchor is a 6 x 12 one at (4, 4):
    # overlap 5 x 8 = 40 px, IoU = 40 / (64 + 72 - 40) = 0.4167
    det = build_detector("faster_rcnn", "resnet18", 1, min_size=64, max_size=64, fpn_channels=8, anchor_factor=0.25)
    cov = anchor_coverage(det, [_scene([4.0, 4.0, 12.0, 12.0]), _scene([2.0, 2.0, 10.0, 10.0])])
    assert cov["best_iou"] == pytest.approx([1.0, 40 / 96], abs=1e-4)
    assert cov["positives"][1] == 0


def test_crowd_boxes_are_skipped_and_empty_input_is_an_error(retinanet):
    cov = anchor_coverage(retinanet, [_scene([8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 5.0, 5.0], crowd=[0, 1])])
    assert len(cov["best_iou"]) == 1
    with pytest.raises(ValueError, match="no .*boxes"):
        anchor_coverage(retinanet, [_scene([0.0, 0.0, 5.0, 5.0], crowd=[1])])
    with pytest.raises(ValueError, match="iou_threshold"):
        anchor_coverage(retinanet, [_scene([8.0, 8.0, 24.0, 24.0])], iou_threshold=0.0)
