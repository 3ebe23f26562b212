"""Training and distilling detectors: the procedure chapters 0-3 and 6 and ``rskd train`` share.

Two layers:

* **Full scale** -- the ``detector`` recipe: a YAML config (data root, detector, ``train:`` block) trains
  one detector (a teacher, or a student without KD) on a COCO-format dataset prepared by
  ``data_scripts/``. Method recipes (DS2D2, DIPKD) reuse :class:`DetectionData`,
  :class:`DetectorSpec`, :func:`build_from_spec` and :func:`detection_splits`.
* **Tutorial scale** -- :func:`synthetic_root`, :func:`tutorial_teacher` and :func:`distill_student`
  size everything from the run profile, so a chapter trains a teacher (or loads it from the cache)
  and distils a student in a few lines.

Taught in chapter 0 (``book/00_distilling_a_detector.ipynb``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rskd_tutorial.devices import default_device
from rskd_tutorial.engine import cache_dir, evaluate_detection, fit, run_key, seed_everything
from rskd_tutorial.engine.train import TrainConfig, load_weights
from rskd_tutorial.models.detectors import Detector, build_detector
from rskd_tutorial.models.utils import load_state_strict, weights_under
from rskd_tutorial.recipes.registry import Recipe, register
from rskd_tutorial.recipes.results import VAL_PREFIX, val_prefixed
from rskd_tutorial.recipes.runs import TutorialRun, TutorialSetup, finish_run, fit_closure

SYNTHETIC_KINDS = ("optical", "sar", "rgbir")


@dataclass
class DetectionData:
    """Where a COCO-format detection dataset lives and how it is augmented."""

    root: str
    train_split: str = "train"
    val_split: str = "val"
    hflip: float = 0.5
    vflip: float = 0.0               # remote sensing is orientation-free; the papers use hflip only
    drop_empty: bool = True          # mmdet filter_empty_gt for training
    name: str | None = None          # dataset name used in error messages (e.g. "DIOR")
    in_memory: bool = False          # decode every image once and keep it (small datasets: no file I/O per step)


@dataclass
class DetectorSpec:
    """A detector as ``models.detectors.build_detector`` takes it."""

    arch: str
    backbone: str
    min_size: int = 800
    max_size: int = 1333
    fpn_channels: int = 256
    anchor_factor: float = 1.0
    box_head_dim: int = 1024
    pretrained_backbone: str | None = None
    rois_per_image: int = 512
    rpn_proposals: int = 1000
    head_convs: int | None = None    # RetinaNet: conv + GroupNorm layers a branch (None: torchvision's head)


@dataclass
class DetectorRun:
    """Config of the ``detector`` recipe: train one detector with its own supervised loss."""

    data: DetectionData
    model: DetectorSpec
    train: TrainConfig
    eval_batch_size: int = 8


def build_from_spec(spec: DetectorSpec, num_classes: int, **kwargs: Any) -> Detector:
    """The detector a :class:`DetectorSpec` describes (``kwargs`` go to ``build_detector``)."""
    return build_detector(spec.arch, spec.backbone, num_classes, min_size=spec.min_size, max_size=spec.max_size,
                          fpn_channels=spec.fpn_channels, anchor_factor=spec.anchor_factor,
                          box_head_dim=spec.box_head_dim, pretrained_backbone=spec.pretrained_backbone,
                          rois_per_image=spec.rois_per_image, rpn_proposals=spec.rpn_proposals,
                          head_convs=spec.head_convs, **kwargs)


def detection_splits(data: DetectionData, eval_split: str | None = None) -> tuple[Any, Any]:
    """(train set with flips, evaluation set) of a COCO-format dataset; ``eval_split`` overrides
    ``data.val_split`` (e.g. ``"test"`` for the held-out split of the tutorial scale)."""
    from rskd_tutorial.data import CocoDetection
    from rskd_tutorial.data.transforms import Compose, RandomHorizontalFlip, RandomVerticalFlip

    flips = []
    if data.hflip > 0:
        flips.append(RandomHorizontalFlip(data.hflip))
    if data.vflip > 0:
        flips.append(RandomVerticalFlip(data.vflip))
    train = CocoDetection(data.root, data.train_split, transforms=Compose(flips) if flips else None,
                          drop_empty=data.drop_empty, name=data.name, in_memory=data.in_memory)
    val = CocoDetection(data.root, eval_split or data.val_split, name=data.name, in_memory=data.in_memory)
    return train, val


def detection_collate() -> Callable:
    """The collate function of detection batches (``data.collate_detection``: lists of images and targets)."""
    from rskd_tutorial.data import collate_detection

    return collate_detection


def train_detector(cfg: DetectorRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``detector`` recipe: train, evaluate on the validation split each ``eval_every`` epochs."""
    train_set, val_set = detection_splits(cfg.data)
    model = build_from_spec(cfg.model, train_set.num_classes)
    result = fit(model, train_set, cfg.train, out_dir, collate_fn=detection_collate(), resume=resume, progress=progress,
                 evaluate=lambda m: evaluate_detection(m, val_set, batch_size=cfg.eval_batch_size))
    return result.final_metrics


def evaluate_detector(cfg: DetectorRun, checkpoint: Path) -> dict[str, float]:
    """COCO metrics of a checkpoint on the config's validation split."""
    _, val_set = detection_splits(cfg.data)
    model = build_from_spec(cfg.model, val_set.num_classes)
    load_weights(model, checkpoint)
    model.to(default_device())
    return evaluate_detection(model, val_set, batch_size=cfg.eval_batch_size)


STUDENT_WEIGHTS = "student.pt"


def fit_student(distiller: nn.Module, train_set: Any, val_set: Any, config: TrainConfig, out_dir: str | Path, *,
                eval_batch_size: int = 8, resume: bool = False, progress: bool = True) -> dict[str, float]:
    """Stage "student" of a full-scale KD recipe (DS2D2, DIPKD): train ``distiller`` with ``engine.fit``,
    evaluating its student on ``val_set``; write the bare student's weights to ``out_dir/student.pt``; return
    the last validation metrics."""
    result = fit(distiller, train_set, config, out_dir, collate_fn=detection_collate(), resume=resume, progress=progress,
                 evaluate=lambda m: evaluate_detection(m, val_set, batch_size=eval_batch_size))
    torch.save({"model": distiller.student.state_dict()}, Path(out_dir) / STUDENT_WEIGHTS)
    return result.final_metrics


def evaluate_student(cfg: Any, checkpoint: str | Path) -> dict[str, float]:
    """COCO metrics of a distilled student (``student.pt`` or the Distiller run's ``final.pt``, keys
    ``student.*``) of any recipe whose config has ``data``, ``student`` and ``eval_batch_size`` (DS2D2, DIPKD)."""
    _, val_set = detection_splits(cfg.data)
    student = build_from_spec(cfg.student, val_set.num_classes)
    load_state_strict(student, weights_under(checkpoint, "student."))
    return evaluate_detection(student.to(default_device()), val_set, batch_size=cfg.eval_batch_size)


register(Recipe("detector", DetectorRun, train_detector, evaluate_detector,
                "train one detector (a teacher, or a student without distillation)"))


# ----------------------------------------------------------------------------------------------
# tutorial scale
# ----------------------------------------------------------------------------------------------

def synthetic_root(kind: str, profile: Any, seed: int = 0, *, progress: bool = True) -> Path:
    """Write (or reuse) the profile's synthetic scenes of ``kind`` under the cache folder; return the root
    (``progress``: show a bar while writing)."""
    from rskd_tutorial.data.synthetic import write_scenes

    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"kind must be one of {SYNTHETIC_KINDS}, got {kind!r}")
    scale = profile.detection if kind != "rgbir" else profile.crossmodal
    n_train = scale.train_images if kind != "rgbir" else scale.train_pairs
    n_val = scale.val_images if kind != "rgbir" else scale.val_pairs
    n_test = scale.test_images if kind != "rgbir" else getattr(scale, "test_pairs", 0)
    root = cache_dir() / "data" / f"{kind}-{profile.name}-s{seed}"
    return Path(write_scenes(kind, root, n_train=n_train, n_val=n_val, n_test=n_test, size=scale.image_size,
                             seed=seed, progress=progress))


def tutorial_data(kind: str, profile: Any, *, progress: bool = False) -> DetectionData:
    """The chapter's synthetic ``kind`` scenes as :class:`DetectionData` (held in memory; flips both ways,
    since overhead imagery has no up)."""
    root = synthetic_root(kind, profile, seed=0, progress=progress)
    return DetectionData(root=str(root), vflip=0.5, in_memory=True, name=f"synthetic {kind}")


def data_signature(root: str | Path) -> dict[str, Any]:
    """What a run-cache key must know of a synthetic dataset: its folder name and its manifest (kind, counts,
    size, seed), so that re-sized scenes never load a model trained on others."""
    from rskd_tutorial.data.synthetic import MANIFEST

    root = Path(root)
    path = root / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {"name": root.name, "manifest": manifest}


def report_split(profile: Any) -> str:
    """The split a chapter's tables report: ``test`` when the profile holds one out, else ``val``."""
    return "test" if profile.detection.test_images else "val"


def tutorial_spec(profile: Any, arch: str, role: str) -> DetectorSpec:
    """The detector of a chapter at the profile's scale; ``role`` is ``teacher`` or ``student``."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    d = profile.detection
    backbone = d.teacher_backbone if role == "teacher" else d.student_backbone
    return DetectorSpec(arch=arch, backbone=backbone, min_size=d.image_size, max_size=d.image_size,
                        fpn_channels=d.fpn_channels, anchor_factor=d.anchor_factor_for(arch),
                        box_head_dim=d.box_head_dim or min(1024, 4 * d.fpn_channels), rois_per_image=d.rois_per_image,
                        rpn_proposals=d.rpn_proposals, head_convs=d.head_convs)


def tutorial_train_config(profile: Any, arch: str, role: str, seed: int = 0, **overrides: Any) -> TrainConfig:
    """The profile's optimiser with warm-up; for SGD (the papers') LR steps at 2/3 and 11/12 of the schedule
    (the papers' 16 and 22 of 24 epochs), for AdamW (from-scratch tutorial runs) a cosine decay."""
    d = profile.detection
    epochs = d.teacher_epochs if role == "teacher" else d.student_epochs
    if role == "teacher" and arch == "retinanet" and d.teacher_epochs_retinanet is not None:
        epochs = d.teacher_epochs_retinanet
    lr = d.lr_retinanet if arch == "retinanet" else d.lr_faster_rcnn
    milestones = tuple(sorted({max(1, round(epochs * 2 / 3)), max(1, round(epochs * 11 / 12))} - {epochs}))
    schedule = "multistep" if d.optimizer == "sgd" else "cosine"
    kwargs: dict[str, Any] = dict(epochs=epochs, lr=lr, batch_size=d.batch_size, milestones=milestones,
                                  optimizer=d.optimizer, weight_decay=d.weight_decay, schedule=schedule,
                                  warmup_iters=d.warmup_iters, grad_clip=10.0, num_workers=profile.num_workers,
                                  seed=seed, eval_every=epochs)
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def cached_run(trained: nn.Module, key: str, train: Callable[[Path], None], val_set: Any, batch_size: int,
               device: torch.device, *, evaluated: nn.Module | None = None, verbose: bool = True,
               extra: dict[str, Any] | None = None, shipped: bool = True) -> TutorialRun:
    """:func:`~rskd_tutorial.recipes.runs.finish_run` for a detector: COCO metrics of ``evaluated``
    (default ``trained``) on ``val_set``."""
    return finish_run(trained, key, train, lambda m: evaluate_detection(m, val_set, batch_size=batch_size), device,
                      evaluated=evaluated, verbose=verbose, extra=extra, shipped=shipped)


def with_val_metrics(run: TutorialRun, val_set: Any, batch_size: int = 8) -> TutorialRun:
    """``run`` with its COCO metrics on ``val_set`` added as ``val_*`` (evaluated once; a run that has them is
    returned as is): what :func:`~rskd_tutorial.recipes.results.chosen_on_val` chooses a sweep on, while the
    unprefixed metrics stay the held-out test split's."""
    if not any(k.startswith(VAL_PREFIX) for k in run.metrics):
        run.metrics.update(val_prefixed(evaluate_detection(run.model.eval(), val_set, batch_size=batch_size)))
    return run


def detector_setup(profile: Any, arch: str, kind: str = "optical", seed: int = 0, *, role: str = "teacher",
                   progress: bool = False, verbose: bool = True, **train_overrides: Any) -> TutorialSetup:
    """The untrained detector of :func:`tutorial_teacher`, its key and its training closure."""
    data = tutorial_data(kind, profile, progress=progress)
    root = Path(data.root)
    train_set, eval_set = detection_splits(data, report_split(profile))
    spec = tutorial_spec(profile, arch, role)
    cfg = tutorial_train_config(profile, arch, role, seed, **train_overrides)
    device = profile.device
    seed_everything(seed)  # the initial weights depend on the seed only, not on what ran before
    model = build_from_spec(spec, train_set.num_classes).to(device)
    key = run_key(f"{kind}-{arch}-{spec.backbone}-{role}", profile=profile.name, seed=seed,
                  config={"spec": asdict(spec), "train": asdict(cfg), "data": data_signature(root)})

    train = fit_closure(model, train_set, cfg, collate_fn=detection_collate(), device=device, progress=progress,
                        verbose=verbose, keep_checkpoint=False)
    return TutorialSetup(model, key, train, eval_set, cfg.batch_size, device)


def tutorial_teacher(profile: Any, arch: str, kind: str = "optical", seed: int = 0, *, role: str = "teacher",
                     progress: bool = False, verbose: bool = True, shipped: bool = True,
                     **train_overrides: Any) -> TutorialRun:
    """Train the chapter's teacher (or a student without KD, ``role="student"``) on synthetic ``kind``
    scenes, or load it from the cache or the teacher store (``shipped``); evaluate it on the held-out split
    (:func:`report_split`)."""
    s = detector_setup(profile, arch, kind, seed, role=role, progress=progress, verbose=verbose, **train_overrides)
    return cached_run(s.model, s.key, s.train, s.eval_set, s.batch_size, s.device, verbose=verbose, shipped=shipped)


def distill_student(profile: Any, arch: str, teacher: nn.Module, name: str,
                    make_losses: Callable[[nn.Module, nn.Module], Mapping[str, nn.Module]],
                    weights: Mapping[str, float], *, kind: str = "optical", seed: int = 0,
                    key_config: Mapping[str, Any] | None = None,
                    init_student: Callable[[nn.Module, nn.Module], None] | None = None,
                    progress: bool = False, verbose: bool = True, **train_overrides: Any) -> TutorialRun:
    """Distil a student of the chapter's scale from a trained ``teacher`` (cached by ``name``,
    profile, seed, weights and ``key_config``).

    ``make_losses(student, teacher)`` builds the KD terms (they may hold trainable adapters or
    frozen teacher heads); ``init_student(student, teacher)`` may copy teacher weights first (DIPKD's
    ``init_student``). Returns the trained student (not the Distiller) with its metrics.
    """
    from rskd_tutorial.distill import Distiller

    data = tutorial_data(kind, profile, progress=progress)
    root = Path(data.root)
    train_set, val_set = detection_splits(data, report_split(profile))
    spec = tutorial_spec(profile, arch, "student")
    cfg = tutorial_train_config(profile, arch, "student", seed, **train_overrides)
    device = profile.device
    teacher = teacher.to(device)
    seed_everything(seed)  # same initial student as tutorial_teacher(role="student") with this seed
    student = build_from_spec(spec, train_set.num_classes).to(device)
    if init_student is not None:
        init_student(student, teacher)
    distiller = Distiller(student, teacher, make_losses(student, teacher), weights).to(device)
    key = run_key(f"{kind}-{arch}-{spec.backbone}-{name}", profile=profile.name, seed=seed,
                  config={"spec": asdict(spec), "train": asdict(cfg), "weights": dict(weights),
                          "extra": dict(key_config or {}), "data": data_signature(root)})

    train = fit_closure(distiller, train_set, cfg, collate_fn=detection_collate(), device=device, progress=progress,
                        verbose=verbose, keep_checkpoint=False)
    return cached_run(distiller, key, train, val_set, cfg.batch_size, device, evaluated=student, verbose=verbose,
                      extra={"distiller": distiller})

