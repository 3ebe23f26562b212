"""SCRKD's procedure: the cross-resolution data, the SOD nets, one stage's Distiller, and the cascade
(paper Sec. III-F, Fig. 3)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rskd_tutorial.devices import module_device, resolve_device
from rskd_tutorial.distill.base import Distiller
from rskd_tutorial.distill.scrkd import (COMPONENTS, SCRKD_COEFFICIENTS, SCRKDCoefficients, StageMatching, get_matching,
                                        scrkd_losses, stage_matching)
from rskd_tutorial.engine import evaluate_saliency, fit, load_finished
from rskd_tutorial.engine.train import TrainConfig
from rskd_tutorial.models.saliency import build_saliency_model
from rskd_tutorial.recipes.runs import cached_metrics
from rskd_tutorial.recipes.scrkd.config import SaliencyData, SaliencyModelSpec


def saliency_splits(data: SaliencyData, train_sizes: int | Sequence[int], test_size: int,
                    mask_size: int | None = None) -> tuple[Any, Any]:
    """(train set with flips at ``train_sizes``, test set at ``test_size`` with masks at ``data.eval_size``).

    ``train_sizes`` may list several resolutions (teacher and student inputs of one scene, resized
    from the stored image, the same flip for all); ``mask_size`` defaults to the smallest of them (the
    resolution whose loss needs it; ``sod_loss`` resizes anyway)."""
    from rskd_tutorial.data import SaliencyFolder
    from rskd_tutorial.data.transforms import Compose, RandomHorizontalFlip, RandomVerticalFlip

    flips = []
    if data.hflip > 0:
        flips.append(RandomHorizontalFlip(data.hflip))
    if data.vflip > 0:
        flips.append(RandomVerticalFlip(data.vflip))
    sizes = [train_sizes] if isinstance(train_sizes, int) else list(train_sizes)
    train = SaliencyFolder(data.root, data.train_split, train_sizes, mask_size=mask_size or min(sizes),
                           transforms=Compose(flips) if flips else None, name=data.name)
    test = SaliencyFolder(data.root, data.test_split, int(test_size), mask_size=data.eval_size, name=data.name)
    return train, test


def saliency_collate() -> Callable:
    """The collate function of SOD batches (``data.collate_saliency``: ``({res: images}, masks)``)."""
    from rskd_tutorial.data import collate_saliency

    return collate_saliency


def build_model(spec: SaliencyModelSpec, *, disentangle: bool = False, pretrained: bool = True) -> nn.Module:
    """The SOD net of a spec; ``pretrained=False`` skips the backbone file (a teacher whose weights
    come from a checkpoint anyway)."""
    return build_saliency_model(spec.arch, spec.backbone, spec.channels, disentangle=disentangle,
                                pretrained_backbone=spec.pretrained_backbone if pretrained else None)


def scrkd_distiller(student: nn.Module, teacher: nn.Module, teacher_res: int, student_res: int, *,
                    coefficients: SCRKDCoefficients = SCRKD_COEFFICIENTS["pspnet"],
                    components: Sequence[str] = COMPONENTS, matching: str | StageMatching | None = None,
                    arch: str = "pspnet") -> Distiller:
    """A Distiller for one SCRKD stage: the student reads the ``student_res`` images of a batch, the
    (frozen, eval-mode) teacher the ``teacher_res`` ones; KD terms from :func:`scrkd_losses`.

    The KD terms are built on the CPU (MSFD's refine blocks get the same initial weights on any device)
    and moved to the student's device; the teacher stays where it is (``Distiller.to`` or ``fit`` moves
    everything, every KD module being a registered sub-module)."""
    m = get_matching(matching) if matching is not None else stage_matching(teacher_res, student_res, arch)
    losses, weights = scrkd_losses(student.channels, student.n_stages, m, coefficients, components)
    device = module_device(student)
    if device is not None:
        losses = {name: loss.to(device) for name, loss in losses.items()}
    return Distiller(student, teacher, losses, weights, student_input=student_res, teacher_input=teacher_res)


def sod_evaluation(test_set: Any, eval_size: int, batch_size: int = 8) -> Callable[[nn.Module], dict[str, Any]]:
    """``evaluate(model)``: SOD metrics with their curves on ``test_set`` at ``eval_size``
    (:func:`~rskd_tutorial.engine.evaluate_saliency`)."""
    return lambda model: evaluate_saliency(model, test_set, eval_size=eval_size, batch_size=batch_size, curves=True)


def cached_sod_metrics(run_dir: Path, model: nn.Module, test_set: Any, eval_size: int, batch_size: int = 8) -> dict[str, Any]:
    """:func:`sod_evaluation` of ``model``, cached beside the weights (:func:`~rskd_tutorial.recipes.runs.cached_metrics`)."""
    return cached_metrics(run_dir, lambda: sod_evaluation(test_set, eval_size, batch_size)(model))


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar SOD metrics (MAE, max F, S, max E) without the curves."""
    return {k: float(v) for k, v in metrics.items() if not isinstance(v, np.ndarray)}


# ----------------------------------------------------------------------------------------------
# the cascade
# ----------------------------------------------------------------------------------------------

@dataclass
class CascadeResult:
    """The two stages' trained students and their run folders."""

    assistant: nn.Module
    student: nn.Module
    stage_dirs: tuple[Path, Path]
    distillers: tuple[Distiller, Distiller]


def _run_stage(distiller: Distiller, train_set: Any, config: TrainConfig, run_dir: Path, *,
               device: torch.device | str | None, progress: bool, verbose: bool,
               keep_checkpoint: bool = True) -> None:
    """Train one stage into ``run_dir`` unless it finished before (then load it strictly); resumes a
    stage that was interrupted."""
    if load_finished(distiller, run_dir):
        if device is not None:
            distiller.to(resolve_device(device))     # as fit() would have left it
        if verbose:
            print(f"loaded finished stage {run_dir}")
        return
    fit(distiller, train_set, config, run_dir, collate_fn=saliency_collate(), resume=True, device=device,
        progress=progress, verbose=verbose, keep_checkpoint=keep_checkpoint)


def cascade(teacher_res: int, assistant_res: int, student_res: int, *, teacher: nn.Module,
            make_student: Callable[[], nn.Module], train_set: Any, config: TrainConfig,
            out_dir: str | Path, assistant_config: TrainConfig | None = None,
            coefficients: SCRKDCoefficients = SCRKD_COEFFICIENTS["pspnet"],
            components: Sequence[str] = COMPONENTS,
            matching: tuple[str | StageMatching | None, str | StageMatching | None] = (None, None),
            device: torch.device | str | None = None, progress: bool = False, verbose: bool = True,
            keep_checkpoint: bool = True) -> CascadeResult:
    """Cascaded SCRKD (paper Sec. III-F, Fig. 3).

    Stage 1: ``teacher`` (trained at ``teacher_res``) -> an assistant built by ``make_student()`` at
    ``assistant_res``. Stage 2: the trained assistant becomes the teacher (frozen, eval mode; its
    ``features`` taps are its pre-disentanglement decoder maps and its logits those of its aggregated
    heads, as the official ``PSPNet_SCRKD5_teacher``) of a new ``make_student()`` at ``student_res``.

    ``train_set`` yields ``({res: image}, mask)`` with all three resolutions and masks at least at
    ``assistant_res`` (``sod_loss`` resizes them down for the student). Stage rules default to
    :func:`~rskd_tutorial.distill.scrkd.stage_matching` for stage 1 and ``cascade`` (the 2x rules with
    the assistant's logits at its input size, official ``SCRKD5_Cascaded``) for a 2x stage 2.
    Runs go to ``out_dir/stage1_assistant`` and ``out_dir/stage2_student``; a finished stage is
    loaded instead of retrained, an interrupted one resumes.
    """
    if not teacher_res > assistant_res > student_res:
        raise ValueError(f"need teacher > assistant > student resolutions, got {teacher_res}, {assistant_res}, {student_res}")
    out_dir = Path(out_dir)
    m1 = matching[0] if matching[0] is not None else stage_matching(teacher_res, assistant_res)
    m2 = matching[1] if matching[1] is not None else ("cascade" if assistant_res == 2 * student_res
                                                       else stage_matching(assistant_res, student_res))
    assistant = make_student()
    d1 = scrkd_distiller(assistant, teacher, teacher_res, assistant_res, coefficients=coefficients,
                         components=components, matching=m1)
    dir1, dir2 = out_dir / "stage1_assistant", out_dir / "stage2_student"
    _run_stage(d1, train_set, assistant_config or config, dir1, device=device, progress=progress, verbose=verbose,
               keep_checkpoint=keep_checkpoint)
    student = make_student()
    d2 = scrkd_distiller(student, assistant, assistant_res, student_res, coefficients=coefficients,
                         components=components, matching=m2)
    _run_stage(d2, train_set, config, dir2, device=device, progress=progress, verbose=verbose,
               keep_checkpoint=keep_checkpoint)
    assistant.eval()
    student.eval()
    return CascadeResult(assistant, student, (dir1, dir2), (d1, d2))
