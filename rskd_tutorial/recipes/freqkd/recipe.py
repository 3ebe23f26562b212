"""Full scale: the ``freqkd`` recipe (``rskd train``) and ``rskd divergence``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rskd_tutorial.devices import default_device
from rskd_tutorial.engine import evaluate_detection, load_finished
from rskd_tutorial.engine.train import load_weights
from rskd_tutorial.models.detectors import BACKBONES
from rskd_tutorial.recipes.freqkd.config import FreqKDRun
from rskd_tutorial.recipes.freqkd.data import ir_splits, paired_splits
from rskd_tutorial.recipes.freqkd.models import build_trunk, detector_from_trunk, make_loss, student_trunk_state
from rskd_tutorial.recipes.freqkd.stages import stage_a, stage_a_distiller, stage_b
from rskd_tutorial.recipes.freqkd.study import divergence_study
from rskd_tutorial.recipes.registry import Recipe, register


def train_freqkd(cfg: FreqKDRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``freqkd`` recipe: stage A (unless ``stage_a`` is null) into ``out_dir/stage_a``, then
    stage B into ``out_dir/stage_b``; returns stage B's metrics on the evaluation split. A finished
    stage A (its ``final.pt``) is reused, so ``--resume`` after stage A goes straight to stage B."""
    out_dir = Path(out_dir)
    student = build_trunk(cfg.student)
    if cfg.stage_a_weights is not None:
        student.load_state_dict(student_trunk_state(cfg.stage_a_weights))
    elif cfg.stage_a is not None:
        teacher = build_trunk(cfg.teacher)
        train_pairs, _ = paired_splits(cfg.stage_a.data)
        loss = make_loss(cfg.stage_a.loss, student, teacher)
        a_dir = out_dir / "stage_a"
        if not load_finished(stage_a_distiller(student, teacher, loss), a_dir):
            stage_a(student, teacher, loss, train_pairs, cfg.stage_a.train, a_dir, resume=resume, progress=progress)
    train_set, val_set = ir_splits(cfg.stage_b.data)
    _, result = stage_b(student, train_set, val_set, cfg.stage_b.head, cfg.stage_b.train, out_dir / "stage_b",
                        img_size=cfg.student.img_size, backbone_lr_scale=cfg.stage_b.backbone_lr_scale,
                        eval_batch_size=cfg.stage_b.eval_batch_size, resume=resume, progress=progress)
    return result.final_metrics


def evaluate_freqkd(cfg: FreqKDRun, checkpoint: Path) -> dict[str, float]:
    """COCO metrics of a stage-B checkpoint on the config's IR evaluation split."""
    _, val_set = ir_splits(cfg.stage_b.data)
    keep = cfg.student.arch in BACKBONES      # a ResNet's ImageNet file decides its norm layers; a ViT's is not needed
    trunk = build_trunk(cfg.student if keep else dataclasses.replace(cfg.student, weights=None))
    det = detector_from_trunk(trunk, val_set.num_classes, cfg.stage_b.head, cfg.student.img_size)
    load_weights(det, checkpoint)
    det.to(default_device())
    return evaluate_detection(det, val_set, batch_size=cfg.stage_b.eval_batch_size)


register(Recipe("freqkd", FreqKDRun, train_freqkd, evaluate_freqkd,
                "FreqKD: stage A RGB->IR feature distillation, stage B IR detection fine-tuning"))


def divergence_main(argv: Sequence[str] | None = None) -> int:
    """``rskd divergence CONFIG --pairs N --out FILE``: the spectral divergence study of a config's
    teacher (frozen; DINOv2 at full scale) on RGB vs IR frames of the same scenes; writes JSON."""
    from rskd_tutorial.config import ConfigError
    from rskd_tutorial.data import CocoDetection
    from rskd_tutorial.recipes.registry import load_config

    p = argparse.ArgumentParser(prog="rskd divergence", description=divergence_main.__doc__)
    p.add_argument("config", help="a freqkd YAML config (its teacher and divergence: blocks)")
    p.add_argument("--pairs", type=int, default=None, help="number of pairs (default: divergence.pairs)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: print to stdout)")
    p.add_argument("--split", dest="band_split", choices=("fft", "haar"), default=None)
    p.add_argument("--metric", choices=("cosine", "nmse", "rel_mse"), default=None)
    p.add_argument("--cutoff", type=float, default=None)
    p.add_argument("--window", choices=("none", "hann"), default=None)
    p.add_argument("--input", action="store_true", help="also report the images themselves as a layer")
    a = p.parse_args(argv)
    try:
        recipe, cfg = load_config(a.config)
    except ConfigError as e:
        print(f"rskd divergence: config error: {e}", file=sys.stderr)
        return 2
    if recipe.name != "freqkd":
        print(f"rskd divergence: {a.config} is a {recipe.name!r} config, not a freqkd one", file=sys.stderr)
        return 2
    spec = cfg.divergence
    for key in ("band_split", "metric", "cutoff"):
        if getattr(a, key) is not None:
            spec = dataclasses.replace(spec, **{key: getattr(a, key)})
    if a.window is not None:
        spec = dataclasses.replace(spec, window=None if a.window == "none" else a.window)
    root = spec.root or (cfg.stage_a.data.root if cfg.stage_a is not None else cfg.stage_b.data.root)
    try:
        pairs = CocoDetection(root, spec.split, return_paired=True)
        trunk = build_trunk(cfg.teacher)
    except FileNotFoundError as e:
        print(f"rskd divergence: {e}", file=sys.stderr)
        return 2
    result = divergence_study(trunk.to(default_device()), pairs, n_pairs=a.pairs or spec.pairs,
                              blocks=spec.blocks, cutoff=spec.cutoff, kind=spec.kind, band_split=spec.band_split,
                              metric=spec.metric, window=spec.window, include_input=a.input, n_boot=spec.n_boot,
                              batch_size=spec.batch_size, seed=spec.seed)
    result["config"] = str(a.config)
    text = json.dumps(result, indent=1)
    if a.out is None:
        print(text)
    else:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        r = result["ratio"]
        print(f"{result['n_pairs']} pairs, {len(result['layers'])} layers: high/low divergence ratio "
              f"{r[0]:.2f} (95% CI {r[1]:.2f}-{r[2]:.2f}) -> {a.out}")
    return 0
