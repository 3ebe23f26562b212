"""DS2D2's three stages as recipes: the full-scale configs chain teacher -> amplifier -> student with
the official settings, and the stages run end to end on tiny synthetic scenes (the amplifier trains
its heads only, its trunk stays the teacher's; the student gets every DS2D2 term)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from helpers_detection import tiny_teacher_run, write_yaml
from rskd_tutorial.cli import main
from rskd_tutorial.distill.ds2d2 import OFFICIAL_WEIGHTS
from rskd_tutorial.engine import read_metrics
from rskd_tutorial.recipes.detection import STUDENT_WEIGHTS
from rskd_tutorial.recipes.ds2d2 import AMPLIFIER_WEIGHTS, AmplifierRun, DS2D2Run, load_amplifier
from rskd_tutorial.recipes.registry import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "rskd_tutorial" / "configs" / "ds2d2"


def _configs():
    return sorted(p for p in CONFIGS.rglob("*.yaml") if "synthetic" not in p.parts)   # smoke configs: test_cli_smoke


def test_every_config_parses_and_the_stages_chain():
    paths = _configs()
    stems = {p.stem: p for p in paths}
    assert len(paths) == 24 and len(stems) == len(paths)        # unique run folders (runs/<stem>)
    kinds = {"detector": 0, "ds2d2_amplifier": 0, "ds2d2": 0}
    for path in paths:
        recipe, cfg = load_config(path)
        kinds[recipe.name] += 1
        assert cfg.train.epochs == 24 and cfg.train.milestones == (16, 22) and cfg.train.warmup_iters == 500
        assert cfg.train.optimizer == "sgd" and cfg.train.weight_decay == 1e-4 and cfg.train.momentum == 0.9
        dataset = path.parent.name
        assert path.stem.startswith(f"ds2d2_{dataset}_")
        if isinstance(cfg, AmplifierRun):
            teacher = Path(cfg.teacher_weights)
            assert teacher.name == "final.pt" and teacher.parent.name in stems
            _, t_cfg = load_config(stems[teacher.parent.name])
            assert t_cfg.model == cfg.model and cfg.model.backbone == "resnet101"
        if isinstance(cfg, DS2D2Run):
            arch = cfg.student.arch
            assert cfg.weights == OFFICIAL_WEIGHTS[(arch, dataset)]
            amp = Path(cfg.amplifier_weights)
            assert amp.name == AMPLIFIER_WEIGHTS and amp.parent.name in stems
            _, a_cfg = load_config(stems[amp.parent.name])
            assert a_cfg.model == cfg.teacher and a_cfg.teacher_weights == cfg.teacher_weights
            lr = {"faster_rcnn": 0.01, "retinanet": 0.0025}[arch]     # official lr x 8/16 (4 GPUs x 2)
            assert cfg.train.lr == lr and cfg.train.batch_size == 2
            size = {"dior": 800, "dota": 1024}[dataset]
            assert cfg.student.min_size == cfg.teacher.min_size == size
    assert kinds == {"detector": 12, "ds2d2_amplifier": 4, "ds2d2": 8}   # 4 teachers + 8 baselines


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_three_stages_end_to_end_on_tiny_scenes(arch, tmp_path: Path):
    run = tiny_teacher_run("optical", arch, tmp_path)
    data, spec, train, runs = run["data"], run["spec"], run["train"], run["runs"]
    teacher_pt = run["teacher_pt"]

    amp_cfg = write_yaml(tmp_path / "amp.yaml", {"recipe": "ds2d2_amplifier", "data": data, "model": spec,
                                             "teacher_weights": str(teacher_pt), "train": train,
                                             "eval_batch_size": 2})
    assert main(["train", str(amp_cfg), "--out", str(runs / "amp")]) == 0
    teacher_state = torch.load(teacher_pt, weights_only=True)["model"]
    amp = load_amplifier(load_config(amp_cfg)[1].model, 5, runs / "amp" / AMPLIFIER_WEIGHTS)
    amp_state = amp.state_dict()
    trunk = [k for k in amp_state if k.startswith("net.backbone.")]
    heads = [k for k in amp_state if k.startswith(("net.head.", "net.roi_heads.", "net.rpn."))
             and amp_state[k].is_floating_point()]
    # backbone + FPN (BatchNorm running statistics included) are the teacher's, the heads trained
    assert trunk and all(torch.equal(amp_state[k], teacher_state[k]) for k in trunk)
    assert any(not torch.equal(amp_state[k], teacher_state[k]) for k in heads)
    assert amp.feature_transform is not None
    assert main(["eval", str(amp_cfg), str(runs / "amp" / "final.pt")]) == 0     # the fit checkpoint loads too

    student_cfg = write_yaml(tmp_path / "student.yaml", {
        "recipe": "ds2d2", "data": data, "student": spec, "teacher": spec, "teacher_weights": str(teacher_pt),
        "amplifier_weights": str(runs / "amp" / AMPLIFIER_WEIGHTS),
        "weights": {"explicit_low": 0.5, "explicit_high": 0.5, "implicit_full": 1.0, "implicit_high": 1.0},
        "train": train, "eval_batch_size": 2})
    assert main(["train", str(student_cfg), "--out", str(runs / "student")]) == 0
    rec = [r for r in read_metrics(runs / "student") if r["kind"] == "train"]
    for term in ("explicit_low", "explicit_high", "implicit_full", "implicit_high"):
        assert all(torch.isfinite(torch.tensor(r[f"kd_{term}"])) and r[f"kd_{term}"] > 0 for r in rec), term
    assert (runs / "student" / STUDENT_WEIGHTS).is_file()
    assert main(["eval", str(student_cfg), str(runs / "student" / STUDENT_WEIGHTS)]) == 0
    assert main(["eval", str(student_cfg), str(runs / "student" / "final.pt")]) == 0


def test_student_config_without_amplifier_needs_it_only_for_the_high_term(tmp_path: Path):
    from rskd_tutorial.config import ConfigError

    cfg = yaml.safe_load((CONFIGS / "dior" / "ds2d2_dior_faster_rcnn_r18_from_r101.yaml").read_text())
    cfg["weights"]["explicit"] = 1.0
    with pytest.raises(ConfigError, match="weights.explicit: unknown key"):
        load_config(write_yaml(tmp_path / "bad.yaml", cfg))
    cfg["weights"].pop("explicit")
    cfg["loss"]["disw_dtype"] = "bfloat16"
    with pytest.raises(ConfigError, match="disw_dtype"):
        load_config(write_yaml(tmp_path / "bad.yaml", cfg))
