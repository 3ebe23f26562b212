"""DS2D2's three stages: teacher -> high-frequency amplifier -> student (official README and configs).

1. **Teacher** -- the ``detector`` recipe (:mod:`rskd_tutorial.recipes.detection`), e.g. R101-FPN.
2. **High-frequency amplifier** -- :func:`build_amplifier` builds a detector of the *teacher's*
   architecture whose features are ``high_frequency_map(FPN_T(x))``
   (:func:`~rskd_tutorial.spectral.high_frequency_map`), loads the teacher's weights strictly,
   freezes backbone and FPN (they also stay in eval mode, :class:`FrozenTrunk`) and trains the heads
   with the ordinary detection losses (:func:`fit_amplifier`). It is saved as its own checkpoint,
   ``amplifier.pt``; only its RetinaNet head / RoI head serves in distillation (its RPN is discarded).
3. **Student** -- a :class:`~rskd_tutorial.distill.base.Distiller` with the four DS2D2 terms of
   :func:`~rskd_tutorial.distill.ds2d2.ds2d2_losses` weighted by
   :class:`~rskd_tutorial.distill.ds2d2.DS2D2Weights`; the final student is saved as ``student.pt``.

Two layers, as for every method:

* **Full scale** -- the registered recipes ``ds2d2_amplifier`` (:class:`AmplifierRun`) and ``ds2d2``
  (:class:`DS2D2Run`) for ``rskd train rskd_tutorial/configs/ds2d2/...``; the configs point at the
  teacher's ``final.pt`` and the amplifier's ``amplifier.pt`` by path.
* **Tutorial scale** -- :func:`tutorial_amplifier` (cached with ``engine.train_or_load``) and
  :func:`ds2d2_student`, which calls ``recipes.detection.distill_student`` with :func:`make_ds2d2_losses`.

Taught in chapter 2 (``book/02_ds2d2.ipynb``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rskd_tutorial.devices import default_device
from rskd_tutorial.distill.base import Distiller
from rskd_tutorial.distill.ds2d2 import DISW_DTYPES, TERMS, DS2D2Weights, ds2d2_losses
from rskd_tutorial.engine import evaluate_detection, fit, run_key
from rskd_tutorial.engine.train import FitResult, TrainConfig
from rskd_tutorial.models.detectors import Detector
from rskd_tutorial.models.utils import freeze, keep_frozen_in_eval, load_state_strict, weights_under
from rskd_tutorial.recipes.detection import (
    DetectionData,
    DetectorSpec,
    TutorialRun,
    build_from_spec,
    cached_run,
    data_signature,
    detection_collate,
    detection_splits,
    distill_student,
    evaluate_student,
    fit_student,
    report_split,
    tutorial_data,
    tutorial_spec,
    tutorial_train_config,
)
from rskd_tutorial.recipes.registry import Recipe, register
from rskd_tutorial.spectral import high_frequency_map

AMPLIFIER_WEIGHTS = "amplifier.pt"

# ----------------------------------------------------------------------------------------------
# the high-frequency amplifier
# ----------------------------------------------------------------------------------------------


class FrozenTrunk(nn.Module):
    """Wraps a detector whose backbone + FPN are frozen, so that only its heads train.

    ``freeze`` sets ``requires_grad=False`` and eval mode; this wrapper's ``train()`` puts every
    frozen sub-module back into eval mode, because ``engine.fit`` calls ``model.train()`` each epoch
    and a from-scratch trunk's BatchNorm would otherwise switch to batch statistics and drift
    (the representation the amplifier learns must stay the teacher's).
    Calls go straight to the wrapped detector.
    """

    def __init__(self, detector: Detector):
        super().__init__()
        freeze(detector.net.backbone)
        self.detector = detector

    def train(self, mode: bool = True) -> FrozenTrunk:
        super().train(mode)
        keep_frozen_in_eval(self)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.detector(*args, **kwargs)


def build_amplifier(spec: DetectorSpec, num_classes: int,
                    teacher_weights: str | Path | Mapping[str, torch.Tensor] | nn.Module | None) -> Detector:
    """The high-frequency amplifier before training: the teacher's architecture with
    ``feature_transform=high_frequency_map`` (official ``DS2D2_*_Amplifier.extract_feat``), every
    weight loaded strictly from the teacher (a ``final.pt`` path, a state dict or the teacher
    module; official ``load_from = teacher.pth``), backbone + FPN frozen.

    ``teacher_weights=None`` skips the loading (only to load a trained amplifier afterwards). Build it
    from the teacher's own spec: a teacher trained on ImageNet weights has frozen BatchNorm layers,
    and the strict load needs the same layer types.
    """
    amp = build_from_spec(spec, num_classes, feature_transform=high_frequency_map)
    if teacher_weights is not None:
        source = teacher_weights.state_dict() if isinstance(teacher_weights, nn.Module) else teacher_weights
        load_state_strict(amp, source)
    freeze(amp.net.backbone)
    return amp


def amplifier_state(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare amplifier state dict from ``amplifier.pt`` (bare detector keys) or from a ``fit``
    checkpoint of the :class:`FrozenTrunk` (``final.pt`` / ``checkpoint.pt``, keys ``detector.*``)."""
    return weights_under(source, "detector.")


def load_amplifier(spec: DetectorSpec, num_classes: int, path: str | Path) -> Detector:
    """A trained high-frequency amplifier from its checkpoint, loaded strictly (see :func:`amplifier_state`)."""
    amp = build_amplifier(spec, num_classes, None)
    load_state_strict(amp, amplifier_state(path))
    return amp


def fit_amplifier(amplifier: Detector, train_set: Any, config: TrainConfig, out_dir: str | Path, *,
                  val_set: Any = None, eval_batch_size: int = 8, resume: bool = False,
                  device: torch.device | str | None = None, progress: bool = True, verbose: bool = True) -> FitResult:
    """Stage 2: train the amplifier's heads (RetinaNet head; Faster R-CNN RPN + RoI head) with the
    detector's own losses on ``H(F)`` while backbone and FPN stay frozen and in eval mode; write
    ``out_dir/amplifier.pt`` (the bare detector's weights)."""
    out_dir = Path(out_dir)
    model = FrozenTrunk(amplifier)
    evaluate = None if val_set is None else (lambda m: evaluate_detection(m, val_set, batch_size=eval_batch_size))
    result = fit(model, train_set, config, out_dir, collate_fn=detection_collate(), evaluate=evaluate, resume=resume,
                 device=device, progress=progress, verbose=verbose)
    torch.save({"model": amplifier.state_dict()}, out_dir / AMPLIFIER_WEIGHTS)
    return result


# ----------------------------------------------------------------------------------------------
# full scale: the `ds2d2_amplifier` and `ds2d2` recipes
# ----------------------------------------------------------------------------------------------

@dataclass
class AmplifierRun:
    """Config of the ``ds2d2_amplifier`` recipe (official ``configs/distillation/ds2d2_*-amplifier_*.py``)."""

    data: DetectionData
    model: DetectorSpec               # the teacher's architecture (its backbone weights come from the teacher)
    teacher_weights: str              # the teacher's final.pt (the `detector` recipe's output)
    train: TrainConfig
    eval_batch_size: int = 8


@dataclass
class DS2D2Options:
    """Loss options of the ``ds2d2`` recipe (official values as defaults)."""

    temperature: float = 3.0          # Faster R-CNN RoI KL (KD_KLDivLoss T)
    cls_weight: float = 0.5           # Faster R-CNN RoI KL loss_weight
    qfl_beta: float = 1.0             # RetinaNet KD_QualityFocalLoss beta
    disw_dtype: str = "float32"       # "float16" reproduces the official rounding of DISW
    shared_rois: bool = True          # one sampled RoI set for both implicit terms (official: two)
    roi_seed: int = 0

    def __post_init__(self) -> None:
        if self.disw_dtype not in DISW_DTYPES:
            raise ValueError(f"disw_dtype must be one of {list(DISW_DTYPES)}, got {self.disw_dtype!r}")


@dataclass
class DS2D2Run:
    """Config of the ``ds2d2`` recipe (official ``configs/distillation/ds2d2_*_r{18,34,50}_fpn_2x_*.py``)."""

    data: DetectionData
    student: DetectorSpec
    teacher: DetectorSpec
    teacher_weights: str              # the teacher's final.pt
    amplifier_weights: str | None     # the amplifier's amplifier.pt (may be null when implicit_high is 0)
    weights: DS2D2Weights             # lambda_1..lambda_4 (distill.ds2d2.OFFICIAL_WEIGHTS)
    train: TrainConfig
    loss: DS2D2Options = field(default_factory=DS2D2Options)
    eval_batch_size: int = 8


def make_ds2d2_losses(amplifier: nn.Module | None, weights: DS2D2Weights, options: DS2D2Options | None = None,
                      ) -> Callable[[nn.Module, nn.Module], dict[str, nn.Module]]:
    """``make_losses(student, teacher)`` for ``recipes.detection.distill_student`` and the recipe."""
    opts = asdict(options or DS2D2Options())

    def make(student: nn.Module, teacher: nn.Module) -> dict[str, nn.Module]:
        return ds2d2_losses(student, teacher, amplifier, weights, **opts)

    return make


def train_amplifier(cfg: AmplifierRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``ds2d2_amplifier`` recipe: stage 2 from a trained teacher; returns the amplifier's COCO
    metrics on the validation split (what it detects from high frequencies alone)."""
    train_set, val_set = detection_splits(cfg.data)
    amp = build_amplifier(cfg.model, train_set.num_classes, cfg.teacher_weights)
    result = fit_amplifier(amp, train_set, cfg.train, out_dir, val_set=val_set, eval_batch_size=cfg.eval_batch_size,
                           resume=resume, progress=progress)
    return result.final_metrics


def evaluate_amplifier(cfg: AmplifierRun, checkpoint: Path) -> dict[str, float]:
    """COCO metrics of a trained amplifier (``amplifier.pt`` or its run's ``final.pt``)."""
    _, val_set = detection_splits(cfg.data)
    amp = load_amplifier(cfg.model, val_set.num_classes, checkpoint).to(default_device())
    return evaluate_detection(amp, val_set, batch_size=cfg.eval_batch_size)


def train_ds2d2(cfg: DS2D2Run, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``ds2d2`` recipe: stage 3, the student distilled from the frozen teacher and amplifier;
    writes ``out_dir/student.pt`` and returns the student's COCO metrics on the validation split."""
    out_dir = Path(out_dir)
    train_set, val_set = detection_splits(cfg.data)
    k = train_set.num_classes
    student = build_from_spec(cfg.student, k)
    teacher = build_from_spec(cfg.teacher, k)
    amplifier = None
    if cfg.weights.implicit_high != 0:
        if cfg.amplifier_weights is None:
            raise FileNotFoundError("amplifier_weights: required when weights.implicit_high is not 0 "
                                    "(train the amplifier first: recipe ds2d2_amplifier)")
        amplifier = load_amplifier(cfg.teacher, k, cfg.amplifier_weights)
    losses = make_ds2d2_losses(amplifier, cfg.weights, cfg.loss)(student, teacher)
    distiller = Distiller(student, teacher, losses, cfg.weights.terms(), teacher_weights=cfg.teacher_weights)
    return fit_student(distiller, train_set, val_set, cfg.train, out_dir, eval_batch_size=cfg.eval_batch_size,
                       resume=resume, progress=progress)


register(Recipe("ds2d2_amplifier", AmplifierRun, train_amplifier, evaluate_amplifier,
                "DS2D2 stage 2: train the high-frequency amplifier's heads on a frozen teacher"))
register(Recipe("ds2d2", DS2D2Run, train_ds2d2, evaluate_student,
                "DS2D2 stage 3: distil a student (explicit + implicit streams) from teacher and amplifier"))


# ----------------------------------------------------------------------------------------------
# tutorial scale
# ----------------------------------------------------------------------------------------------

def tutorial_amplifier(profile: Any, arch: str, teacher: TutorialRun, seed: int = 0, *, kind: str = "optical",
                       epochs: int | None = None, progress: bool = False, verbose: bool = True,
                       **train_overrides: Any) -> TutorialRun:
    """Train the chapter's high-frequency amplifier on a trained tutorial teacher (or load it from the
    cache; the key includes the teacher's run folder, so a new teacher means a new amplifier).

    Schedule: the student's (``profile.detection.student_epochs``, the teacher's LR and warm-up)
    unless ``epochs`` is given -- shorter than the official 24 epochs; only the heads train.
    Returns a ``TutorialRun`` whose ``model`` is the bare amplifier ``Detector`` (eval mode) and
    ``metrics`` its COCO metrics on the validation split.
    """
    data = tutorial_data(kind, profile, progress=progress)
    root = Path(data.root)
    train_set, val_set = detection_splits(data, report_split(profile))
    spec = tutorial_spec(profile, arch, "teacher")
    if epochs is not None:
        train_overrides.setdefault("epochs", epochs)
        train_overrides.setdefault("eval_every", epochs)
    cfg = tutorial_train_config(profile, arch, "student", seed, **train_overrides)
    device = profile.device
    amp = build_amplifier(spec, train_set.num_classes, teacher.model)
    model = FrozenTrunk(amp).to(device)
    key = run_key(f"{kind}-{arch}-{spec.backbone}-ds2d2-amplifier", profile=profile.name, seed=seed,
                  config={"spec": asdict(spec), "train": asdict(cfg), "teacher": str(teacher.run_dir),
                          "data": data_signature(root)})

    def train(run_dir: Path) -> None:   # fit_amplifier also writes amplifier.pt
        fit_amplifier(amp, train_set, cfg, run_dir, resume=True, device=device, progress=progress, verbose=verbose)

    return cached_run(model, key, train, val_set, cfg.batch_size, device, evaluated=amp, verbose=verbose)


def ds2d2_student(profile: Any, arch: str, teacher: TutorialRun, amplifier: TutorialRun | None, name: str,
                  weights: DS2D2Weights, *, options: DS2D2Options | None = None, kind: str = "optical",
                  seed: int = 0, **kwargs: Any) -> TutorialRun:
    """One DS2D2 row of chapter 2: a student of the profile's scale distilled with the terms that
    ``weights`` switches on (cached by ``name``, the weights, the options and the amplifier run)."""
    opts = options or DS2D2Options()
    amp = amplifier.model if amplifier is not None and weights.implicit_high != 0 else None
    key = {"ds2d2": asdict(opts), "amplifier": str(amplifier.run_dir) if amp is not None else None,
           "teacher": str(teacher.run_dir)}
    return distill_student(profile, arch, teacher.model, name, make_ds2d2_losses(amp, weights, opts),
                           weights.terms(), kind=kind, seed=seed, key_config=key, **kwargs)


def balanced_ds2d2_weights(profile: Any, arch: str, teacher: TutorialRun, amplifier: TutorialRun, *,
                           options: DS2D2Options | None = None, kind: str = "optical", seed: int = 0,
                           ) -> tuple[DS2D2Weights, dict[str, dict[str, float]]]:
    """Chapter 0's step-0 rule for each of DS2D2's four terms: one Distiller step of a fresh student with
    every term at weight 1 (:func:`~rskd_tutorial.recipes.methods.step0_terms`), then
    ``lambda_k = round_125(L_det / L_k)`` (:func:`~rskd_tutorial.recipes.methods.balanced_weight`), so that
    each weighted term starts about as large as the detection loss.

    The official ``dist_cfg`` values were tuned for 256-channel FPNs on 800 px DIOR images; this is the
    scale-free alternative the chapter sets beside them. Returns the weights and, per term, ``raw``
    (``L_k``) and ``det``.
    """
    from rskd_tutorial.recipes.methods import balanced_weight, step0_terms

    ones = DS2D2Weights(1.0, 1.0, 1.0, 1.0)
    raw, det = step0_terms(profile, arch, teacher.model, make_ds2d2_losses(amplifier.model, ones, options),
                           kind=kind, seed=seed)
    weights = DS2D2Weights(**{t: balanced_weight(raw[t], det) for t in TERMS})
    return weights, {t: {"raw": raw[t], "det": det} for t in TERMS}
