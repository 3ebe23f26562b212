"""FreqKD's two stages: A, feature distillation RGB -> IR on paired frames; B, IR detection fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from rskd_tutorial.distill.base import Distiller
from rskd_tutorial.engine import evaluate_detection, fit
from rskd_tutorial.engine.train import FitResult, TrainConfig
from rskd_tutorial.models.detectors import Detector
from rskd_tutorial.models.vit import FeatureModel
from rskd_tutorial.recipes.detection import detection_collate
from rskd_tutorial.recipes.freqkd.config import HeadSpec
from rskd_tutorial.recipes.freqkd.data import collate_pairs
from rskd_tutorial.recipes.freqkd.models import detector_from_trunk, detector_trunk


def stage_a_distiller(student: nn.Module, teacher: nn.Module, loss: nn.Module) -> Distiller:
    """Stage A's model: IR student trunk, frozen RGB teacher trunk, one KD term (weight 1) and no
    supervised loss; batches are ``({"ir": ..., "rgb": ...}, targets)`` (:func:`collate_pairs`)."""
    return Distiller(FeatureModel(student), FeatureModel(teacher), {"freqkd": loss}, {"freqkd": 1.0},
                     student_input="ir", teacher_input="rgb")


def stage_a(student: nn.Module, teacher: nn.Module, loss: nn.Module, train_pairs: Dataset, cfg: TrainConfig,
            out_dir: str | Path, *, resume: bool = False, device: torch.device | str | None = None,
            progress: bool = True, verbose: bool = True) -> tuple[Distiller, FitResult]:
    """Train ``student`` (in place) to match the frozen ``teacher`` on paired frames.

    Returns the :class:`~rskd_tutorial.distill.base.Distiller` (its ``student.trunk`` is ``student``)
    and the fit result; ``out_dir/final.pt`` holds the Distiller's weights
    (:func:`student_trunk_state` extracts the student's).
    """
    distiller = stage_a_distiller(student, teacher, loss)
    result = fit(distiller, train_pairs, cfg, out_dir, collate_fn=collate_pairs, resume=resume, device=device,
                 progress=progress, verbose=verbose)
    return distiller, result


def stage_b_params(det: Detector, backbone_lr_scale: float, lr: float) -> list[dict]:
    """Parameter groups of stage B: the trunk at ``backbone_lr_scale * lr``, the rest at ``lr``."""
    trunk_ids = {id(p) for p in detector_trunk(det).parameters()}
    trunk = [p for p in det.parameters() if p.requires_grad and id(p) in trunk_ids]
    rest = [p for p in det.parameters() if p.requires_grad and id(p) not in trunk_ids]
    return [{"params": trunk, "lr": lr * backbone_lr_scale}, {"params": rest, "lr": lr}]


def stage_b(trunk: nn.Module, train_set: Dataset, val_set: Dataset, head: HeadSpec, cfg: TrainConfig,
            out_dir: str | Path, *, img_size: Sequence[int] = (224, 224), backbone_lr_scale: float = 1.0,
            eval_batch_size: int = 8, resume: bool = False, device: torch.device | str | None = None,
            progress: bool = True, verbose: bool = True) -> tuple[Detector, FitResult]:
    """Fine-tune a detector on a copy of ``trunk`` (IR training set) and evaluate it on ``val_set``."""
    det = detector_from_trunk(trunk, train_set.num_classes, head, img_size)
    result = fit(det, train_set, cfg, out_dir, collate_fn=detection_collate(), resume=resume, device=device,
                 progress=progress, verbose=verbose, params=stage_b_params(det, backbone_lr_scale, cfg.lr),
                 evaluate=lambda m: evaluate_detection(m, val_set, batch_size=eval_batch_size))
    return det, result
