"""Tests for rskd_tutorial.models.saliency (SCRKD's SOD networks, paper Sec. III-A and III-B)."""

from __future__ import annotations

import pytest
import torch

from rskd_tutorial.models.saliency import (
    ResNetEncoder,
    SaliencyPSPNet,
    SaliencyTransformer,
    build_saliency_model,
)


def test_pspnet_taps_shapes_and_losses() -> None:
    torch.manual_seed(0)
    net = SaliencyPSPNet("resnet18", 16, disentangle=True)
    x, y = torch.rand(2, 3, 64, 64), (torch.rand(2, 1, 128, 128) > 0.5).float()
    out = net(x, y)
    feats = out.taps["features"]
    assert list(feats) == [f"stage{k}" for k in range(1, 6)]
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert all(f.shape[1] == 16 for f in feats.values())
    assert len(out.taps["logits"]) == 5 and all(z.shape == (2, 1, 64, 64) for z in out.taps["logits"])
    assert [tuple(z.shape[-2:]) for z in out.taps["stage_logits"]] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    for name in ("own", "mvcd", "msfd", "aggregation"):
        assert list(out.taps[name]) == list(feats)
    assert out.taps["aggregation"]["stage1"].shape == (2, 3, 32, 32)
    w = out.taps["aggregation"]["stage1"]
    assert float(w.min()) >= 0 and float(w.max()) <= 1
    assert out.predictions.shape == (2, 1, 64, 64) and out.predictions is out.taps["logits"][0]
    assert set(out.losses) == {"loss_sod"} and torch.isfinite(out.losses["loss_sod"])
    out.losses["loss_sod"].backward()
    assert net.heads[4].process[0].weight.grad.abs().sum() > 0


def test_pspnet_eval_and_taps_only() -> None:
    torch.manual_seed(0)
    net = SaliencyPSPNet("resnet18", 8).eval()
    x = torch.rand(1, 3, 32, 32)
    a, b = net(x), net(x, taps_only=True)
    assert a.losses == {} and "mvcd" not in a.taps
    assert torch.equal(a.predictions, b.predictions)           # taps_only computes everything anyway
    assert torch.equal(a.taps["features"]["stage3"], b.taps["features"]["stage3"])
    assert net(x, (torch.rand(1, 1, 32, 32) > 0.5).float()).losses == {}    # no loss in eval mode


def test_disentangle_changes_only_the_heads_input() -> None:
    torch.manual_seed(0)
    plain = SaliencyPSPNet("resnet18", 8)
    torch.manual_seed(0)
    split = SaliencyPSPNet("resnet18", 8, disentangle=True)
    assert sum(p.numel() for p in split.parameters()) > sum(p.numel() for p in plain.parameters())
    state = {k: v for k, v in split.state_dict().items() if not k.startswith(("branches", "aggregate"))}
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state)
    plain.eval(), split.eval()
    x = torch.rand(1, 3, 32, 32)
    # the top-down decoder keeps the original o_k: features agree, logits do not
    assert torch.allclose(plain(x).taps["features"]["stage1"], split(x).taps["features"]["stage1"])
    assert not torch.allclose(plain(x).predictions, split(x).predictions)


def test_resnet50_channels_and_pretrained_file(tmp_path) -> None:
    assert ResNetEncoder("resnet50").channels == (64, 256, 512, 1024, 2048)
    assert ResNetEncoder("resnet18").channels == (64, 64, 128, 256, 512)
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)                        # with fc.*: ignored
    net = SaliencyPSPNet("resnet18", 8, pretrained_backbone=path)
    assert torch.equal(net.encoder.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        SaliencyPSPNet("resnet18", 8, pretrained_backbone=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError):
        SaliencyPSPNet("resnet18", 8, pretrained_backbone=bad)
    with pytest.raises(ValueError):
        ResNetEncoder("resnet7")


def test_transformer_variant() -> None:
    torch.manual_seed(0)
    net = SaliencyTransformer("pvt_v2_b0", 16, disentangle=True)
    x, y = torch.rand(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float()
    out = net(x, y)
    feats = out.taps["features"]
    assert len(feats) == 4 and all(f.shape == (2, 16, 32, 32) for f in feats.values())   # stride-2 stage 1
    assert len(out.taps["logits"]) == 1 and out.predictions.shape == (2, 1, 64, 64)
    assert out.taps["stage_logits"][0].shape == (2, 1, 32, 32)
    assert list(out.taps["mvcd"]) == list(feats)
    assert torch.isfinite(out.losses["loss_sod"])
    assert isinstance(build_saliency_model("transformer", "pvt_v2_b0", 8), SaliencyTransformer)
    with pytest.raises(ValueError):
        build_saliency_model("unet")
