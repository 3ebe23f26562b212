"""DIPKD's procedure: teacher -> (``init_student``) -> student distilled with SNS, KLD and RIT.

1. **Teacher** -- the ``detector`` recipe (:mod:`rskd_tutorial.recipes.detection`): R50-FPN Faster R-CNN
   or RetinaNet on SSDD / HRSID.
2. **init_student** (:func:`init_student_from_teacher`) -- the official distiller copies every teacher
   weight outside the backbone (FPN, RPN / RoI heads, RetinaNet head) into the student before training,
   skipping shapes that differ (the FPN's lateral 1x1 convs see R18's 64..512 channels against R50's
   256..2048). The paper does not mention it, and it may explain much of the reported gain.
3. **Student** -- a :class:`~rskd_tutorial.distill.base.Distiller` with one KD term, ``dipkd``
   (:func:`~rskd_tutorial.distill.dipkd.dipkd_loss`, weights inside its :class:`DIPKDConfig`); the final
   student is saved as ``student.pt``.

Two layers, as for every method:

* **Full scale** -- the registered recipe ``dipkd`` (:class:`DIPKDRun`) for
  ``rskd train rskd_tutorial/configs/dipkd/...``; teachers and no-KD students use the ``detector`` recipe.
* **Tutorial scale** -- :func:`tutorial_dipkd` (one DIPKD row: any module switches, tau, mask rate,
  with or without ``init_student``), :func:`tutorial_init_only` (``init_student`` without KD) and
  :func:`tutorial_baseline` (the FitNet / FGD / MGD rows on the same levels), all through
  ``recipes.detection.distill_student`` and cached; the teachers come from
  ``recipes.detection.tutorial_teacher(profile, arch, "sar")``.

Taught in chapter 3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from rskd_tutorial.distill.base import Distiller
from rskd_tutorial.distill.dipkd import DIPKDConfig, dipkd_levels, dipkd_loss
from rskd_tutorial.engine.train import TrainConfig
from rskd_tutorial.models.utils import load_state_strict
from rskd_tutorial.recipes.detection import (
    DetectionData, DetectorSpec, TutorialRun, build_from_spec, detection_splits, distill_student,
    evaluate_student, fit_student,
)
from rskd_tutorial.recipes.registry import Recipe, register

BACKBONE_PREFIX = "net.backbone.body."     # mmdet's ``backbone.``: the ResNet; the FPN is ``net.backbone.fpn.``


def init_student_from_teacher(student: nn.Module, teacher: nn.Module, *,
                              skip_prefixes: tuple[str, ...] = (BACKBONE_PREFIX,)) -> dict[str, list[str]]:
    """The official distiller's ``init_student=True``: copy every teacher tensor (parameters and
    buffers) whose name does not start with ``skip_prefixes`` into the student where the name exists
    and the shape matches. Returns ``{"copied": [...], "skipped": [...]}`` (skipped: shape or name
    mismatch, e.g. the FPN's lateral convs of an R50 teacher and an R18 student). Call it before the
    optimiser is built. Taught in chapter 3."""
    own = student.state_dict()
    take, skipped = {}, []
    for name, value in teacher.state_dict().items():
        if name.startswith(skip_prefixes):
            continue
        if name in own and own[name].shape == value.shape:
            take[name] = value
        else:
            skipped.append(name)
    student.load_state_dict(take, strict=False)
    return {"copied": sorted(take), "skipped": skipped}


def dipkd_losses(config: DIPKDConfig | None = None) -> Callable[[nn.Module, nn.Module], dict[str, nn.Module]]:
    """``make_losses(student, teacher)`` for ``distill_student`` and the recipe: ``{"dipkd": DIPKDLoss}``
    (weight 1: alpha, beta, gamma live in the config)."""
    cfg = config or DIPKDConfig()

    def make(student: nn.Module, teacher: nn.Module) -> dict[str, nn.Module]:
        return {"dipkd": dipkd_loss(student, teacher, cfg)}

    return make


# ----------------------------------------------------------------------------------------------
# full scale
# ----------------------------------------------------------------------------------------------

@dataclass
class DIPKDRun:
    """Config of the ``dipkd`` recipe (official ``configs/*_r50_distill_r18_fpn_{SSDD,HRSID}.py``)."""

    data: DetectionData
    student: DetectorSpec
    teacher: DetectorSpec
    teacher_weights: str              # the teacher's final.pt (the `detector` recipe's output)
    train: TrainConfig
    loss: DIPKDConfig = field(default_factory=DIPKDConfig)
    init_student: bool = True         # the official configs: init_student=True
    eval_batch_size: int = 8


def train_dipkd(cfg: DIPKDRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``dipkd`` recipe: distil a student from the frozen teacher; writes ``out_dir/student.pt`` and
    returns the student's COCO metrics on the validation split."""
    out_dir = Path(out_dir)
    train_set, val_set = detection_splits(cfg.data)
    k = train_set.num_classes
    student = build_from_spec(cfg.student, k)
    teacher = load_state_strict(build_from_spec(cfg.teacher, k), cfg.teacher_weights)
    if cfg.init_student:   # (on resume, fit() restores the student's own weights afterwards)
        report = init_student_from_teacher(student, teacher)
        print(f"init_student: copied {len(report['copied'])} teacher tensors, skipped {len(report['skipped'])} "
              f"(shape mismatch): {report['skipped'][:6]}{' ...' if len(report['skipped']) > 6 else ''}")
    distiller = Distiller(student, teacher, dipkd_losses(cfg.loss)(student, teacher), {"dipkd": 1.0})
    return fit_student(distiller, train_set, val_set, cfg.train, out_dir, eval_batch_size=cfg.eval_batch_size,
                       resume=resume, progress=progress)


register(Recipe("dipkd", DIPKDRun, train_dipkd, evaluate_student,
                "DIPKD: distil an R18 student from a SAR ship detector (SNS + KLD + RIT, optional init_student)"))


# ----------------------------------------------------------------------------------------------
# tutorial scale
# ----------------------------------------------------------------------------------------------

COMPARISON_BASELINES = ("fitnet", "fgd", "mgd")   # chapter 3's comparison rows (recipes.methods builds them)


def tutorial_dipkd(profile: Any, arch: str, teacher: TutorialRun, config: DIPKDConfig | None = None, *,
                   init: bool = False, seed: int = 0, kind: str = "sar", name: str = "dipkd", weight: float = 1.0,
                   **kwargs: Any) -> TutorialRun:
    """One DIPKD row of chapter 3: a student of the profile's scale distilled from ``teacher`` with
    ``config`` (module switches, tau, mask rate ...), after :func:`init_student_from_teacher` when
    ``init``. ``weight`` multiplies the whole DIPKD term (1: the paper's coefficients alone; see
    :func:`balanced_dipkd_weight`). Cached by the config, ``init``, the weight, the teacher's run and the seed."""
    cfg = config or DIPKDConfig()
    key = {"dipkd": asdict(cfg), "init_student": init, "teacher": str(teacher.run_dir)}
    return distill_student(profile, arch, teacher.model, f"{name}-init" if init else name, dipkd_losses(cfg),
                           {"dipkd": weight}, kind=kind, seed=seed, key_config=key,
                           init_student=init_student_from_teacher if init else None, **kwargs)


def balanced_dipkd_weight(profile: Any, arch: str, teacher: TutorialRun, config: DIPKDConfig | None = None, *,
                          kind: str = "sar", seed: int = 0) -> tuple[float, dict[str, float]]:
    """Chapter 0's step-0 rule for the whole DIPKD term: the outer weight that makes the weighted term (the
    paper's alpha, beta, gamma inside) about as large as the detection loss at the first step, on a training
    batch. Returns ``(weight, {"raw": L_dipkd, "det": L_det})``."""
    from rskd_tutorial.recipes.methods import balanced_weight, step0_terms

    raw, det = step0_terms(profile, arch, teacher.model, dipkd_losses(config), kind=kind, seed=seed)
    return balanced_weight(raw["dipkd"], det), {"raw": raw["dipkd"], "det": det}


def tutorial_init_only(profile: Any, arch: str, teacher: TutorialRun, *, seed: int = 0, kind: str = "sar",
                       **kwargs: Any) -> TutorialRun:
    """The student trained alone after :func:`init_student_from_teacher`: no KD term (chapter 3's
    "baseline + init_student" arm; the frozen teacher still runs a forward pass each step)."""
    return distill_student(profile, arch, teacher.model, "init-only", lambda s, t: {}, {}, kind=kind, seed=seed,
                           key_config={"init_student": True, "teacher": str(teacher.run_dir)},
                           init_student=init_student_from_teacher, **kwargs)


def tutorial_baseline(profile: Any, arch: str, teacher: TutorialRun, method: str, *, seed: int = 0,
                      kind: str = "sar", **kwargs: Any) -> TutorialRun:
    """A comparison row of chapter 3 (FitNet, FGD or MGD; no ``init_student``) on DIPKD's levels, built by
    :func:`rskd_tutorial.recipes.methods.baseline_student` so it means what the other chapters' rows mean."""
    from rskd_tutorial.recipes.methods import baseline_student

    if method not in COMPARISON_BASELINES:
        raise ValueError(f"method must be one of {COMPARISON_BASELINES}, got {method!r}")
    return baseline_student(profile, arch, teacher, method, kind=kind, seed=seed,
                            levels=dipkd_levels(teacher.model), **kwargs)
