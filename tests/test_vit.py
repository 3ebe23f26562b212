"""models.vit (chapter 4): token bookkeeping of the block taps, the simple feature pyramid, ViT detectors,
strict loading of local (DINOv2-style) weights, and the trunk inside a detector."""

from __future__ import annotations

import pytest
import torch

from rskd_tutorial.models import FeatureModel, ResNetTrunk, SimpleFeaturePyramid, ViTTrunk, build_vit_detector, load_vit_weights
from rskd_tutorial.models.vit import IMAGENET_MEAN, IMAGENET_STD


def _trunk(**kw) -> ViTTrunk:
    torch.manual_seed(0)
    kw.setdefault("depth", 3)
    return ViTTrunk("vit_tiny_patch16_224", kw.pop("img_size", 64), **kw)


def test_taps_are_the_patch_tokens_reshaped_row_major():
    trunk = _trunk(blocks=[0, -1]).eval()
    x = torch.randn(2, 3, 64, 48)
    taps = trunk(x)
    assert list(taps) == ["block0", "block2"] and trunk.names == ("block0", "block2")
    assert taps["block0"].shape == taps["block2"].shape == (2, 192, 4, 3)
    tokens = trunk.vit.forward_features(x)[:, trunk.vit.num_prefix_tokens:]     # [B, N, D], CLS dropped, normed
    assert torch.allclose(taps["block2"], tokens.reshape(2, 4, 3, 192).permute(0, 3, 1, 2), atol=1e-5)
    every = trunk(x, blocks=range(3))
    assert list(every) == ["block0", "block1", "block2"] and torch.allclose(every["block2"], taps["block2"])


def test_register_tokens_are_dropped_and_sizes_need_not_divide_the_patch():
    torch.manual_seed(0)
    trunk = ViTTrunk("vit_small_patch14_reg4_dinov2", 56, depth=1).eval()
    assert trunk.vit.num_prefix_tokens == 5
    out = trunk(torch.randn(1, 3, 56, 70))["block0"]
    assert out.shape == (1, 384, 4, 5)
    assert trunk(torch.randn(1, 3, 60, 60))["block0"].shape == (1, 384, 5, 5)    # padded to 70 x 70


def test_bad_block_index_is_a_clear_error():
    with pytest.raises(ValueError, match="blocks must be indices"):
        _trunk(blocks=[5])
    with pytest.raises(ValueError, match="unknown timm ViT"):
        ViTTrunk("vit_nonexistent_patch16", 64)


@pytest.mark.parametrize("arch, shapes", [
    ("retinanet", [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]),     # strides 8..128 at 64 px
    ("faster_rcnn", [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]),  # strides 4..64
])
def test_simple_feature_pyramid_levels(arch, shapes):
    pyr = SimpleFeaturePyramid(_trunk(), 32, arch)
    out = pyr(torch.randn(2, 3, 64, 64))
    assert [tuple(v.shape[-2:]) for v in out.values()] == shapes and all(v.shape[1] == 32 for v in out.values())
    if arch == "faster_rcnn":
        assert list(out) == ["0", "1", "2", "3", "pool"]


def test_pyramid_aims_at_the_nominal_strides_for_other_patch_sizes():
    from rskd_tutorial.models.vit import _pyramid_scales

    assert _pyramid_scales(16, (8, 16, 32)) == [2.0, 1.0, 0.5]          # ViTDet
    assert _pyramid_scales(8, (8, 16, 32)) == [1.0, 0.5, 0.25]
    assert _pyramid_scales(14, (8, 16, 32)) == [2.0, 1.0, 0.5]          # DINOv2: strides 7, 14, 28
    pyr = SimpleFeaturePyramid(_trunk(patch_size=8), 16, "retinanet")
    assert [tuple(v.shape[-2:]) for v in pyr(torch.randn(1, 3, 64, 64)).values()] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]


@pytest.mark.parametrize("det_arch", ["retinanet", "faster_rcnn"])
def test_vit_detector_trains_and_predicts(det_arch):
    torch.manual_seed(0)
    det = build_vit_detector("vit_tiny_patch16_224", 64, 2, det_arch=det_arch, out_channels=16, depth=2,
                             anchor_factor=0.5)
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 40.0]]), "labels": torch.tensor([1])} for _ in range(2)]
    det.train()
    out = det(images, targets)
    loss = sum(out.losses.values())
    loss.backward()
    assert torch.isfinite(loss) and det.net.backbone.trunk.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    det.eval()
    with torch.no_grad():
        preds = det(images).predictions
    assert len(preds) == 2 and set(preds[0]) >= {"boxes", "scores", "labels"}


def test_feature_model_sees_what_the_detector_trunk_sees():
    torch.manual_seed(0)
    det = build_vit_detector("vit_tiny_patch16_224", 64, 2, out_channels=16, depth=2).eval()
    trunk = det.net.backbone.trunk
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    with torch.no_grad():
        batch = det.net.transform(images)[0].tensors            # torchvision's normalisation (no resize at 64)
        inside = trunk(batch)["block1"]
        out = FeatureModel(trunk)(torch.stack(images))
    assert out.losses == {} and torch.allclose(out.taps["features"]["block1"], inside, atol=1e-5)
    assert tuple(det.net.transform.image_mean) == IMAGENET_MEAN and tuple(det.net.transform.image_std) == IMAGENET_STD


def test_load_local_weights_strictly_with_dinov2_keys_and_pos_embed_resampling(tmp_path):
    torch.manual_seed(0)
    src = ViTTrunk("vit_small_patch14_dinov2", 56, depth=2).vit
    state = dict(src.state_dict())
    state["mask_token"] = torch.zeros(1, 384)                   # Meta's original DINOv2 checkpoints carry it
    path = tmp_path / "dinov2_vits14_fake.pth"
    torch.save(state, path)
    trunk = ViTTrunk("vit_small_patch14_dinov2", 84, depth=2, weights=path)  # 6 x 6 grid from a 4 x 4 one
    assert torch.equal(trunk.vit.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    assert trunk.vit.pos_embed.shape[1] == 1 + 36
    with pytest.raises(RuntimeError, match="does not fit"):
        load_vit_weights(ViTTrunk("vit_small_patch14_dinov2", 56, depth=1).vit, path)   # extra block
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        ViTTrunk("vit_small_patch14_dinov2", 56, depth=2, weights=tmp_path / "missing.pth")


def test_resnet_trunk_weights_move_into_a_detector():
    from rskd_tutorial.models.detectors import build_detector

    torch.manual_seed(0)
    trunk = ResNetTrunk("resnet18")
    assert trunk.names == ("c5",) and trunk(torch.randn(1, 3, 64, 64))["c5"].shape == (1, 512, 2, 2)
    det = build_detector("retinanet", "resnet18", 2, min_size=64, max_size=64, fpn_channels=16)
    det.net.backbone.body.load_state_dict(trunk.body.state_dict())
    assert torch.equal(det.net.backbone.body.layer4[0].conv1.weight, trunk.body.layer4[0].conv1.weight)
