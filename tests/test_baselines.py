"""Baseline KD losses: hand-computable values on small tensors, and a training step through fit."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

from rskd_tutorial.distill.baselines import (ATLoss, CWDLoss, FGDLoss, FitNetLoss, LogitKDLoss, MGDLoss, PKDLoss,
                                             attention_map, channel_log_distribution, pearson_normalize)
from rskd_tutorial.models.outputs import ModelOutput


def out(feat, **taps):
    return ModelOutput(taps={"features": OrderedDict(p3=feat), **taps})


def test_fitnet_with_known_adapter():
    loss = FitNetLoss(["p3"], 1, 1)
    with torch.no_grad():
        loss.adapters["p3"].weight.fill_(2.0)
        loss.adapters["p3"].bias.zero_()
    s, t = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    assert float(loss(out(s), out(t))) == pytest.approx(4.0)


def test_fitnet_resizes_student_to_teacher_and_missing_level_error():
    loss = FitNetLoss(["p3"], 2, 3)
    value = loss(out(torch.randn(1, 2, 4, 4)), out(torch.randn(1, 3, 8, 8)))
    assert value.dim() == 0 and torch.isfinite(value)
    with pytest.raises(KeyError, match="feature level 'p9' missing"):
        FitNetLoss(["p9"], 2, 2)(out(torch.randn(1, 2, 2, 2)), out(torch.randn(1, 2, 2, 2)))


def test_at_hand_case_and_scale_invariance():
    s = torch.tensor([[1.0, 0.0]]).reshape(1, 1, 1, 2)
    t = torch.tensor([[0.0, 1.0]]).reshape(1, 1, 1, 2)
    # Q_S = (1, 0), Q_T = (0, 1): mean squared difference over 2 positions = 1
    assert float(ATLoss()(out(s), out(t))) == pytest.approx(1.0)
    f = torch.randn(2, 3, 4, 4)
    assert float(ATLoss()(out(3 * f), out(f))) == pytest.approx(0.0, abs=1e-10)
    assert attention_map(f).norm(dim=1).allclose(torch.ones(2))


def test_cwd_hand_case():
    t = torch.zeros(1, 1, 1, 2)                                          # softmax (1/2, 1/2)
    s = torch.tensor([math.log(3.0), 0.0]).reshape(1, 1, 1, 2)           # softmax (3/4, 1/4)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)   # KL(T || S) = 0.5 ln(4/3)
    assert float(CWDLoss(["p3"], 1, 1)(out(s), out(t))) == pytest.approx(expected, rel=1e-5)
    assert float(CWDLoss(["p3"], 1, 1, tau=2.0)(out(t), out(t))) == pytest.approx(0.0, abs=1e-7)


def test_cwd_channel_distribution_hand_case():
    f = torch.zeros(1, 2, 1, 2)
    f[0, 1, 0, 0] = math.log(3.0)                                        # channel 1: softmax (3/4, 1/4)
    p = channel_log_distribution(f).exp()
    assert p.shape == (1, 2, 2)
    assert torch.allclose(p[0], torch.tensor([[0.5, 0.5], [0.75, 0.25]]))
    assert torch.allclose(channel_log_distribution(2 * f, tau=2.0), channel_log_distribution(f))


def test_fgd_focal_terms_on_hand_layout():
    loss = FGDLoss(["p3"], channels=1, tau=0.5, alpha=1.0, beta=1.0, gamma=1.0, lam=0.0)
    s, t = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    taps = {"targets": [{"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]])}], "batch_hw": (8, 8)}
    value = loss(out(s, **taps), out(t))
    # box covers 2x2 = 4 cells (fg 1/4 each), 12 background cells (1/12 each); attention is 1
    # everywhere (uniform maps, one channel), so fg = bg = 1 and the attention term is 0.
    assert float(loss.last_terms["fg"]) == pytest.approx(1.0)
    assert float(loss.last_terms["bg"]) == pytest.approx(1.0)
    assert float(loss.last_terms["attention"]) == pytest.approx(0.0, abs=1e-6)
    assert float(value) == pytest.approx(2.0)


def test_mgd_with_zero_generator_regresses_teacher_energy():
    loss = MGDLoss(["p3"], 1, 1, alpha=1.0, mask_ratio=0.5)
    for p in loss.generators.parameters():
        torch.nn.init.zeros_(p)
    t = 2 * torch.ones(1, 1, 2, 2)
    assert float(loss(out(torch.randn(1, 1, 2, 2)), out(t))) == pytest.approx(16.0)
    with pytest.raises(ValueError, match="mask_ratio"):
        MGDLoss(["p3"], 1, 1, mask_ratio=1.0)


def test_mgd_random_mask_shape_and_ratio():
    torch.manual_seed(0)
    keep = MGDLoss(["p3"], 1, 1, mask_ratio=0.65).random_mask(2, 100, 100)
    assert keep.shape == (2, 1, 100, 100) and keep.dtype == torch.bool
    assert abs(1.0 - keep.float().mean().item() - 0.65) < 0.01          # 20,000 draws: std ~0.003
    assert bool(MGDLoss(["p3"], 1, 1, mask_ratio=0.0).random_mask(1, 3, 3).all())


def test_pkd_invariant_to_affine_and_anticorrelated_case():
    t = torch.randn(2, 3, 4, 4)
    assert float(PKDLoss()(out(3 * t + 1), out(t))) == pytest.approx(0.0, abs=1e-8)
    # perfectly anti-correlated: (norm(s) - norm(t))^2 = 4 norm(t)^2, mean 4, halved -> 2
    assert float(PKDLoss()(out(-t), out(t))) == pytest.approx(2.0, rel=1e-4)
    n = pearson_normalize(t)
    assert n.mean(dim=(0, 2, 3)).abs().max() < 1e-5


def test_logit_kd_hand_case_and_zero_for_equal():
    class Head(torch.nn.Module):
        def forward(self, feats):
            return {"cls_logits": torch.zeros(1, 1, 1)}          # teacher p = 1/2

    loss = LogitKDLoss(Head())
    s = ModelOutput(taps={"cls_logits": torch.full((1, 1, 1), math.log(3.0)), "features": OrderedDict()})
    t = ModelOutput(taps={"features": OrderedDict(p3=torch.zeros(1, 1, 1, 1))})
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert float(loss(s, t)) == pytest.approx(expected, rel=1e-5)
    s0 = ModelOutput(taps={"cls_logits": torch.zeros(1, 1, 1)})
    assert float(loss(s0, t)) == pytest.approx(0.0, abs=1e-7)
    assert not any(p.requires_grad for p in loss.teacher_head.parameters())
