"""DIPKD (chapter 3): attention sums, KLD masks on a hand-made layout, SNS on clean and speckled maps,
RIT by hand, the module switches, and the gradient contract the official code breaks (the feature
loss must reach the student, never the teacher)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from helpers_detection import TinyBoxes, collate, tiny_detector
from rskd_tutorial.distill import Distiller
from rskd_tutorial.distill.dipkd import (
    DIPKDConfig, DIPKDLoss, ReverseInformationTransfer, SelectiveNoiseSuppression, attention_maps, dipkd_loss,
    kld_masks,
)
from rskd_tutorial.distill.masks import attention_maps as masks_attention_maps
from rskd_tutorial.models.outputs import ModelOutput
from rskd_tutorial.spectral import enl

# ------------------------------------------------------------------------------------- attention


def test_attention_is_the_shared_one_and_sums_to_hw_and_c():
    assert attention_maps is masks_attention_maps          # one home (distill.masks)
    feat = torch.randn(3, 7, 5, 6)
    for tau in (0.25, 0.5, 1.0):
        sp, ch = attention_maps(feat, tau)
        assert sp.shape == (3, 1, 5, 6) and ch.shape == (3, 7, 1, 1)
        assert torch.allclose(sp.sum(dim=(2, 3)), torch.full((3, 1), 30.0), atol=1e-4)
        assert torch.allclose(ch.sum(dim=1), torch.full((3, 1, 1), 7.0), atol=1e-5)


# ------------------------------------------------------------------------------------- KLD masks


def test_kld_masks_box_cells_and_scales_without_drop():
    # 4x4 grid over an 8x8 padded batch (scale 1/2): box x, y 0..4 -> cells floor(0)=0 .. ceil(2)=2 (9 cells)
    m, s = kld_masks([torch.tensor([[0.0, 0.0, 4.0, 4.0]])], (4, 4), (8, 8), mask_rate=0.0)
    assert m.shape == s.shape == (1, 1, 4, 4) and m.dtype == s.dtype == torch.float32
    box = torch.zeros(4, 4, dtype=torch.bool)
    box[:3, :3] = True
    assert torch.equal(m[0, 0].bool(), box)                       # M = 1 exactly on the box cells
    assert torch.allclose(s[0, 0][box], torch.full((9,), 1 / 9))  # S = 1 / (H_r W_r)
    assert torch.allclose(s[0, 0][~box], torch.full((7,), 1 / 7))  # S = 1 / N_bg on the 7 kept cells
    assert float((m * s).sum()) == pytest.approx(1.0) and float(((1 - m) * s).sum()) == pytest.approx(1.0)


def test_kld_masks_overlaps_take_the_smaller_box_and_padding_maps_by_batch_size():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0],     # 3x3 = 9 cells
                          [0.0, 0.0, 8.0, 2.0]])    # x 0..3, y 0..1: 8 cells
    m, s = kld_masks([boxes], (4, 4), (8, 8), mask_rate=0.0)
    assert float(s[0, 0, 0, 0]) == pytest.approx(1 / 8) and float(s[0, 0, 2, 2]) == pytest.approx(1 / 9)
    # a 30-px image padded to 32: boxes map by the padded size, so x = 30 lands in cell ceil(30/4) = 8 -> 7
    m, _ = kld_masks([torch.tensor([[24.0, 0.0, 30.0, 4.0]])], (8, 8), (32, 32), mask_rate=0.0)
    assert m[0, 0, 0].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]


def test_kld_masks_drop_is_u_below_rate_with_a_seeded_generator():
    boxes = [torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.zeros(0, 4)]
    g = torch.Generator().manual_seed(3)
    u = torch.rand((2, 1, 64, 64), generator=torch.Generator().manual_seed(3))
    m, s = kld_masks(boxes, (64, 64), (128, 128), mask_rate=0.25, generator=g)
    target = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    target[0, 0, :5, :5] = True                                   # x, y 0..ceil(4) = 0..4
    dropped = ~target & (u < 0.25)                                # paper semantics: drop iff u < mask_rate
    assert torch.equal(m.bool(), target | dropped)
    assert torch.equal(s == 0, dropped)                           # dropped cells leave both losses
    kept = ~(target | dropped)
    for b in range(2):                                            # kept background sums to 1 per image
        assert float(s[b][kept[b]].sum()) == pytest.approx(1.0, rel=1e-5)
    # E[dropped fraction] = mask_rate: 8167 background cells, std of the fraction ~ 0.005
    frac = dropped.sum().item() / (~target).sum().item()
    assert abs(frac - 0.25) < 0.02
    # the same seed gives the same mask; rate 1 keeps only the targets (Table 5, 100 %)
    m2, _ = kld_masks(boxes, (64, 64), (128, 128), 0.25, torch.Generator().manual_seed(3))
    assert torch.equal(m, m2)
    m1, s1 = kld_masks(boxes, (64, 64), (128, 128), 1.0)
    assert m1.all() and float(s1[~target].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="mask_rate"):
        kld_masks(boxes, (4, 4), (8, 8), 1.5)


# ------------------------------------------------------------------------------------------- SNS


def test_sns_keeps_a_piecewise_constant_map_and_smooths_speckle():
    sns = SelectiveNoiseSuppression(tau=0.5, weighting="loss", levels=3, threshold_scale=0.5)
    clean = torch.zeros(1, 4, 64, 64)
    clean[..., 17:41, 9:35] = 1.0                                 # a block off the Haar grid: the soft
    out = sns.denoise(clean)                                      # threshold only nibbles at its edges
    assert float((out - clean).norm() / clean.norm()) < 0.06
    aligned = torch.zeros(1, 2, 32, 32)
    aligned[..., 8:24, 0:16] = 3.0                                # on the 8-cell grid: no detail at all
    assert torch.allclose(sns.denoise(aligned), aligned, atol=1e-5)

    torch.manual_seed(0)
    flat = torch.distributions.Gamma(torch.tensor(1.0), torch.tensor(1.0)).sample((1, 8, 64, 64))  # L = 1
    den = sns.denoise(flat)
    assert den.var() < 0.6 * flat.var()
    assert abs(float(den.mean() - flat.mean())) < 1e-4           # the approximation (mean) is untouched
    assert enl(den) > 1.5 * enl(flat)


def test_sns_teacher_side_has_no_gradient_and_input_weighting_uses_own_attention():
    s = torch.randn(2, 3, 16, 16, requires_grad=True)
    t = torch.randn(2, 3, 16, 16, requires_grad=True)
    fs, ft, w = SelectiveNoiseSuppression()(s, t)
    assert fs.requires_grad and not ft.requires_grad and not w.requires_grad
    sp, ch = attention_maps(t)
    assert torch.allclose(w, sp * ch)                             # the teacher's attention weights the loss
    fs.sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    sns_in = SelectiveNoiseSuppression(weighting="input", threshold_scale=0.0)
    fs, ft, w = sns_in(s, t)
    sp_s, ch_s = attention_maps(s)
    assert w is None and torch.allclose(fs, s * sp_s * ch_s, atol=1e-5)   # zero threshold: denoiser = identity


# ------------------------------------------------------------------------------------------- RIT


def test_rit_gate_and_loss_by_hand():
    rit = ReverseInformationTransfer(3)
    for p in rit.parameters():
        torch.nn.init.zeros_(p)                                   # matcher residual = 0: gate = max sigmoid(s)
    scores = torch.zeros(1, 3, 2, 2)
    scores[0, 1, 0, 0] = 20.0                                     # clipped to 10
    scores[0, 2, 1, 1] = -1.0
    gate = rit.gate(scores)
    expected = torch.full((1, 1, 2, 2), 0.5)
    expected[0, 0, 0, 0] = torch.sigmoid(torch.tensor(10.0))
    assert torch.allclose(gate, expected + 1e-6)
    feat = torch.full((1, 5, 2, 2), 3.0)
    loss, a = rit(feat, scores)
    # mean_c(F * a) - a = (3 - 1) a, summed over the 4 positions
    assert float(loss) == pytest.approx(float((2 * a).pow(2).sum()), rel=1e-6)
    # RetinaNet scores [B, A, K, H, W] flatten to A K matcher channels
    assert ReverseInformationTransfer(6).gate(torch.randn(2, 3, 2, 4, 4)).shape == (2, 1, 4, 4)


# ------------------------------------------------------------------------------- the full loss


def _out(feat, boxes, objectness=None):
    taps = {"features": OrderedDict(p2=feat), "targets": [{"boxes": b} for b in boxes], "batch_hw": (8, 8)}
    if objectness is not None:
        taps["objectness"] = [objectness]
    return ModelOutput(taps=taps)


def test_loss_without_sns_is_the_masked_mse_of_eqs_11_12():
    cfg = DIPKDConfig(alpha=1.0, beta=1.0, gamma=0.0, sns=False, rit=False, mask_rate=0.0, levels=("p2",))
    loss = DIPKDLoss("faster_rcnn", 2, 3, cfg)
    s, t = torch.ones(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0]])]
    value = loss(_out(s, boxes), _out(t, boxes))
    # squared error 1 in each of 2 channels; each region's scale sums to 1 -> 2 + 2
    assert loss.last_terms["tar"].item() == pytest.approx(2.0) and loss.last_terms["ntar"].item() == pytest.approx(2.0)
    assert float(value) == pytest.approx(4.0)
    # KLD off: one uniform region (1 / HW) weighted alpha + beta (SNS on: constant maps are left as they
    # are, and the attention of an all-zero teacher is uniform, so the weight is 1 everywhere)
    loss = DIPKDLoss("faster_rcnn", 2, 3, DIPKDConfig(alpha=1.0, beta=0.5, kld=False, rit=False, levels=("p2",)))
    value = loss(_out(s, boxes), _out(t, boxes))
    assert set(loss.last_terms) == {"fea"} and float(value) == pytest.approx(1.5 * 2.0)


def test_each_module_switches_off_and_all_off_is_an_error():
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    boxes = [torch.tensor([[0.0, 0.0, 3.0, 5.0]]), torch.tensor([[2.0, 2.0, 6.0, 6.0]])]
    obj = torch.randn(2, 3, 8, 8)
    expect = {(1, 1, 1): {"tar", "ntar", "rit"}, (0, 1, 1): {"tar", "ntar", "rit"}, (1, 0, 1): {"fea", "rit"},
              (1, 1, 0): {"tar", "ntar"}, (0, 0, 1): {"rit"}, (1, 0, 0): {"fea"}}
    values = {}
    for flags, terms in expect.items():
        cfg = DIPKDConfig(sns=bool(flags[0]), kld=bool(flags[1]), rit=bool(flags[2]), levels=("p2",))
        loss = DIPKDLoss("faster_rcnn", 4, 3, cfg, generator=torch.Generator().manual_seed(0))
        assert (len(loss.rit) > 0) == bool(flags[2])              # no RIT parameters when RIT is off
        values[flags] = float(loss(_out(s, boxes, obj), _out(t, boxes)))
        assert set(loss.last_terms) == terms, flags
    assert values[(1, 1, 1)] != pytest.approx(values[(0, 1, 1)])  # SNS changes the loss
    with pytest.raises(ValueError, match="distils nothing"):
        DIPKDLoss("faster_rcnn", 4, 3, DIPKDConfig(sns=False, kld=False, rit=False))
    with pytest.raises(ValueError, match="mask_rate"):
        DIPKDConfig(mask_rate=-0.1)


@pytest.mark.parametrize("arch", ["faster_rcnn", "retinanet"])
@pytest.mark.parametrize("source", ["student", "teacher_features"])
def test_feature_loss_reaches_the_student_never_the_teacher(arch, source):
    student, teacher = tiny_detector(arch, seed=1), tiny_detector(arch, seed=2)
    images, targets = collate([TinyBoxes()[i] for i in range(2)])
    cfg_feat = DIPKDConfig(rit=False, rit_source=source)          # SNS + KLD alone: the code's dead terms
    cfg_rit = DIPKDConfig(sns=False, kld=False, rit_source=source)
    # the Distiller's first-step checks: finite, non-zero student gradient, teacher frozen
    d = Distiller(student, teacher, {"feat": dipkd_loss(student, teacher, cfg_feat),
                                     "rit": dipkd_loss(student, teacher, cfg_rit),
                                     "all": dipkd_loss(student, teacher, DIPKDConfig(rit_source=source))},
                  {"feat": 1.0, "rit": 1.0, "all": 1.0})
    d.train()
    out = d(images, targets)
    params = dict(student.named_parameters())
    fpn = [p for n, p in params.items() if n.startswith("net.backbone.") and p.requires_grad]
    for term in ("loss_kd_feat", "loss_kd_rit"):
        grads = torch.autograd.grad(out.losses[term], fpn, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), term
    sum(v for k, v in out.losses.items() if k.startswith("loss")).backward()
    assert all(p.grad is None for p in teacher.parameters())
    # RIT's score head is the student's: it learns from the RIT term in both sources
    head = student.net.rpn.head if arch == "faster_rcnn" else student.net.head.classification_head
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    rit_params = list(d.kd_losses["all"].rit.parameters())
    assert rit_params and all(p.grad is not None for p in rit_params)
    # the student's head is not registered twice inside the loss
    assert not any(n.startswith("_score_head") for n, _ in d.kd_losses["all"].named_parameters())


def test_dipkd_loss_reads_levels_and_channels_from_the_detectors():
    s, t = tiny_detector("retinanet", seed=1), tiny_detector("retinanet", "resnet34", seed=2)
    loss = dipkd_loss(s, t)
    assert loss.levels == ["p3", "p4", "p5", "p6"]
    assert loss.rit["p3"].conv1.in_channels == 9 * 2               # A anchors x K = 2 classes
    f = dipkd_loss(tiny_detector("faster_rcnn"), tiny_detector("faster_rcnn", seed=3))
    assert f.levels == ["p2", "p3", "p4", "p5"] and f.rit["p2"].conv1.in_channels == 3
    with pytest.raises(ValueError, match="architecture"):
        dipkd_loss(s, tiny_detector("faster_rcnn"))
