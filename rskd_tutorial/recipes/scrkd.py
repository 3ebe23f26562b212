"""SCRKD's procedures: SOD teachers, cross-resolution distillation, and the two-stage cascade.

Two layers, as for detection (``recipes/detection.py``):

* **Full scale** -- three registered recipes for ``rskd train CONFIG``
  (``rskd_tutorial/configs/scrkd/``): ``sod_model`` trains one SOD net at one resolution (a teacher,
  or the "Student" baseline row); ``scrkd`` distils a trained teacher into a lower-resolution student
  (any subset of MVCD / MSFD / DSD); ``scrkd_cascade`` runs teacher -> assistant -> student
  (paper Sec. III-F, Fig. 3).
* **Tutorial scale** -- :func:`saliency_root`, :func:`tutorial_sod_model`, :func:`tutorial_distill`
  and :func:`tutorial_cascade` size everything from the run profile and cache every run, so
  chapter 5 trains (or reloads) each row of its table in a line.

:func:`cascade` is the procedure itself: stage 1 distils the high-resolution teacher into an
assistant at the intermediate resolution, stage 2 uses that trained assistant -- frozen, in eval mode
-- as the teacher of the low-resolution student. Every stage trains through ``engine.fit`` with a
:class:`~rskd_tutorial.distill.base.Distiller`, which keeps the teacher in eval mode whatever
``train()`` is called (the official code's per-epoch ``net.train()`` puts its teacher's BatchNorm
in training mode -- a defect we do not copy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rskd_tutorial.devices import default_device, module_device, resolve_device
from rskd_tutorial.distill.base import Distiller
from rskd_tutorial.distill.scrkd import (
    COMPONENTS,
    SCRKD_COEFFICIENTS,
    SCRKDCoefficients,
    StageMatching,
    get_matching,
    scrkd_losses,
    stage_matching,
)
from rskd_tutorial.engine import cache_dir, evaluate_saliency, fit, run_key, seed_everything, train_or_load
from rskd_tutorial.engine.cache import run_weights
from rskd_tutorial.engine.train import FINAL_WEIGHTS, RunExistsError, TrainConfig, load_checkpoint, load_weights
from rskd_tutorial.models.saliency import build_saliency_model
from rskd_tutorial.models.utils import load_state_strict
from rskd_tutorial.recipes.detection import TutorialRun, TutorialSetup, data_signature, run_seconds
from rskd_tutorial.recipes.registry import Recipe, register

METRIC_KEYS = ("MAE", "maxF", "Sm", "maxEm")


# ----------------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------------

@dataclass
class SaliencyData:
    """A SOD dataset in the package layout ``ROOT/<split>/{images,masks}`` (``data_scripts/`` converts
    ORSSD, EORSSD and ORSI-4199 to it) and how it is augmented and evaluated."""

    root: str
    train_split: str = "train"
    test_split: str = "test"
    hflip: float = 0.5
    vflip: float = 0.5               # the official code draws a random element of the dihedral group
    eval_size: int = 448             # the paper computes every metric at 448 x 448
    name: str | None = None          # dataset name for error messages (e.g. "EORSSD")


@dataclass
class SaliencyModelSpec:
    """An SOD net as ``models.saliency.build_saliency_model`` takes it."""

    arch: str = "pspnet"             # pspnet | transformer
    backbone: str = "resnet50"       # resnet18/34/50/101, or a timm PVTv2 name for the transformer
    channels: int = 256
    pretrained_backbone: str | None = None   # local torchvision ResNet file (resnet50-0676ba61.pth: models.pretrained)


@dataclass
class SODRun:
    """``sod_model`` recipe: train one SOD net at ``resolution`` with its own loss (teacher or baseline)."""

    data: SaliencyData
    model: SaliencyModelSpec
    resolution: int
    train: TrainConfig
    eval_batch_size: int = 8


@dataclass
class SCRKDRun:
    """``scrkd`` recipe: distil the trained teacher (``teacher_checkpoint``, a ``final.pt`` of a
    ``sod_model`` run, loaded strictly) at ``teacher_resolution`` into a student at ``student_resolution``."""

    data: SaliencyData
    model: SaliencyModelSpec
    teacher_resolution: int
    student_resolution: int
    teacher_checkpoint: str
    train: TrainConfig
    coefficients: SCRKDCoefficients = field(default_factory=lambda: SCRKD_COEFFICIENTS["pspnet"])
    components: tuple[str, ...] = COMPONENTS
    matching: str | None = None      # 2x | 4x | cascade | same; default from the resolutions
    eval_batch_size: int = 8


@dataclass
class CascadeRun:
    """``scrkd_cascade`` recipe: teacher (``teacher_checkpoint``) -> assistant -> student."""

    data: SaliencyData
    model: SaliencyModelSpec
    resolutions: tuple[int, int, int]            # teacher, assistant, student (paper: 448, 224, 112)
    teacher_checkpoint: str
    train: TrainConfig
    coefficients: SCRKDCoefficients = field(default_factory=lambda: SCRKD_COEFFICIENTS["pspnet"])
    components: tuple[str, ...] = COMPONENTS
    matching: tuple[str, str] | None = None      # per stage; default: stage_matching(teacher, assistant), then cascade
    eval_batch_size: int = 8


# ----------------------------------------------------------------------------------------------
# shared pieces
# ----------------------------------------------------------------------------------------------

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


def _collate() -> Callable:
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


def _metrics_to_json(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in metrics.items()}


def _metrics_from_json(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in metrics.items()}


def evaluate_cached(run_dir: Path, model: nn.Module, test_set: Any, eval_size: int, batch_size: int = 8) -> dict[str, Any]:
    """SOD metrics with curves, stored in ``run_dir/eval.json`` beside ``final.pt`` (a cache hit does
    not re-evaluate)."""
    path, weights = Path(run_dir) / "eval.json", run_weights(run_dir)
    if path.is_file() and weights is not None and path.stat().st_mtime >= weights.stat().st_mtime:
        return _metrics_from_json(json.loads(path.read_text()))
    metrics = evaluate_saliency(model, test_set, eval_size=eval_size, batch_size=batch_size, curves=True)
    path.write_text(json.dumps(_metrics_to_json(metrics)))
    return metrics


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
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
    final = run_dir / FINAL_WEIGHTS
    if final.is_file():
        load_weights(distiller, final)
        if device is not None:
            distiller.to(resolve_device(device))     # as fit() would have left it
        if verbose:
            print(f"loaded finished stage {run_dir}")
        return
    fit(distiller, train_set, config, run_dir, collate_fn=_collate(), resume=True, device=device,
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


# ----------------------------------------------------------------------------------------------
# full-scale recipes
# ----------------------------------------------------------------------------------------------

def train_sod(cfg: SODRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``sod_model`` recipe: one SOD net at ``cfg.resolution``, evaluated at ``data.eval_size``."""
    train_set, test_set = saliency_splits(cfg.data, cfg.resolution, cfg.resolution)
    model = build_model(cfg.model)
    result = fit(model, train_set, cfg.train, out_dir, collate_fn=_collate(), resume=resume, progress=progress,
                 evaluate=lambda m: _scalars(evaluate_saliency(m, test_set, eval_size=cfg.data.eval_size,
                                                                batch_size=cfg.eval_batch_size)))
    return result.final_metrics


def evaluate_sod(cfg: SODRun, checkpoint: Path) -> dict[str, float]:
    _, test_set = saliency_splits(cfg.data, cfg.resolution, cfg.resolution)
    model = load_weights(build_model(cfg.model, pretrained=False), checkpoint).to(default_device())
    return _scalars(evaluate_saliency(model, test_set, eval_size=cfg.data.eval_size, batch_size=cfg.eval_batch_size))


def _teacher(cfg: SCRKDRun | CascadeRun) -> nn.Module:
    return load_weights(build_model(cfg.model, pretrained=False), cfg.teacher_checkpoint)


def train_scrkd(cfg: SCRKDRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``scrkd`` recipe: teacher checkpoint -> SCRKD student; evaluated on the student's test images."""
    t, s = cfg.teacher_resolution, cfg.student_resolution
    train_set, test_set = saliency_splits(cfg.data, (t, s), s)
    student = build_model(cfg.model, disentangle=True)
    distiller = scrkd_distiller(student, _teacher(cfg), t, s, coefficients=cfg.coefficients,
                                components=cfg.components, matching=cfg.matching, arch=cfg.model.arch)
    result = fit(distiller, train_set, cfg.train, out_dir, collate_fn=_collate(), resume=resume, progress=progress,
                 evaluate=lambda d: _scalars(evaluate_saliency(d.student, test_set, eval_size=cfg.data.eval_size,
                                                                batch_size=cfg.eval_batch_size)))
    return result.final_metrics


def _student_of(checkpoint: Path, spec: SaliencyModelSpec) -> nn.Module:
    """A distilled student's weights from a Distiller checkpoint (keys ``student.*``) or a bare one."""
    state = load_checkpoint(checkpoint)
    state = state.get("model", state)
    if any(k.startswith("student.") for k in state):
        state = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    return load_state_strict(build_model(spec, disentangle=True, pretrained=False), state)


def evaluate_scrkd(cfg: SCRKDRun, checkpoint: Path) -> dict[str, float]:
    _, test_set = saliency_splits(cfg.data, (cfg.teacher_resolution, cfg.student_resolution), cfg.student_resolution)
    student = _student_of(checkpoint, cfg.model).to(default_device())
    return _scalars(evaluate_saliency(student, test_set, eval_size=cfg.data.eval_size, batch_size=cfg.eval_batch_size))


def train_cascade(cfg: CascadeRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``scrkd_cascade`` recipe; the final student's metrics (the assistant's are logged too)."""
    t, a, s = cfg.resolutions
    train_set, test_set = saliency_splits(cfg.data, (t, a, s), s, mask_size=a)    # masks for the assistant's loss
    out_dir = Path(out_dir)
    if not resume and any((out_dir / d / "checkpoint.pt").exists() for d in ("stage1_assistant", "stage2_student")):
        raise RunExistsError(f"{out_dir} already holds a cascade run; pass --resume to continue it")
    result = cascade(t, a, s, teacher=_teacher(cfg), make_student=lambda: build_model(cfg.model, disentangle=True),
                     train_set=train_set, config=cfg.train, out_dir=out_dir, coefficients=cfg.coefficients,
                     components=cfg.components, matching=tuple(cfg.matching) if cfg.matching else (None, None),
                     device=default_device(), progress=progress)
    metrics = {}
    for name, model, res in (("assistant", result.assistant, a), ("student", result.student, s)):
        _, test = saliency_splits(cfg.data, res, res)
        scores = _scalars(evaluate_saliency(model, test, eval_size=cfg.data.eval_size, batch_size=cfg.eval_batch_size))
        metrics.update({(k if name == "student" else f"assistant_{k}"): v for k, v in scores.items()})
    (out_dir / "eval.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def evaluate_cascade(cfg: CascadeRun, checkpoint: Path) -> dict[str, float]:
    """Metrics of the cascade's final student (``stage2_student/final.pt``, or the run folder)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "stage2_student" / FINAL_WEIGHTS
    s = cfg.resolutions[2]
    _, test_set = saliency_splits(cfg.data, s, s)
    student = _student_of(checkpoint, cfg.model).to(default_device())
    return _scalars(evaluate_saliency(student, test_set, eval_size=cfg.data.eval_size, batch_size=cfg.eval_batch_size))


register(Recipe("sod_model", SODRun, train_sod, evaluate_sod,
                "train one salient-object-detection net at one resolution (SCRKD teacher or baseline)"))
register(Recipe("scrkd", SCRKDRun, train_scrkd, evaluate_scrkd,
                "SCRKD: distil a high-resolution SOD teacher into a low-resolution student"))
register(Recipe("scrkd_cascade", CascadeRun, train_cascade, evaluate_cascade,
                "cascaded SCRKD: teacher -> assistant -> student"))


# ----------------------------------------------------------------------------------------------
# tutorial scale
# ----------------------------------------------------------------------------------------------

def saliency_root(profile: Any, seed: int = 0) -> Path:
    """Write (or reuse) the profile's synthetic saliency scenes (at the teacher resolution) under the
    cache folder; return the root."""
    from rskd_tutorial.data.synthetic import write_scenes

    s = profile.saliency
    root = cache_dir() / "data" / f"saliency-{profile.name}-s{seed}"
    return Path(write_scenes("saliency", root, n_train=s.train_images, n_val=s.test_images, n_test=s.val_images,
                             size=max(s.resolutions), seed=seed, progress=False))


def tutorial_spec(profile: Any, arch: str = "pspnet") -> SaliencyModelSpec:
    s = profile.saliency
    backbone = s.backbone if arch == "pspnet" else s.transformer_backbone
    return SaliencyModelSpec(arch=arch, backbone=backbone, channels=s.channels)


def tutorial_train_config(profile: Any, role: str = "teacher", seed: int = 0, **overrides: Any) -> TrainConfig:
    """AdamW with a short warm-up and cosine decay (from scratch; the paper's constant 2e-5 assumes
    ImageNet weights and 100 epochs)."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    s = profile.saliency
    epochs = s.teacher_epochs if role == "teacher" else s.student_epochs
    kwargs: dict[str, Any] = dict(epochs=epochs, lr=s.lr, batch_size=s.batch_size, optimizer="adamw",
                                  weight_decay=1e-4, schedule="cosine", warmup_iters=s.warmup_iters,
                                  warmup_factor=0.01, num_workers=profile.num_workers, seed=seed,
                                  eval_every=epochs)
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def _data(profile: Any, seed: int = 0) -> SaliencyData:
    return SaliencyData(root=str(saliency_root(profile, seed)), eval_size=profile.saliency.eval_size, name="synthetic")


def sod_setup(profile: Any, resolution: int, *, arch: str = "pspnet", seed: int = 0, role: str = "teacher",
              progress: bool = False, verbose: bool = False, **train_overrides: Any) -> TutorialSetup:
    """The untrained SOD net of :func:`tutorial_sod_model`, its key, training closure and test set."""
    data = _data(profile)
    train_set, test_set = saliency_splits(data, resolution, resolution)
    spec, cfg = tutorial_spec(profile, arch), tutorial_train_config(profile, role, seed, **train_overrides)
    device = profile.device
    seed_everything(seed)
    model = build_model(spec).to(device)
    key = run_key(f"saliency-{arch}-{spec.backbone}-{resolution}px-{role}", profile=profile.name, seed=seed,
                  config={"spec": asdict(spec), "train": asdict(cfg), "data": data_signature(data.root)})

    def train(run_dir: Path) -> None:
        fit(model, train_set, cfg, run_dir, collate_fn=_collate(), resume=True, device=device,
            progress=progress, verbose=verbose, keep_checkpoint=False)

    return TutorialSetup(model, key, train, test_set, cfg.batch_size, device, eval_size=data.eval_size)


def tutorial_sod_model(profile: Any, resolution: int, *, arch: str = "pspnet", seed: int = 0,
                       role: str = "teacher", progress: bool = False, verbose: bool = False, shipped: bool = True,
                       **train_overrides: Any) -> TutorialRun:
    """Train (or load from the cache or the teacher store) a plain SOD net at ``resolution`` on the chapter's
    synthetic scenes, evaluated on the test images at that resolution, metrics at the profile's ``eval_size``."""
    s = sod_setup(profile, resolution, arch=arch, seed=seed, role=role, progress=progress, verbose=verbose,
                  **train_overrides)
    model, run_dir, loaded = train_or_load(s.model, s.key, s.train, verbose=verbose, shipped=shipped)
    model.to(s.device).eval()
    metrics = evaluate_cached(run_dir, model, s.eval_set, s.eval_size, s.batch_size)
    return TutorialRun(model, run_dir, metrics, loaded, run_seconds(run_dir), extra={"resolution": resolution})


def tutorial_distill(profile: Any, teacher: nn.Module, teacher_res: int, student_res: int, name: str, *,
                     losses: Callable[[nn.Module], tuple[Mapping[str, nn.Module], Mapping[str, float]]] | None = None,
                     components: Sequence[str] = COMPONENTS, coefficients: SCRKDCoefficients | None = None,
                     matching: str | None = None, arch: str = "pspnet", seed: int = 0, progress: bool = False,
                     verbose: bool = False, **train_overrides: Any) -> TutorialRun:
    """Distil ``teacher`` into a student at ``student_res`` (cached by ``name`` and the settings).

    Default: SCRKD (or the ablation ``components``) on a disentangled student; with ``losses``
    (``student -> (terms, weights)``, e.g. FitNet or AT) a plain student is distilled with those terms.
    Returns the trained student; ``extra["distiller"]`` holds the Distiller (MSFD weights etc.)."""
    data = _data(profile)
    train_set, test_set = saliency_splits(data, (teacher_res, student_res), student_res)
    spec, cfg = tutorial_spec(profile, arch), tutorial_train_config(profile, "student", seed, **train_overrides)
    coefficients = coefficients or SCRKD_COEFFICIENTS["pspnet"]
    device = profile.device
    teacher = teacher.to(device)
    seed_everything(seed)     # the student's (and any adapter's) initial weights follow the seed
    if losses is None:
        student = build_model(spec, disentangle=True)
        distiller = scrkd_distiller(student, teacher, teacher_res, student_res, coefficients=coefficients,
                                    components=components, matching=matching, arch=arch)
        described = {"scrkd": list(components), "coefficients": asdict(coefficients), "matching": matching}
    else:
        student = build_model(spec)
        terms, weights = losses(student)
        distiller = Distiller(student, teacher, terms, weights, student_input=student_res, teacher_input=teacher_res)
        described = {"terms": sorted(terms), "weights": dict(weights)}
    distiller.to(device)
    key = run_key(f"saliency-{arch}-{spec.backbone}-{name}-{teacher_res}to{student_res}", profile=profile.name,
                  seed=seed, config={"spec": asdict(spec), "train": asdict(cfg), "kd": described,
                                     "data": data_signature(data.root)})

    def train(run_dir: Path) -> None:
        fit(distiller, train_set, cfg, run_dir, collate_fn=_collate(), resume=True, device=device,
            progress=progress, verbose=verbose, keep_checkpoint=False)

    distiller, run_dir, loaded = train_or_load(distiller, key, train, verbose=verbose)
    student.eval()
    metrics = evaluate_cached(run_dir, student, test_set, data.eval_size, cfg.batch_size)
    return TutorialRun(student, run_dir, metrics, loaded, run_seconds(run_dir), extra={"distiller": distiller})


def tutorial_cascade(profile: Any, teacher: nn.Module, *, arch: str = "pspnet", seed: int = 0,
                     coefficients: SCRKDCoefficients | None = None, progress: bool = False,
                     verbose: bool = False, **train_overrides: Any) -> tuple[TutorialRun, TutorialRun]:
    """:func:`cascade` at the profile's resolutions (cached); returns (assistant run, student run)."""
    t, a, s = profile.saliency.resolutions
    data = _data(profile)
    train_set, _ = saliency_splits(data, (t, a, s), s, mask_size=a)    # masks for the assistant's loss
    spec, cfg = tutorial_spec(profile, arch), tutorial_train_config(profile, "student", seed, **train_overrides)
    coefficients = coefficients or SCRKD_COEFFICIENTS["pspnet"]
    key = run_key(f"saliency-{arch}-{spec.backbone}-cascade-{t}to{a}to{s}", profile=profile.name, seed=seed,
                  config={"spec": asdict(spec), "train": asdict(cfg), "coefficients": asdict(coefficients),
                          "data": data_signature(data.root)})
    device = profile.device
    done = [(cache_dir() / key / stage / FINAL_WEIGHTS).is_file() for stage in ("stage1_assistant", "stage2_student")]
    seed_everything(seed)
    result = cascade(t, a, s, teacher=teacher.to(device), make_student=lambda: build_model(spec, disentangle=True).to(device),
                     train_set=train_set, config=cfg, out_dir=cache_dir() / key, coefficients=coefficients,
                     device=device, progress=progress, verbose=verbose, keep_checkpoint=False)
    runs = []
    for model, res, run_dir, d, loaded in zip((result.assistant, result.student), (a, s), result.stage_dirs,
                                              result.distillers, done):
        _, test_set = saliency_splits(data, res, res)
        metrics = evaluate_cached(run_dir, model, test_set, data.eval_size, cfg.batch_size)
        runs.append(TutorialRun(model, run_dir, metrics, loaded, run_seconds(run_dir),
                                extra={"distiller": d, "resolution": res}))
    return runs[0], runs[1]


COMPARISON = ("fitnet", "at", "mvcd", "msfd", "dsd", "scrkd", "scrkd_4x", "cascade")
"""The rows of chapter 5's table after the student alone: two feature baselines, each SCRKD component
alone (paper Table VI), SCRKD at the 2x gap (Table II), SCRKD from the 4x teacher and the cascade (Table V)."""


def baseline_terms(name: str, channels: int) -> Callable[[nn.Module], tuple[dict[str, nn.Module], dict[str, float]]]:
    """FitNet (a learned 1x1 adapter, MSE, weight 1) or AT (weight 100, Zagoruyko & Komodakis) on all five
    decoder stages, as the ``losses`` argument of :func:`tutorial_distill`."""
    from rskd_tutorial.distill import ATLoss, FitNetLoss

    levels = [f"stage{k}" for k in range(1, 6)]
    if name == "fitnet":
        return lambda student: ({"fitnet": FitNetLoss(levels, channels, channels)}, {"fitnet": 1.0})
    if name == "at":
        return lambda student: ({"at": ATLoss(levels)}, {"at": 100.0})
    raise ValueError(f"no saliency baseline {name!r}; choose 'fitnet' or 'at'")


def tutorial_comparison(profile: Any, teacher: nn.Module, big_teacher: nn.Module, seeds: Sequence[int], *,
                        rows: Sequence[str] = COMPARISON, progress: bool = False) -> dict[str, list[TutorialRun]]:
    """Chapter 5's table, one run per seed and row (each cached): ``student`` (alone, the student budget),
    then ``rows`` of :data:`COMPARISON`. ``teacher`` is the plain net at the middle resolution (the 2x
    gap), ``big_teacher`` the one at the highest (the 4x rows); ``assistant`` holds the cascade's stage 1."""
    t, a, s = profile.saliency.resolutions
    unknown = set(rows) - set(COMPARISON)
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; choose from {COMPARISON}")
    out: dict[str, list[TutorialRun]] = {"student": [tutorial_sod_model(profile, s, seed=k, role="student",
                                                                        progress=progress) for k in seeds]}
    for row in rows:
        for k in seeds:
            if row in ("fitnet", "at"):
                run = tutorial_distill(profile, teacher, a, s, row, losses=baseline_terms(row, profile.saliency.channels),
                                       seed=k, progress=progress)
            elif row in COMPONENTS:
                run = tutorial_distill(profile, teacher, a, s, f"scrkd-{row}", components=(row,), seed=k, progress=progress)
            elif row == "scrkd":
                run = tutorial_distill(profile, teacher, a, s, "scrkd", seed=k, progress=progress)
            elif row == "scrkd_4x":
                run = tutorial_distill(profile, big_teacher, t, s, "scrkd", seed=k, progress=progress)
            else:
                assistant, run = tutorial_cascade(profile, big_teacher, seed=k, progress=progress)
                out.setdefault("assistant", []).append(assistant)
            out.setdefault(row, []).append(run)
    return out
