"""Tests for rskd_tutorial.distill.scrkd and rskd_tutorial.recipes.scrkd (SCRKD paper Sec. III-C to III-F)."""

from __future__ import annotations

import math

import pytest
import torch

from rskd_tutorial.distill import Distiller
from rskd_tutorial.distill.scrkd import (
    STAGE_MATCHING,
    DSDLoss,
    MultiScaleFeatureDistillation,
    MVCDLoss,
    decoupled_probabilities,
    dsd_loss,
    hcl_loss,
    mvcd_loss,
    mvcd_terms,
    scrkd_losses,
    self_correlations,
    sod_loss,
    stage_matching,
)
from rskd_tutorial.models.saliency import SaliencyPSPNet

SIG1 = 1 / (1 + math.exp(-1))          # sigma(1) = 0.731


# ---------------------------------------------------------------- MVCD

def test_self_correlations_hand_computed_2x2x2() -> None:
    # channel 0 = [[1, 0], [0, 0]], channel 1 = [[0, 1], [0, 0]]
    x = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]])
    c, h, w = self_correlations(x)
    # channel rows (1,0,0,0) and (0,1,0,0) are orthogonal
    assert torch.allclose(c[0], torch.eye(2))
    # height rows (C x W): h=0 -> (1,0 | 0,1), h=1 -> zeros (norm clamped at 1e-8: cosine 0, itself too)
    assert torch.allclose(h[0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # width rows (C x H): w=0 -> (1,0 | 0,0), w=1 -> (0,0 | 1,0): orthogonal
    assert torch.allclose(w[0], torch.eye(2))


def test_mvcd_loss_hand_computed_2x2x2() -> None:
    s = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]])
    t = torch.ones(1, 2, 2, 2)                 # every row identical: all three matrices are all-ones
    terms = mvcd_terms(s, t)
    # mean |I - 1| = 2/4; mean |[[1,0],[0,0]] - 1| = 3/4; mean |I - 1| = 2/4
    assert terms["channel"].item() == pytest.approx(0.5)
    assert terms["height"].item() == pytest.approx(0.75)
    assert terms["width"].item() == pytest.approx(0.5)
    assert mvcd_loss(s, t).item() == pytest.approx(1.75)


def test_mvcd_channel_view_ignores_positive_per_channel_scale() -> None:
    torch.manual_seed(0)
    t = torch.randn(2, 4, 5, 6)
    scale = torch.tensor([0.5, 2.0, 3.0, 7.0]).view(1, 4, 1, 1)
    terms = mvcd_terms(t * scale, t)
    assert terms["channel"].item() == pytest.approx(0.0, abs=1e-6)
    # the height / width rows mix channels, so only a common positive scale leaves them unchanged
    assert terms["height"].item() > 1e-3
    sample_scale = torch.tensor([0.1, 40.0]).view(2, 1, 1, 1)
    assert mvcd_loss(t * sample_scale, t).item() == pytest.approx(0.0, abs=1e-6)
    assert mvcd_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_mvcd_aligns_sizes_and_only_the_student_gets_gradient() -> None:
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = mvcd_loss(s, t)                     # student up-sampled to 8 x 8
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    pooled = mvcd_loss(s.detach(), t.detach(), align="teacher")   # teacher pooled down to 4 x 4
    assert torch.isfinite(pooled)
    with pytest.raises(ValueError, match="channels"):
        mvcd_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))


# ---------------------------------------------------------------- MSFD

def test_hcl_loss_pyramid_weights() -> None:
    torch.manual_seed(0)
    t = torch.randn(2, 3, 7, 7)
    assert hcl_loss(t, t).item() == pytest.approx(0.0)
    # a constant offset c gives MSE c^2 at every pyramid level, so the normalised sum is c^2
    assert hcl_loss(t + 0.5, t).item() == pytest.approx(0.25, rel=1e-5)
    # h = 7 keeps pools 4, 2, 1 with weights 1/2, 1/4, 1/8 (normaliser 1.875)
    f = torch.randn(2, 3, 7, 7)
    mse = torch.nn.functional.mse_loss
    pool = torch.nn.functional.adaptive_avg_pool2d
    expected = (mse(f, t) + 0.5 * mse(pool(f, 4), pool(t, 4)) + 0.25 * mse(pool(f, 2), pool(t, 2))
                + 0.125 * mse(pool(f, 1), pool(t, 1))) / 1.875
    assert hcl_loss(f, t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_msfd_weights_sum_to_one_and_targets_follow_the_matching() -> None:
    torch.manual_seed(0)
    msfd = MultiScaleFeatureDistillation(channels=8, n_stages=3, matching="2x")
    feats = [torch.randn(2, 8, s, s) for s in (8, 4, 2)]
    teacher = [torch.randn(2, 8, s, s) for s in (16, 8, 4)]        # 2x larger input
    targets = msfd.teacher_targets(teacher, [f.shape[-2:] for f in feats])
    # student stage k meets teacher stage k+1 (same size); the last meets the resized last teacher stage
    assert torch.equal(targets[0], teacher[1]) and torch.equal(targets[1], teacher[2])
    assert targets[2].shape[-2:] == (2, 2)
    loss = msfd.distil(feats, targets)
    assert torch.isfinite(loss) and loss.item() > 0
    lam = msfd.last_weights
    assert lam.shape == (2, 3, 3)
    assert torch.allclose(lam.sum(-1), torch.ones(2, 3), atol=1e-6)
    # cosines lie in [-1, 1]: no two weights differ by more than e^2
    assert (lam.max(-1).values / lam.min(-1).values).max() <= math.exp(2) + 1e-4


def test_msfd_4x_rule_pools_the_next_teacher_stage() -> None:
    msfd = MultiScaleFeatureDistillation(channels=4, n_stages=2, matching="4x")
    teacher = [torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8)]
    t = msfd.teacher_targets(teacher, [(4, 4), (2, 2)])
    assert torch.allclose(t[0], torch.nn.functional.adaptive_avg_pool2d(teacher[1], 4))
    assert torch.allclose(t[1], torch.nn.functional.adaptive_avg_pool2d(teacher[1], 2))


# ---------------------------------------------------------------- DSD

def test_dsd_zero_for_equal_logits_and_compressed_range() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 1, 5, 5) * 10
    assert dsd_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # softmax over probabilities: the salient class lives in [sigma(-1), sigma(1)] = [0.269, 0.731]
    q = decoupled_probabilities(torch.tensor([-1e4, 0.0, 1e4]).view(1, 1, 1, 3))
    assert q[0, 0, 0].tolist() == pytest.approx([1 - SIG1, 0.5, SIG1], abs=1e-6)
    assert torch.allclose(q.sum(1), torch.ones(1, 1, 3))


def test_dsd_hand_computed_and_bounded() -> None:
    zs = torch.zeros(1, 1, 1, 1)                      # q_S = (0.5, 0.5)
    zt = torch.full((1, 1, 1, 1), 1e4)                # q_T = (0.731, 0.269)
    kl = SIG1 * math.log(SIG1 / 0.5) + (1 - SIG1) * math.log((1 - SIG1) / 0.5)
    assert dsd_loss(zs, zt).item() == pytest.approx(kl / 2, rel=1e-5)    # mean over the 2 channels
    # the largest possible value (opposite certain predictions) is only (2 sigma(1) - 1) * 1 / 2 = 0.231
    worst = dsd_loss(torch.full((1, 1, 1, 1), -1e4), zt).item()
    assert worst == pytest.approx((2 * SIG1 - 1) * 1.0 / 2, rel=1e-5)


def test_dsd_resizes_the_student_to_the_teacher() -> None:
    zs = torch.zeros(1, 1, 4, 4, requires_grad=True)
    zt = torch.ones(1, 1, 8, 8)
    loss = dsd_loss(zs, zt)
    loss.backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0


# ---------------------------------------------------------------- SOD loss

def test_sod_loss_hand_made_mask() -> None:
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    z = torch.zeros(1, 1, 2, 2)                       # p = 0.5 everywhere
    bce = math.log(2)
    iou = 1 - (0.5 + 1) / ((2.0 + 1.0) - 0.5 + 1)     # inter 0.5, sum(p + y) 3
    assert sod_loss(z, mask).item() == pytest.approx(bce + iou, rel=1e-6)
    # five deep-supervision maps weighted 1, 1, 1/2, 1/4, 1/8
    assert sod_loss([z] * 5, mask).item() == pytest.approx(2.875 * (bce + iou), rel=1e-6)
    # an 8 x 8 mask: the top-left 4 x 4 block (inter 8, sum(p + y) 48)
    big = torch.nn.functional.interpolate(mask, size=(8, 8), mode="nearest")
    assert sod_loss(torch.zeros(1, 1, 8, 8), big).item() == pytest.approx(bce + (1 - (8 + 1) / (48 - 8 + 1)), rel=1e-6)
    # a mask of another size is resized (antialiased bilinear) to each map's size
    z4 = torch.randn(1, 1, 4, 4)
    small = torch.nn.functional.interpolate(big, size=(4, 4), mode="bilinear", antialias=True)
    assert sod_loss(z4, big).item() == pytest.approx(sod_loss(z4, small).item(), rel=1e-6)
    with pytest.raises(ValueError):
        sod_loss([z, z], mask, weights=(1.0,))


# ---------------------------------------------------------------- matching, the Distiller, the cascade

def test_stage_matching_rules() -> None:
    assert stage_matching(224, 112).name == "2x"
    assert stage_matching(448, 112).name == "4x"
    assert stage_matching(448, 224).name == "2x"
    assert stage_matching(448, 224, "transformer").name == "same"
    assert STAGE_MATCHING["4x"].mvcd_stages == (2, 3, 4, 5)
    assert STAGE_MATCHING["2x"].teacher_stage(1, 5) == 2 and STAGE_MATCHING["2x"].teacher_stage(5, 5) == 5
    with pytest.raises(ValueError):
        stage_matching(112, 224)


def _pair(channels: int = 8) -> tuple[SaliencyPSPNet, SaliencyPSPNet]:
    torch.manual_seed(0)
    return SaliencyPSPNet("resnet18", channels, disentangle=True), SaliencyPSPNet("resnet18", channels)


def test_no_gradient_reaches_the_teacher_and_every_term_reaches_the_student() -> None:
    student, teacher = _pair()
    losses, weights = scrkd_losses(8, 5, "2x")
    assert weights == {"mvcd": 1.0, "msfd": 1.0, "dsd": 10.0}
    d = Distiller(student, teacher, losses, weights, student_input=32, teacher_input=64)
    d.train()
    assert not teacher.training
    images = {64: torch.rand(2, 3, 64, 64), 32: torch.rand(2, 3, 32, 32)}
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    out = d(images, mask)                               # the Distiller's first-step checks run here
    for name in ("loss_sod", "loss_kd_mvcd", "loss_kd_msfd", "loss_kd_dsd"):
        assert torch.isfinite(out.losses[name]) and out.losses[name].item() > 0
    total = sum(v for k, v in out.losses.items() if k.startswith("loss"))
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert student.branches[0].mvcd[0].weight.grad.abs().sum() > 0
    assert student.branches[0].msfd[0].weight.grad.abs().sum() > 0
    assert all(b.running_mean.abs().sum() == 0 for b in teacher.modules() if isinstance(b, torch.nn.BatchNorm2d))


def test_ablation_components_and_missing_branches() -> None:
    losses, weights = scrkd_losses(8, 5, "2x", components=("dsd",))
    assert list(losses) == ["dsd"] and isinstance(losses["dsd"], DSDLoss)
    with pytest.raises(ValueError):
        scrkd_losses(8, 5, components=("fitnet",))
    plain, teacher = SaliencyPSPNet("resnet18", 8), SaliencyPSPNet("resnet18", 8)
    plain.eval()
    s_out, t_out = plain(torch.rand(1, 3, 32, 32)), teacher.eval()(torch.rand(1, 3, 64, 64))
    with pytest.raises(KeyError, match="disentangle"):
        MVCDLoss("2x")(s_out, t_out)


@pytest.mark.slow
def test_cascade_runs_two_stages_and_the_second_uses_the_first_student(tmp_path) -> None:
    from rskd_tutorial.data.synthetic import write_scenes
    from rskd_tutorial.engine.train import TrainConfig
    from rskd_tutorial.recipes.scrkd import SaliencyData, cascade, saliency_splits

    root = write_scenes("saliency", tmp_path / "data", n_train=4, n_val=2, size=32, seed=0, progress=False)
    train_set, _ = saliency_splits(SaliencyData(root=str(root), eval_size=32), (32, 16, 8), 8, mask_size=16)
    torch.manual_seed(0)
    teacher = SaliencyPSPNet("resnet18", 8)
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=2, optimizer="adamw", schedule="constant", warmup_iters=0)
    made = []

    def make_student():
        made.append(SaliencyPSPNet("resnet18", 8, disentangle=True))
        return made[-1]

    result = cascade(32, 16, 8, teacher=teacher, make_student=make_student, train_set=train_set, config=cfg,
                     out_dir=tmp_path / "runs", verbose=False)
    d1, d2 = result.distillers
    assert len(made) == 2
    assert d1.teacher is teacher and d1.student is result.assistant is made[0]
    assert d2.teacher is result.assistant and d2.student is result.student is made[1]
    assert (d1.student_input, d1.teacher_input, d2.student_input, d2.teacher_input) == (16, 32, 8, 16)
    assert d2.kd_losses["dsd"].matching.name == "cascade"
    assert all((p / "final.pt").is_file() for p in result.stage_dirs)
    # the assistant was frozen as stage 2's teacher: its trained weights are exactly stage 1's
    assert not any(p.requires_grad for p in result.assistant.parameters())
    stage1 = torch.load(result.stage_dirs[0] / "final.pt", weights_only=True)["model"]
    for k, v in result.assistant.state_dict().items():
        assert torch.equal(v, stage1[f"student.{k}"])
    # a second call loads both finished stages instead of training again
    again = cascade(32, 16, 8, teacher=teacher, make_student=lambda: SaliencyPSPNet("resnet18", 8, disentangle=True),
                    train_set=train_set, config=cfg, out_dir=tmp_path / "runs", verbose=False)
    for a, b in zip(again.student.state_dict().values(), result.student.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        cascade(16, 32, 8, teacher=teacher, make_student=make_student, train_set=train_set, config=cfg,
                out_dir=tmp_path / "bad")


def test_full_scale_configs_parse() -> None:
    from pathlib import Path

    import rskd_tutorial
    from rskd_tutorial.recipes.registry import load_config

    paths = sorted(p for p in (Path(rskd_tutorial.__file__).parent / "configs" / "scrkd").rglob("*.yaml")
                   if "synthetic" not in p.parts)   # the smoke configs are tested by test_cli_smoke
    assert len(paths) >= 20
    seen = set()
    for path in paths:
        recipe, cfg = load_config(path)
        seen.add(recipe.name)
        assert cfg.train.optimizer == "adamw" and cfg.train.epochs == 100 and cfg.train.batch_size == 8
        assert cfg.data.eval_size == 448
        if recipe.name in ("scrkd", "scrkd_cascade"):
            assert cfg.train.lr == 2e-5 and cfg.teacher_checkpoint.endswith("_teacher/final.pt")
    assert seen == {"sod_model", "scrkd", "scrkd_cascade"}


@pytest.mark.slow
def test_full_scale_recipes_end_to_end(tmp_path) -> None:
    from rskd_tutorial.data.synthetic import write_scenes
    from rskd_tutorial.engine.train import TrainConfig
    from rskd_tutorial.recipes.scrkd import (
        CascadeRun, SaliencyData, SaliencyModelSpec, SCRKDRun, SODRun, evaluate_cascade, evaluate_scrkd,
        evaluate_sod, train_cascade, train_scrkd, train_sod,
    )

    root = write_scenes("saliency", tmp_path / "data", n_train=4, n_val=2, size=32, seed=0, progress=False)
    data = SaliencyData(root=str(root), eval_size=32)
    spec = SaliencyModelSpec(arch="pspnet", backbone="resnet18", channels=8)
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=2, optimizer="adamw", schedule="constant", warmup_iters=0)
    teacher = SODRun(data, spec, 32, cfg)
    metrics = train_sod(teacher, tmp_path / "teacher", progress=False)
    assert 0.0 <= metrics["maxF"] <= 1.0
    weights = tmp_path / "teacher" / "final.pt"
    assert evaluate_sod(teacher, weights)["MAE"] == pytest.approx(metrics["MAE"], abs=1e-6)
    student = SCRKDRun(data, spec, 32, 16, str(weights), cfg, components=("mvcd", "dsd"))
    metrics = train_scrkd(student, tmp_path / "student", progress=False)
    assert evaluate_scrkd(student, tmp_path / "student" / "final.pt")["maxF"] == pytest.approx(metrics["maxF"], abs=1e-6)
    run = CascadeRun(data, spec, (32, 16, 8), str(weights), cfg)
    metrics = train_cascade(run, tmp_path / "cascade", progress=False)
    assert {"maxF", "assistant_maxF"} <= set(metrics)
    assert evaluate_cascade(run, tmp_path / "cascade")["maxF"] == pytest.approx(metrics["maxF"], abs=1e-6)
