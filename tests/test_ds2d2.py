"""DS2D2 (chapter 2): DISW by hand, the explicit stream against the spatial MSE, every implicit loss on
tiny tensors, and the gradient contract (the student learns, teacher and amplifier never receive a
gradient)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import Matcher

from helpers_detection import TinyBoxes, collate, tiny_detector
from rskd_tutorial.distill import Distiller
from rskd_tutorial.distill.ds2d2 import (
    OFFICIAL_WEIGHTS, TERMS, DS2D2ExplicitLoss, DS2D2Weights, RoISampler, disw, ds2d2_losses, explicit_band_loss,
    giou_aligned, quality_focal_kd, retinanet_kd_targets, roi_kl_kd, roi_l1_kd,
)
from rskd_tutorial.models.detectors import build_detector
from rskd_tutorial.models.outputs import ModelOutput
from rskd_tutorial.spectral import high_frequency_map

# ---------------------------------------------------------------------------------------- DISW


def test_disw_one_box_by_hand():
    # 8x8 padded input, 4x4 grid (scale 1/2): x 2..5 -> cells floor(1)=1 .. ceil(2.5)=3, same for y
    w = disw([torch.tensor([[2.0, 2.0, 5.0, 5.0]])], (4, 4), (8, 8))
    expected = torch.ones(1, 1, 4, 4)
    expected[0, 0, 1:4, 1:4] = 1 + 1 / 9
    assert w.shape == (1, 1, 4, 4) and w.dtype == torch.float32
    assert torch.allclose(w, expected)


def test_disw_two_overlapping_boxes_accumulate():
    # A: cells 0..2 (9 cells); B: cells 1..3 (9 cells); the 2x2 overlap gets both increments
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]])
    w = disw([boxes], (4, 4), (8, 8))[0, 0]
    expected = torch.ones(4, 4)
    expected[0:3, 0:3] += 1 / 9
    expected[1:4, 1:4] += 1 / 9
    assert torch.allclose(w, expected)
    assert torch.isclose(w[1, 1], torch.tensor(1 + 2 / 9))
    assert torch.isclose((w - 1).sum(), torch.tensor(2.0))      # each object adds mass 1


def test_disw_box_on_the_border_is_clamped():
    # x 6..8 -> floor(3)=3 .. ceil(4)=4 -> clamped to 3; y 0..3 -> 0 .. ceil(1.5)=2: 1 x 3 cells
    w = disw([torch.tensor([[6.0, 0.0, 8.0, 3.0]])], (4, 4), (8, 8))[0, 0]
    expected = torch.ones(4, 4)
    expected[0:3, 3] = 1 + 1 / 3
    assert torch.allclose(w, expected)
    assert torch.isclose((w - 1).sum(), torch.tensor(1.0))


def test_disw_uses_the_padded_size_and_handles_empty_images():
    # same box, 16x16 padded batch: scale 1/4 -> x 2..5 -> cells floor(0.5)=0 .. ceil(1.25)=2
    w = disw([torch.zeros(0, 4), torch.tensor([[2.0, 2.0, 5.0, 5.0]])], (4, 4), (16, 16))
    assert torch.equal(w[0], torch.ones(1, 4, 4))
    expected = torch.ones(4, 4)
    expected[0:3, 0:3] = 1 + 1 / 9
    assert torch.allclose(w[1, 0], expected)
    assert torch.equal(disw([torch.zeros(0, 4)], (3, 5), (32, 32)), torch.ones(1, 1, 3, 5))


def test_disw_mass_per_object_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g) * 90
    boxes = torch.cat([xy, xy + 2 + torch.rand(30, 2, generator=g) * 30], dim=1)
    w = disw([boxes[:12], boxes[12:]], (16, 16), (128, 128))
    assert torch.allclose((w - 1).sum(dim=(1, 2, 3)), torch.tensor([12.0, 18.0]), atol=1e-4)


def test_disw_float16_reproduces_the_official_rounding():
    # a box covering a 64x64 grid: A = 4096 >= 2048, so 1 + 1/A rounds to 1 in float16
    big = torch.tensor([[0.0, 0.0, 128.0, 128.0]])
    assert torch.equal(disw([big], (64, 64), (128, 128), dtype="float16"), torch.ones(1, 1, 64, 64))
    assert torch.allclose(disw([big], (64, 64), (128, 128)), torch.full((1, 1, 64, 64), 1 + 1 / 4096))
    small = torch.tensor([[0.0, 0.0, 6.0, 6.0], [2.0, 2.0, 6.0, 6.0]])
    f16 = disw([small], (4, 4), (8, 8), dtype=torch.float16)
    assert torch.allclose(f16, disw([small], (4, 4), (8, 8)), atol=2e-3)
    with pytest.raises(ValueError, match="dtype"):
        disw([small], (4, 4), (8, 8), dtype="bfloat16")


# ------------------------------------------------------------------------------ explicit stream


def _taps(feats, boxes=None, batch_hw=(64, 64)):
    n = next(iter(feats.values())).shape[0]
    boxes = boxes if boxes is not None else [torch.zeros(0, 4)] * n
    return ModelOutput(taps={"features": feats, "batch_hw": batch_hw,
                             "targets": [{"boxes": b, "labels": torch.ones(len(b), dtype=torch.long)} for b in boxes]})


def _identity_adapter(c):
    conv = nn.Conv2d(c, c, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(c)[:, :, None, None])
    return conv


def test_explicit_loss_is_zero_when_features_match():
    g = torch.Generator().manual_seed(0)
    feats = {"p3": torch.randn(2, 4, 8, 8, generator=g), "p4": torch.randn(2, 4, 3, 5, generator=g)}
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 30.0]]), torch.zeros(0, 4)]
    adapter = _identity_adapter(4)
    for band in ("low", "high"):
        loss = DS2D2ExplicitLoss(adapter, band=band)(_taps(feats, boxes), _taps(feats, boxes))
        assert float(loss) == 0.0


def test_explicit_dwt_loss_equals_spatial_mse_with_uniform_weights():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 8, 6, generator=g), torch.randn(2, 3, 8, 6, generator=g)
    low, high = explicit_band_loss(s, t)                     # no weight = uniform 1
    assert torch.allclose((low + 3 * high) / 4, F.mse_loss(s, t), rtol=1e-5)
    # through the module: no boxes -> DISW == 1 everywhere, adapter applied to the student
    adapter = nn.Conv2d(3, 3, 1, bias=False)
    lo, hi = DS2D2ExplicitLoss.pair(3)
    lo.adapter = hi.adapter = adapter
    s_out, t_out = _taps({"p3": s}), _taps({"p3": t})
    spatial = F.mse_loss(adapter(s), t)
    assert torch.allclose((lo(s_out, t_out) + 3 * hi(s_out, t_out)) / 4, spatial, rtol=1e-5)


def test_explicit_loss_weights_objects_by_disw():
    s, t = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)   # every LL difference is -2, details 0
    box = [torch.tensor([[0.0, 0.0, 16.0, 16.0]])]            # on the 4x4 DWT grid of a 64 px batch: 2x2 cells
    loss = DS2D2ExplicitLoss(_identity_adapter(1), band="low")(_taps({"p3": s}, box), _taps({"p3": t}, box))
    assert torch.isclose(loss, torch.tensor(4.0 * (16 + 1) / 16))   # mean of 4 * DISW, DISW sums to 16 + 1
    assert float(DS2D2ExplicitLoss(_identity_adapter(1), band="high")(_taps({"p3": s}, box), _taps({"p3": t}, box))) \
        == pytest.approx(0.0, abs=1e-10)   # float32 filter rounding


def test_explicit_pair_shares_one_adapter_and_loss_grads_reach_student_only():
    lo, hi = DS2D2ExplicitLoss.pair(4)
    assert lo.adapter is hi.adapter
    s = torch.randn(1, 4, 8, 8, requires_grad=True)
    t = torch.randn(1, 4, 8, 8)
    (lo(_taps({"p3": s}), _taps({"p3": t})) + hi(_taps({"p3": s}), _taps({"p3": t}))).backward()
    assert s.grad.abs().sum() > 0 and lo.adapter.weight.grad.abs().sum() > 0 and t.grad is None


# ------------------------------------------------------------------------------ implicit: RetinaNet


def test_quality_focal_kd_by_hand():
    zero = torch.zeros(1, 1)
    assert float(quality_focal_kd(zero, zero, torch.ones(1), 1.0)) == 0.0     # equal logits: focal factor 0
    # student logit 0 (p=0.5), teacher p=1: BCE = log 2, factor |0.5 - 1| = 0.5
    val = quality_focal_kd(zero, torch.full((1, 1), 100.0), torch.ones(1), 1.0)
    assert torch.isclose(val, torch.tensor(0.5 * math.log(2)), rtol=1e-5)
    # weight 0 drops an anchor; the sum is divided by avg_factor
    z_s = torch.zeros(2, 1)
    z_t = torch.tensor([[100.0], [100.0]])
    assert torch.isclose(quality_focal_kd(z_s, z_t, torch.tensor([1.0, 0.0]), 2.0), torch.tensor(0.25 * math.log(2)),
                         rtol=1e-5)


def test_giou_aligned_by_hand():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    # disjoint unit squares 1 apart: IoU 0, union 2, enclosing 3 -> -1/3; identical -> 1
    assert torch.allclose(giou_aligned(a, b), torch.tensor([-1 / 3, 1.0]))


def test_retinanet_kd_targets_weights_and_npos():
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 7], [0, 0, 10, 4.5], [20, 20, 30, 30]])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    # IoUs 1, 0.7 (positive), 0.45 (ignored), 0 (negative); image 2 has no box
    omega, n_pos = retinanet_kd_targets([anchors, anchors], [gt, torch.zeros(0, 4)], matcher, [(16, 16), (16, 16)],
                                        [(2, 2)], [8], 1)
    assert torch.equal(omega, torch.tensor([[1.0, 1, 0, 1], [1, 1, 1, 1]]))
    assert float(n_pos) == 2 + 1      # max(n_pos, 1) per image
    # valid flags: an 8 px image padded to 8 covers only a 2x2 corner of a 4x4 stride-4 grid
    anchors16 = torch.zeros(16, 4)
    omega, _ = retinanet_kd_targets([anchors16], [torch.zeros(0, 4)], matcher, [(8, 8)], [(4, 4)], [4], 1,
                                    pad_divisor=8)
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1
    assert torch.equal(omega[0], expected.reshape(-1))


# ------------------------------------------------------------------------------ implicit: Faster R-CNN


def test_roi_kl_kd_is_a_sum_over_rois_by_hand():
    assert float(roi_kl_kd(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    z_t = torch.tensor([[math.log(3.0), 0.0]]).repeat(2, 1)      # p_T = (0.75, 0.25) at T = 1
    z_s = torch.zeros(2, 2)                                      # p_S = (0.5, 0.5)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert torch.isclose(roi_kl_kd(z_s, z_t, temperature=1.0, weight=1.0), torch.tensor(2 * kl), rtol=1e-5)
    # T^2 and the 0.5 weight
    val = roi_kl_kd(z_s, z_t * 3, temperature=3.0, weight=0.5)
    assert torch.isclose(val, torch.tensor(0.5 * 9 * 2 * kl), rtol=1e-5)


def test_roi_l1_kd_weights_by_teacher_foreground_confidence():
    # K = 2 classes + background at index 0; deltas [N, 3 * 4]
    z_t = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0]])   # q = 1/3 (class 1), 1/2 (class 1)
    d_s = torch.zeros(2, 12)
    d_t = torch.zeros(2, 12)
    d_t[:, 0:4] = 100.0                      # the background's deltas never count
    d_t[0, 4:8] = 1.0                        # RoI 0, class 1: |d| sum 4
    d_t[1, 4:8] = torch.tensor([2.0, 0, 0, 0])
    d_t[:, 8:12] = 50.0                      # class 2 is not the arg-max
    expected = (4 / 3 + 1.0) / (4 * (1 / 3 + 1 / 2))
    assert torch.isclose(roi_l1_kd(d_s, d_t, z_t), torch.tensor(expected), rtol=1e-5)
    # class-agnostic deltas are used as they are
    assert torch.isclose(roi_l1_kd(torch.zeros(2, 4), torch.ones(2, 4), z_t), torch.tensor(1.0), rtol=1e-5)


# ------------------------------------------------------------------------------ detectors end to end


def _trio(arch):
    student = tiny_detector(arch, seed=1)
    teacher = tiny_detector(arch, seed=2)
    amplifier = tiny_detector(arch, seed=3, feature_transform=high_frequency_map)
    return student, teacher, amplifier


def _batch(n=2):
    return collate([TinyBoxes()[i] for i in range(n)])


@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_implicit_terms_are_zero_when_student_features_equal_the_teachers(arch):
    student, teacher, amplifier = _trio(arch)
    losses = ds2d2_losses(student, teacher, amplifier, DS2D2Weights(0, 0, 1, 1))
    assert set(losses) == {"implicit_full", "implicit_high"}
    images, targets = _batch()
    student.train()
    s_out = student(images, targets)
    with torch.no_grad():
        t_out = ModelOutput(taps={**s_out.taps, "features": {k: v.detach() for k, v in s_out.taps["features"].items()}})
    for name, fn in losses.items():
        value = fn(s_out, t_out)
        assert value.dim() == 0 and abs(float(value)) < 1e-6, (name, float(value))
        assert {"cls", "reg"} <= set(fn.last_terms)


@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_no_gradient_reaches_teacher_or_amplifier_and_each_term_trains_the_student(arch):
    student, teacher, amplifier = _trio(arch)
    weights = DS2D2Weights(1.0, 1.0, 1.0, 1.0)
    d = Distiller(student, teacher, ds2d2_losses(student, teacher, amplifier, weights), weights.terms()).train()
    assert not teacher.training and not any(p.requires_grad for p in amplifier.parameters()
                                            if any(p is q for q in d.parameters()))
    images, targets = _batch()
    out = d(images, targets)                          # the Distiller's first-step checks pass
    assert all(f"kd_{t}" in out.losses and torch.isfinite(out.losses[f"kd_{t}"]) for t in TERMS)
    params = [p for p in student.parameters() if p.requires_grad]
    for t in TERMS:
        grads = torch.autograd.grad(out.losses[f"loss_kd_{t}"], params, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), t
    sum(v for k, v in out.losses.items() if k.startswith("loss")).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in amplifier.parameters())
    heads = [fn.head if arch == "retinanet" else fn.roi_heads for n, fn in d.kd_losses.items() if n.startswith("implicit")]
    assert len(heads) == 2 and all(not m.training for h in heads for m in h.modules())
    assert d.kd_losses["explicit_low"].adapter.weight.grad is not None


def test_roi_sampler_is_seeded_shared_and_leaves_the_global_rng_alone():
    student = tiny_detector("faster_rcnn", seed=1).train()
    images, targets = _batch()
    s_out = student(images, targets)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = RoISampler(student.net.roi_heads, seed=5)
    rois = a(s_out)
    assert torch.equal(torch.rand(3), expected_next)          # the global stream was not consumed
    assert a(s_out) is rois and int(a.calls) == 1              # shared: one set a step
    b = RoISampler(student.net.roi_heads, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(b(s_out), rois))   # seeded: reproducible
    c = RoISampler(student.net.roi_heads, seed=5, shared=False)
    first, second = c(s_out), c(s_out)
    assert int(c.calls) == 2 and any(not torch.equal(x, y) for x, y in zip(first, second))
    assert all(len(r) <= 512 for r in rois) and not any(r.requires_grad for r in rois)


def test_ds2d2_losses_validates_and_drops_zero_terms():
    student, teacher, amplifier = _trio("retinanet")
    w = OFFICIAL_WEIGHTS[("retinanet", "dior")]
    assert w.terms() == {"explicit_low": 1e-5, "explicit_high": 1e-5, "implicit_full": 1.0, "implicit_high": 1.0}
    assert set(ds2d2_losses(student, teacher, None, w.only("explicit_low"))) == {"explicit_low"}
    with pytest.raises(ValueError, match="amplifier"):
        ds2d2_losses(student, teacher, None, w)
    with pytest.raises(ValueError, match="one architecture"):
        ds2d2_losses(student, tiny_detector("faster_rcnn"), amplifier, w)
    narrow = build_detector("retinanet", "resnet18", 2, min_size=64, max_size=64, fpn_channels=8)
    with pytest.raises(ValueError, match="FPN widths"):
        ds2d2_losses(student, narrow, None, w.only("explicit_low"))
    with pytest.raises(ValueError, match="unknown DS2D2 terms"):
        w.only("explicit")

