"""The Distiller: frozen teacher, weighted terms, first-step checks, strict teacher loading, and every
baseline training a student through fit on both detectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from helpers_detection import TinyBoxes, collate, tiny_detector
from rskd_tutorial.distill import (ATLoss, CWDLoss, DistillationCheckError, Distiller, FGDLoss, FitNetLoss,
                                   LogitKDLoss, MGDLoss, PKDLoss)
from rskd_tutorial.engine import TrainConfig, fit, read_metrics


def _pair(arch="retinanet"):
    return tiny_detector(arch, seed=1), tiny_detector(arch, seed=2)


def _levels(det):
    return list(det.levels)


def test_teacher_frozen_and_eval_after_train_and_weighted_terms():
    student, teacher = _pair()
    d = Distiller(student, teacher, {"fitnet": FitNetLoss(_levels(student), 16, 16)}, {"fitnet": 0.5})
    d.train()
    assert not teacher.training and student.training
    assert not any(p.requires_grad for p in teacher.parameters())
    images, targets = collate([TinyBoxes()[i] for i in range(2)])
    out = d(images, targets)
    assert torch.allclose(out.losses["loss_kd_fitnet"], 0.5 * out.losses["kd_fitnet"])
    assert {"loss_cls", "loss_box"} <= set(out.losses)
    sum(v for k, v in out.losses.items() if k.startswith("loss")).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.net.backbone.parameters())
    d.eval()
    with torch.no_grad():
        preds = d(images)
    assert preds.predictions is not None   # eval: the Distiller is its student


class Detached(nn.Module):
    def forward(self, s_out, t_out, targets=None):
        return (s_out.taps["features"]["p3"].detach() - t_out.taps["features"]["p3"]).pow(2).mean()


class NoStudentGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, s_out, t_out, targets=None):
        return self.w * t_out.taps["features"]["p3"].pow(2).mean()


@pytest.mark.parametrize("loss, message", [(Detached(), "carries no gradient"),
                                           (NoStudentGrad(), "gives the student no gradient")])
def test_first_step_checks_catch_silent_kd(loss, message):
    student, teacher = _pair()
    d = Distiller(student, teacher, {"bad": loss}, {"bad": 1.0}).train()
    images, targets = collate([TinyBoxes()[0]])
    with pytest.raises(DistillationCheckError, match=message):
        d(images, targets)


def test_weights_must_name_every_term_and_teacher_loads_strictly(tmp_path: Path):
    student, teacher = _pair()
    with pytest.raises(ValueError, match="missing \\['fitnet'\\]"):
        Distiller(student, teacher, {"fitnet": FitNetLoss(_levels(student), 16, 16)}, {})
    other = tiny_detector("faster_rcnn")
    torch.save({"model": other.state_dict()}, tmp_path / "wrong.pt")
    with pytest.raises(RuntimeError, match="do not match"):
        Distiller(student, teacher, {}, {}, teacher_weights=tmp_path / "wrong.pt")
    torch.save({"model": teacher.state_dict()}, tmp_path / "right.pt")
    Distiller(student, teacher, {}, {}, teacher_weights=tmp_path / "right.pt")


def _baselines(arch, student, teacher):
    levels = _levels(student)
    losses = {
        "fitnet": FitNetLoss(levels, 16, 16), "at": ATLoss(levels), "cwd": CWDLoss(levels, 16, 16),
        "fgd": FGDLoss(levels, 16), "mgd": MGDLoss(levels, 16, 16), "pkd": PKDLoss(levels),
    }
    if arch == "retinanet":
        losses["logit"] = LogitKDLoss(teacher.net.head)
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_every_baseline_trains_a_student_through_fit(arch, tmp_path: Path):
    probe_s, probe_t = _pair(arch)
    for name in _baselines(arch, probe_s, probe_t):
        student, teacher = _pair(arch)
        loss = _baselines(arch, student, teacher)[name]
        before = student.net.backbone.body.conv1.weight.clone()
        d = Distiller(student, teacher, {name: loss}, {name: 1.0})
        fit(d, TinyBoxes(4), TrainConfig(epochs=1, lr=0.01, batch_size=2, warmup_iters=1), tmp_path / name,
            collate_fn=collate, progress=False, verbose=False, max_steps=2)
        assert not torch.equal(before, student.net.backbone.body.conv1.weight), name
        rec = [r for r in read_metrics(tmp_path / name) if r["kind"] == "train"]
        assert all(torch.isfinite(torch.tensor(r[f"kd_{name}"])) and r[f"kd_{name}"] != 0 for r in rec), name


def test_state_dict_leaves_out_frozen_teacher_and_reloads_strictly():
    student, teacher = _pair()
    d = Distiller(student, teacher, {"fitnet": FitNetLoss(_levels(student), 16, 16)}, {"fitnet": 1.0})
    state = d.state_dict()
    assert not any(k.startswith("teacher.") for k in state)
    assert any(k.startswith("student.") for k in state) and any(k.startswith("kd_losses.fitnet.") for k in state)
    fresh_student, _ = _pair()
    d2 = Distiller(fresh_student, teacher, {"fitnet": FitNetLoss(_levels(student), 16, 16)}, {"fitnet": 1.0})
    d2.load_state_dict(state)
    assert torch.equal(fresh_student.net.backbone.body.conv1.weight, student.net.backbone.body.conv1.weight)
    with pytest.raises(RuntimeError, match="missing"):
        d2.load_state_dict({k: v for k, v in state.items() if not k.startswith("kd_losses")})


def test_student_loss_sums_the_supervised_terms_only():
    import torch

    from rskd_tutorial.distill import student_loss

    logged = {"loss_cls": 1.5, "loss_box": 0.25, "loss_kd_fitnet": 10.0, "kd_fitnet": 100.0, "loss": 11.75, "lr": 0.1}
    assert student_loss(logged) == 1.75
    assert student_loss({"loss_rpn": torch.tensor(0.5), "loss_kd_x": torch.tensor(3.0, requires_grad=True)}) == 0.5
    assert student_loss({}) == 0.0
