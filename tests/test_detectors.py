"""Detectors with taps: one call gives losses or detections and the taps the KD losses read."""

from __future__ import annotations

import pytest
import torch

from helpers_detection import SIZE, TinyBoxes, collate, tiny_detector
from rskd_tutorial.models.detectors import build_detector, dense_level_maps


@pytest.mark.parametrize("arch, levels, strides", [
    ("retinanet", ["p3", "p4", "p5", "p6", "p7"], [8, 16, 32, 64, 128]),
    ("faster_rcnn", ["p2", "p3", "p4", "p5", "p6"], [4, 8, 16, 32, 64]),
])
def test_training_call_returns_losses_and_taps(arch, levels, strides):
    det = tiny_detector(arch).train()
    images, targets = collate([TinyBoxes()[i] for i in range(2)])
    out = det(images, targets)
    assert all(k.startswith("loss") and torch.isfinite(v) for k, v in out.losses.items())
    feats = out.taps["features"]
    assert list(feats) == levels
    for (name, f), s in zip(feats.items(), strides):
        assert f.shape[:2] == (2, 16) and f.shape[-1] == -(-SIZE // s), name
    assert out.taps["batch_hw"] == (SIZE, SIZE) and out.taps["image_sizes"] == [(SIZE, SIZE)] * 2
    assert torch.equal(out.taps["targets"][0]["boxes"], targets[0]["boxes"])
    if arch == "retinanet":
        k = out.taps["cls_logits"].shape[-1]
        assert k == 2  # exactly K sigmoid outputs: labels were shifted to 0..K-1 for torchvision
        maps = dense_level_maps(out.taps["cls_logits"], out.taps)
        assert maps[0].shape == (2, 9, 2, 8, 8)
        assert out.taps["targets"][0]["labels"].tolist() == [0, 1]
    else:
        assert out.taps["objectness"][0].shape == (2, 3, 16, 16)
        assert not out.taps["proposals"][0].requires_grad


@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_eval_returns_detections_in_original_pixels_and_taps(arch):
    det = tiny_detector(arch).eval()
    images = [torch.rand(3, 48, 80), torch.rand(3, 64, 64)]  # the transform resizes; outputs map back
    with torch.no_grad():
        out = det(images)
    assert len(out.predictions) == 2 and "features" in out.taps
    for pred, im in zip(out.predictions, images):
        if len(pred["boxes"]):
            assert pred["labels"].min() >= 1 and pred["labels"].max() <= 2
            assert pred["boxes"][:, 2].max() <= im.shape[-1] + 1e-3 and pred["boxes"][:, 3].max() <= im.shape[-2] + 1e-3
    with torch.no_grad():
        taps = det(images, taps_only=True)
    assert taps.predictions is None and taps.losses == {} and list(taps.taps) == ["features", "image_sizes",
                                                                                  "batch_hw", "targets"]


def test_crowd_boxes_are_ignored_and_training_needs_targets():
    det = tiny_detector("retinanet").train()
    image, target = TinyBoxes()[0]
    target = dict(target, iscrowd=torch.tensor([1, 0]))
    out = det([image], [target])
    assert out.taps["targets"][0]["boxes"].shape[0] == 1
    with pytest.raises(ValueError, match="needs targets"):
        det([image])


def test_feature_transform_applies_to_every_level():
    det = tiny_detector("retinanet", feature_transform=lambda f: f * 0).eval()
    with torch.no_grad():
        feats = det([torch.rand(3, SIZE, SIZE)], taps_only=True).taps["features"]
    assert all(float(f.abs().sum()) == 0 for f in feats.values())


def test_bad_arguments_and_missing_weights_file(tmp_path):
    with pytest.raises(ValueError, match="arch must be one of"):
        build_detector("yolo", "resnet18", 2)
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_detector("retinanet", "not_a_network", 2)
    with pytest.raises(ValueError, match="cannot tap"):
        build_detector("retinanet", "vit_tiny_patch16_224", 2)   # no stride-4 map
    with pytest.raises(ValueError, match="trained from scratch"):
        build_detector("retinanet", "regnetx_002", 2, pretrained_backbone=tmp_path / "x.pth")
    with pytest.raises(FileNotFoundError, match="download the torchvision checkpoint"):
        build_detector("retinanet", "resnet18", 2, pretrained_backbone=tmp_path / "none.pth")


def test_pretrained_backbone_loads_from_local_file_and_freezes_stem(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    det = build_detector("faster_rcnn", "resnet18", 2, pretrained_backbone=tmp_path / "r18.pth", fpn_channels=16)
    body = det.net.backbone.body
    assert torch.equal(body.conv1.weight, ref.conv1.weight)
    assert not body.conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad
