"""DIPKD's recipe (chapter 3): the full-scale configs carry the official schedule and chain teacher ->
student, init_student copies what the official distiller copies, and teacher -> student runs end to end
through ``rskd train`` on tiny SAR scenes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from helpers_detection import tiny_detector, tiny_teacher_run, write_yaml
from rskd_tutorial.cli import main
from rskd_tutorial.distill.dipkd import DIPKDConfig
from rskd_tutorial.recipes.detection import STUDENT_WEIGHTS
from rskd_tutorial.recipes.dipkd import (
    BACKBONE_PREFIX, DIPKDRun, init_student_from_teacher, tutorial_baseline,
)
from rskd_tutorial.recipes.registry import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "rskd_tutorial" / "configs" / "dipkd"
LR = {("ssdd", "faster_rcnn"): 0.02, ("hrsid", "faster_rcnn"): 0.02, ("ssdd", "retinanet"): 0.0018,
      ("hrsid", "retinanet"): 0.001}


def test_every_config_parses_with_the_official_schedule_and_chains():
    paths = sorted(p for p in CONFIGS.rglob("*.yaml") if "synthetic" not in p.parts)   # smoke configs: test_cli_smoke
    stems = {p.stem: p for p in paths}
    assert len(paths) == 12 and len(stems) == 12
    kinds = {"detector": 0, "dipkd": 0}
    for path in paths:
        recipe, cfg = load_config(path)
        kinds[recipe.name] += 1
        dataset = path.parent.name
        t = cfg.train
        assert (t.epochs, t.milestones, t.warmup_iters, t.warmup_factor) == (24, (16, 20), 500, 0.001)
        assert t.optimizer == "sgd" and t.momentum == 0.9 and t.weight_decay == 1e-4 and t.grad_clip is None
        assert t.batch_size == 8 and cfg.data.name == dataset.upper() and cfg.data.val_split == "test"
        if isinstance(cfg, DIPKDRun):
            assert t.lr == LR[(dataset, cfg.student.arch)]
            assert cfg.loss == DIPKDConfig()                       # the paper's values, every module on
            assert cfg.init_student and cfg.student.backbone == "resnet18" and cfg.teacher.backbone == "resnet50"
            teacher = Path(cfg.teacher_weights)
            assert teacher.name == "final.pt" and teacher.parent.name in stems
            _, t_cfg = load_config(stems[teacher.parent.name])
            assert t_cfg.model == cfg.teacher and t_cfg.train == cfg.train
            _, b_cfg = load_config(stems[path.stem.replace("_from_r50", "_baseline")])
            assert b_cfg.model == cfg.student and b_cfg.data == cfg.data
        else:
            assert t.lr == LR[(dataset, cfg.model.arch)]
    assert kinds == {"detector": 8, "dipkd": 4}


@pytest.mark.parametrize("arch", ["faster_rcnn", "retinanet"])
def test_init_student_copies_neck_and_heads_and_skips_mismatched_shapes(arch):
    teacher = tiny_detector(arch, "resnet50", seed=1)
    student = tiny_detector(arch, "resnet18", seed=2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    report = init_student_from_teacher(student, teacher)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    assert report["copied"] and not any(k.startswith(BACKBONE_PREFIX) for k in report["copied"])
    for k in report["copied"]:
        assert torch.equal(s_state[k], t_state[k])
    # every FPN lateral 1x1 conv sees another width (R18 64..512 vs R50 256..2048): its weight is skipped
    # and left as it was; its bias has the same shape and is copied, as mmcv's non-strict load does
    lateral = [k for k in t_state if ".fpn.inner_blocks." in k and k.endswith("weight")]
    assert lateral and set(lateral) <= set(report["skipped"])
    assert all(k.replace("weight", "bias") in report["copied"] for k in lateral)
    assert all(torch.equal(s_state[k], before[k]) for k in lateral if k in s_state)
    assert all(torch.equal(s_state[k], before[k]) for k in s_state if k.startswith(BACKBONE_PREFIX))
    head = "net.rpn.head." if arch == "faster_rcnn" else "net.head."
    assert any(k.startswith(head) for k in report["copied"])
    assert any(".fpn.layer_blocks." in k for k in report["copied"])


def test_baseline_rows_use_dipkds_levels(monkeypatch):
    import rskd_tutorial.recipes.methods as methods

    seen: dict = {}
    monkeypatch.setattr(methods, "baseline_student", lambda *a, **k: seen.update(k, args=a) or "row")
    from types import SimpleNamespace

    def run(arch, levels):
        return SimpleNamespace(model=SimpleNamespace(arch=arch, levels=levels))

    paper_frcnn, paper_retina = ("p2", "p3", "p4", "p5", "p6"), ("p3", "p4", "p5", "p6", "p7")
    assert tutorial_baseline("P", "faster_rcnn", run("faster_rcnn", paper_frcnn), "fgd") == "row"
    assert seen["levels"] == ["p2", "p3", "p4", "p5"] and seen["args"][3] == "fgd" and seen["kind"] == "sar"
    tutorial_baseline("P", "retinanet", run("retinanet", paper_retina), "mgd")
    assert seen["levels"] == ["p3", "p4", "p5", "p6"]
    # the tutorial scale's P2-P5 pyramid: every level but the coarsest, as the official rule
    tutorial_baseline("P", "retinanet", run("retinanet", ("p2", "p3", "p4", "p5")), "mgd")
    assert seen["levels"] == ["p2", "p3", "p4"]
    with pytest.raises(ValueError, match="method"):
        tutorial_baseline("P", "retinanet", run("retinanet", paper_retina), "cwd")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["faster_rcnn", "retinanet"])
def test_teacher_then_dipkd_end_to_end_on_tiny_sar_scenes(arch, tmp_path: Path, capsys):
    run = tiny_teacher_run("sar", arch, tmp_path)
    data, spec, train, runs = run["data"], run["spec"], run["train"], run["runs"]
    student_cfg = write_yaml(tmp_path / "student.yaml", {
        "recipe": "dipkd", "data": data, "student": spec, "teacher": {**spec, "backbone": "resnet34"},
        "teacher_weights": str(runs / "teacher" / "final.pt"), "train": train, "eval_batch_size": 2,
        "loss": {"mask_rate": 0.5, "rit_source": "teacher_features"}})
    # a teacher of another backbone than its checkpoint is a one-line error (exit 2), not a silent mismatch
    capsys.readouterr()
    assert main(["train", str(student_cfg), "--out", str(runs / "bad")]) == 2
    assert "do not match" in capsys.readouterr().err
    student_cfg = write_yaml(student_cfg, {**yaml.safe_load(student_cfg.read_text()), "teacher": spec})
    assert main(["train", str(student_cfg), "--out", str(runs / "student")]) == 0
    assert (runs / "student" / STUDENT_WEIGHTS).is_file()
    for ckpt in (runs / "student" / STUDENT_WEIGHTS, runs / "student" / "final.pt"):
        assert main(["eval", str(student_cfg), str(ckpt)]) == 0
