"""Baseline KD methods for detectors, built one way for every chapter, the bench and the comparison.

``baseline_losses(method, student, teacher)`` returns the KD terms of a baseline row (FitNet, AT,
CWD, FGD, MGD, PKD, logit KD) on the student's FPN levels, with each method's published defaults;
``baseline_student(...)`` distils a tutorial-scale student with it. Chapters 0, 2, 3 and 6 and
``rskd bench`` call these, so a "FitNet" row means the same thing everywhere.

Default weights are the outer weight of the single KD term (1.0): FGD and MGD carry their official
inner coefficients (:data:`FGD_WEIGHTS`, MGD's alpha 2e-5), whose scale assumes their summed
reductions; the others are means. Chapter 0 logs raw and weighted magnitudes of each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from rskd_tutorial.distill.baselines import (ATLoss, CWDLoss, FGDLoss, FitNetLoss, LogitKDLoss, MGDLoss,
                                             PKDLoss)

BASELINES = ("fitnet", "at", "cwd", "fgd", "mgd", "pkd", "logit")
# FGD's official detection configs (Yang et al. 2022): Faster R-CNN and RetinaNet weights differ
FGD_WEIGHTS = {"faster_rcnn": dict(alpha=5e-5, beta=2.5e-5, gamma=5e-5, lam=5e-7),
               "retinanet": dict(alpha=1e-3, beta=5e-4, gamma=5e-4, lam=5e-6)}


def fpn_channels(detector: nn.Module) -> int:
    """Width of a detector's FPN maps."""
    return int(detector.net.backbone.out_channels)


def baseline_losses(method: str, student: nn.Module, teacher: nn.Module, *,
                    levels: Sequence[str] | None = None, **options: Any) -> dict[str, nn.Module]:
    """``{method: loss}`` for one baseline row, on ``levels`` (default: every FPN level of the student).

    ``options`` go to the loss (e.g. ``tau`` for CWD, ``mask_ratio`` for MGD, FGD's ``alpha``...).
    ``logit`` needs a RetinaNet teacher (its frozen classification head is run on the teacher's taps).
    """
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {BASELINES}")
    lv = list(levels) if levels is not None else list(student.levels)
    cs, ct = fpn_channels(student), fpn_channels(teacher)
    if method == "fitnet":
        loss: nn.Module = FitNetLoss(lv, cs, ct)
    elif method == "at":
        loss = ATLoss(lv, **options)
    elif method == "cwd":
        loss = CWDLoss(lv, cs, ct, **options)
    elif method == "fgd":
        loss = FGDLoss(lv, ct, **{**FGD_WEIGHTS[student.arch], **options})
    elif method == "mgd":
        loss = MGDLoss(lv, cs, ct, **options)
    elif method == "pkd":
        loss = PKDLoss(lv)
    else:
        if getattr(teacher, "arch", None) != "retinanet":
            raise ValueError("logit KD is defined here for RetinaNet's sigmoid classifier only")
        loss = LogitKDLoss(teacher.net.head, **options)
    return {method: loss}


def baseline_student(profile: Any, arch: str, teacher: Any, method: str, *, kind: str = "optical", seed: int = 0,
                     levels: Sequence[str] | None = None, weight: float = 1.0, options: dict | None = None,
                     **kwargs: Any) -> Any:
    """A baseline row at tutorial scale: ``recipes.detection.distill_student`` with
    :func:`baseline_losses` (cached by method, levels, weight, options and the teacher's run)."""
    from rskd_tutorial.recipes.detection import distill_student

    opts = dict(options or {})

    def make(student: nn.Module, t: nn.Module) -> dict[str, nn.Module]:
        return baseline_losses(method, student, t, levels=levels, **opts)

    key = {"teacher": str(teacher.run_dir), "levels": list(levels) if levels else None, "options": opts,
           "fgd": FGD_WEIGHTS[arch] if method == "fgd" else None}
    return distill_student(profile, arch, teacher.model, method, make, {method: weight}, kind=kind, seed=seed,
                           key_config=key, **kwargs)


def round_125(x: float) -> float:
    """The nearest of 1, 2, 5 x 10^k to ``x > 0`` on a log scale (a readable weight)."""
    if not x > 0:
        raise ValueError(f"round_125 needs a positive number, got {x}")
    k = math.floor(math.log10(x))
    return min((c * 10.0 ** e for e in (k, k + 1) for c in (1, 2, 5)), key=lambda v: abs(math.log(v / x)))


def step0_terms(profile: Any, arch: str, teacher: nn.Module,
                make_losses: Callable[[nn.Module, nn.Module], Mapping[str, nn.Module]], *, kind: str = "optical",
                seed: int = 0) -> tuple[dict[str, float], float]:
    """The raw KD terms and the student's detection loss of one :class:`~rskd_tutorial.distill.Distiller`
    step at weight 1: a fresh student (seeded like every student of a chapter), the trained ``teacher``,
    the first training batch (its random flips seeded too, so the numbers -- and any weight derived from
    them, which enters cache keys -- do not vary between runs). Returns ``({name: L_m}, L_det)``."""
    from rskd_tutorial.data import collate_detection
    from rskd_tutorial.distill import Distiller, student_loss
    from rskd_tutorial.engine import seed_everything, to_device
    from rskd_tutorial.recipes.detection import build_from_spec, detection_splits, tutorial_data, tutorial_spec

    device = profile.device
    train_set, _ = detection_splits(tutorial_data(kind, profile))
    seed_everything(seed)
    batch = to_device(collate_detection([train_set[i] for i in range(profile.detection.batch_size)]), device)
    seed_everything(seed)
    fresh = build_from_spec(tutorial_spec(profile, arch, "student"), train_set.num_classes).to(device)
    losses = dict(make_losses(fresh, teacher))
    out = Distiller(fresh, teacher, losses, {m: 1.0 for m in losses}).to(device).train()(*batch)
    det = student_loss(out.losses)
    return {m: float(out.losses[f"kd_{m}"].detach()) for m in losses}, det


def balanced_weight(raw: float, det: float, w_max: float = 1000.0) -> float:
    """``round_125(L_det / L_m)``, capped at ``w_max`` (also when the term nearly vanishes)."""
    return min(round_125(det / raw), w_max) if raw * w_max > det else w_max


def balanced_weights(profile: Any, arch: str, teacher: nn.Module, methods: Sequence[str], *, kind: str = "optical",
                     seed: int = 0, w_max: float = 1000.0) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Outer weights that make each baseline's KD term about as large as the detection loss at step 0.

    The papers' weights are tuned for 256-channel FPNs on 800 px images and sums over positions do not
    transfer to other scales, so the chapters use one rule instead: one :func:`step0_terms` step with
    every term at weight 1, then ``w_m = round_125(L_det / L_m)``, capped at ``w_max`` (a term that nearly
    vanishes, e.g. logit KD against a teacher that barely moved, must not get an absurd weight). Returns
    the weights and, per method, ``raw`` (``L_m``) and ``det``.
    """
    raw, det = step0_terms(profile, arch, teacher,
                           lambda s, t: {m: baseline_losses(m, s, t)[m] for m in methods}, kind=kind, seed=seed)
    weights = {m: balanced_weight(raw[m], det, w_max) for m in methods}
    return weights, {m: {"raw": raw[m], "det": det} for m in methods}
