"""FreqKD's procedures: the RGB -> IR divergence study and the two-stage distillation recipe.

The abstract (FreqKD, 2026) fixes the loss structure; the procedure around it is **our
reconstruction** (no code or full text is public):

* **Stage A** -- feature distillation on paired frames: a frozen RGB teacher sees the RGB frame, the
  student the paired infrared frame (replicated to 3 channels, ImageNet statistics), with the same
  geometric augmentation on both; the only objective is the KD term
  (:class:`~rskd_tutorial.distill.freqkd.FreqKDLoss`; ``split="none"`` gives the plain full-band MSE
  control row).
* **Stage B** -- detection fine-tuning on IR only: the stage-A trunk (or the un-distilled one, the
  baseline) gets a ViTDet simple pyramid and a RetinaNet / Faster R-CNN head -- new at full scale
  (DINOv2 has none), the teacher detector's at tutorial scale (:func:`tutorial_student`) -- trained
  identically for every row.
* **Divergence study** -- a frozen trunk's features on the RGB and the IR frame of the same scenes,
  per block and band, with bootstrap CIs and the high/low ratio (the abstract reports 2.4x on 500 pairs);
  ``rskd divergence``.

Two layers, as for the other methods:

* **Full scale** -- the ``freqkd`` recipe (``rskd train rskd_tutorial/configs/freqkd/...``): DINOv2
  ViT-B/14 teacher and student from a local weights file on KAIST / FLIR ADAS, or a ResNet-50
  student; ``stage_a: null`` is the DINOv2 baseline; ``stage_a_weights`` fine-tunes a finished stage-A
  student on another dataset (the FLIR transfer row). :func:`divergence_main` is ``rskd divergence``.
* **Tutorial scale** -- :func:`tutorial_teacher` (a ViT detector trained from scratch on synthetic RGB
  scenes: our stand-in for the RGB foundation model), :func:`tutorial_student` (stage A + B of one
  table row) and :func:`tutorial_divergence`, sized by ``profile.crossmodal`` and cached.

Taught in chapter 4 (``book/04_freqkd_divergence.ipynb``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from rskd_tutorial.devices import default_device
from rskd_tutorial.distill.base import Distiller
from rskd_tutorial.distill.freqkd import FreqKDLoss
from rskd_tutorial.engine import cache_dir, evaluate_detection, fit, run_key, train_or_load
from rskd_tutorial.engine.train import FINAL_WEIGHTS, FitResult, TrainConfig, load_checkpoint, load_weights
from rskd_tutorial.models.detectors import BACKBONES, Detector, build_detector
from rskd_tutorial.models.vit import FeatureModel, ResNetTrunk, SimpleFeaturePyramid, ViTTrunk
from rskd_tutorial.recipes.detection import (TutorialRun, _evaluate_cached, cached_run, data_signature, run_seconds,
                                             synthetic_root)
from rskd_tutorial.recipes.registry import Recipe, register
from rskd_tutorial.spectral import band_divergence, bootstrap_ci, divergence_ratio

# ----------------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------------


@dataclass
class PairedData:
    """A paired RGB / IR dataset in COCO layout: ``file_name`` = IR frame, ``paired_file_name`` = RGB
    frame (what ``write_scenes("rgbir", ...)`` and the KAIST / FLIR converters in ``data_scripts/``
    write)."""

    root: str
    train_split: str = "train"
    val_split: str = "val"
    hflip: float = 0.5               # the same flip on both frames of a pair (keeps them aligned)
    resize: tuple[int, int] | None = None   # (h, w) both frames are resized to (stage A; default: as stored)
    name: str | None = None          # dataset name in error messages ("KAIST", "FLIR ADAS")


@dataclass
class BackboneSpec:
    """A trunk: a timm ViT (``vit_base_patch14_dinov2`` ...) or a ResNet (``resnet50`` ...)."""

    arch: str
    img_size: tuple[int, int] = (224, 224)    # ViT positional-embedding grid (multiples of the patch)
    weights: str | None = None                # local file: DINOv2 (ViT) or torchvision ImageNet (ResNet)
    blocks: tuple[int, ...] | None = None     # ViT blocks tapped for distillation (0-based); default: last
    depth: int | None = None                  # override the ViT depth (tutorial profiles)
    drop_path_rate: float = 0.0


@dataclass
class HeadSpec:
    """The detector put on a trunk in stage B."""

    arch: str = "retinanet"                   # retinanet | faster_rcnn
    out_channels: int = 256                   # pyramid / FPN width
    anchor_factor: float = 1.0
    min_size: int | None = None               # detector resize; default: the trunk's img_size
    max_size: int | None = None


@dataclass
class LossSpec:
    """FreqKD's loss options (``distill.freqkd.freqkd_loss``; every default but ``high_weight`` is ours)."""

    cutoff: float = 0.25
    high_weight: float = 0.1
    log_mse: str = "signed_log1p"             # signed_log1p | log1p_of_mse | none
    l2_normalize: bool = True
    split: str = "fft"                        # fft | haar | none (full-band MSE control)
    kind: str = "ideal"                       # ideal | gaussian
    levels: tuple[str, ...] | None = None     # teacher taps (default: all the teacher taps)
    student_levels: tuple[str, ...] | None = None


@dataclass
class StageA:
    """Stage A: feature distillation RGB teacher -> IR student on paired frames."""

    data: PairedData
    train: TrainConfig
    loss: LossSpec = field(default_factory=LossSpec)


@dataclass
class StageB:
    """Stage B: detection fine-tuning on IR (identical for the baseline and every distilled trunk)."""

    data: PairedData
    head: HeadSpec
    train: TrainConfig
    backbone_lr_scale: float = 1.0            # trunk LR = scale x train.lr
    eval_batch_size: int = 8


@dataclass
class DivergenceSpec:
    """The spectral divergence study (``rskd divergence``)."""

    root: str | None = None                   # default: stage A's (else stage B's) data root
    split: str = "train"
    pairs: int = 500
    blocks: tuple[int, ...] | None = None     # default: every block
    cutoff: float = 0.25
    kind: str = "ideal"
    band_split: str = "fft"                   # fft | haar
    metric: str = "cosine"                    # cosine | nmse | rel_mse
    window: str | None = None                 # None | hann
    n_boot: int = 1000
    batch_size: int = 8
    seed: int = 0


@dataclass
class FreqKDRun:
    """Config of the ``freqkd`` recipe (``rskd_tutorial/configs/freqkd/``)."""

    teacher: BackboneSpec
    student: BackboneSpec
    stage_b: StageB
    stage_a: StageA | None = None             # None: no distillation (the DINOv2 baseline row)
    stage_a_weights: str | None = None        # a finished stage A (its final.pt): skip stage A (FLIR transfer)
    divergence: DivergenceSpec = field(default_factory=DivergenceSpec)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------

class ModalityView(Dataset):
    """One modality of a paired dataset as a plain detection dataset: ``(image, target)``.

    ``dataset`` is a :class:`~rskd_tutorial.data.CocoDetection` with ``return_paired=True``
    (``(ir, target, rgb)`` items); ``modality="rgb"`` returns the paired RGB frame as the image (the
    teacher's training and evaluation set), ``"ir"`` the IR frame. ``coco``, ``num_classes``,
    ``categories`` and ``image_ids`` are the underlying dataset's (for COCOeval).
    """

    def __init__(self, dataset: Any, modality: str):
        if modality not in ("rgb", "ir"):
            raise ValueError(f"modality must be 'rgb' or 'ir', got {modality!r}")
        if not getattr(dataset, "return_paired", False):
            raise ValueError("ModalityView needs a CocoDetection built with return_paired=True")
        self.dataset = dataset
        self.modality = modality

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        ir, target, rgb = self.dataset[i]
        return (rgb if self.modality == "rgb" else ir), target

    def __getattr__(self, name: str) -> Any:   # only called for attributes not found the usual way
        if name in ("coco", "num_classes", "categories", "image_ids") and "dataset" in self.__dict__:
            return getattr(self.__dict__["dataset"], name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


def collate_pairs(batch: Sequence[tuple]) -> tuple[dict[str, Tensor], list[dict]]:
    """``[(ir, target, rgb), ...] -> ({"ir": [B, 3, H, W], "rgb": [B, 3, H, W]}, targets)``: the
    inputs a :class:`~rskd_tutorial.distill.base.Distiller` with ``student_input="ir"``,
    ``teacher_input="rgb"`` routes (frames of a batch share one size)."""
    ir, targets, rgb = zip(*batch)
    return {"ir": torch.stack(ir), "rgb": torch.stack(rgb)}, list(targets)


def _transforms(data: PairedData, train: bool) -> Any:
    from rskd_tutorial.data.transforms import Compose, RandomHorizontalFlip, Resize

    ops = [Resize(tuple(data.resize))] if data.resize is not None else []
    if train and data.hflip > 0:
        ops.append(RandomHorizontalFlip(data.hflip))
    return Compose(ops) if ops else None


def paired_splits(data: PairedData, *, drop_empty: bool = False) -> tuple[Any, Any]:
    """(training pairs with the same random flip on both frames, evaluation pairs)."""
    from rskd_tutorial.data import CocoDetection

    train = CocoDetection(data.root, data.train_split, transforms=_transforms(data, True), return_paired=True,
                          drop_empty=drop_empty, name=data.name)
    val = CocoDetection(data.root, data.val_split, transforms=_transforms(data, False), return_paired=True,
                        name=data.name)
    return train, val


def ir_splits(data: PairedData) -> tuple[Any, Any]:
    """(IR training set with flips and without empty frames, IR evaluation set) for stage B (the
    detector resizes by itself; ``resize`` is ignored here so that boxes are evaluated in the
    dataset's own pixels)."""
    from rskd_tutorial.data import CocoDetection

    data = dataclasses.replace(data, resize=None)
    train = CocoDetection(data.root, data.train_split, transforms=_transforms(data, True), drop_empty=True,
                          name=data.name)
    val = CocoDetection(data.root, data.val_split, name=data.name)
    return train, val


def _collate_detection():
    from rskd_tutorial.data import collate_detection

    return collate_detection


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------

def build_trunk(spec: BackboneSpec) -> nn.Module:
    """A :class:`~rskd_tutorial.models.vit.ViTTrunk` or, for ``resnet*``, a
    :class:`~rskd_tutorial.models.vit.ResNetTrunk`."""
    if spec.arch in BACKBONES:
        return ResNetTrunk(spec.arch, pretrained_backbone=spec.weights)
    kwargs: dict[str, Any] = {} if spec.depth is None else {"depth": spec.depth}
    return ViTTrunk(spec.arch, tuple(spec.img_size), blocks=spec.blocks, weights=spec.weights,
                    drop_path_rate=spec.drop_path_rate, **kwargs)


def detector_from_trunk(trunk: nn.Module, num_classes: int, head: HeadSpec,
                        img_size: Sequence[int] = (224, 224)) -> Detector:
    """A detector around (a copy of) ``trunk``: ViT -> simple pyramid + head; ResNet -> the same
    torchvision ResNet-FPN detector the other chapters use (built with the trunk's ImageNet file, if
    any, so the norm layers and frozen stages match), with the trunk's body weights."""
    hw = tuple(int(v) for v in img_size)
    common = dict(min_size=head.min_size or min(hw), max_size=head.max_size or max(hw), anchor_factor=head.anchor_factor)
    trunk = copy.deepcopy(trunk)
    if isinstance(trunk, ResNetTrunk):
        det = build_detector(head.arch, trunk.arch, num_classes, fpn_channels=head.out_channels,
                             pretrained_backbone=trunk.pretrained_backbone, **common)
        det.net.backbone.body.load_state_dict(trunk.body.state_dict())
        return det
    for p in trunk.parameters():
        p.requires_grad_(True)
    backbone = SimpleFeaturePyramid(trunk, head.out_channels, head.arch)
    return build_detector(head.arch, backbone=backbone, num_classes=num_classes, **common)


def detector_trunk(det: Detector) -> nn.Module:
    """The trunk inside a detector built by :func:`detector_from_trunk` (or ``build_vit_detector``)."""
    backbone = det.net.backbone
    return backbone.trunk if hasattr(backbone, "trunk") else backbone.body


def copy_head(source: Detector, target: Detector) -> Detector:
    """Copy every weight of ``source`` but its trunk (pyramid, head) into ``target`` (same
    architecture), strictly: a key missing on either side is an error."""
    def head(det: Detector) -> dict[str, Tensor]:
        return {k: v for k, v in det.state_dict().items() if not k.startswith("net.backbone.trunk.")}

    src, dst = head(source), head(target)
    missing, unexpected = sorted(set(dst) - set(src)), sorted(set(src) - set(dst))
    if missing or unexpected:
        raise RuntimeError(f"copy_head: the detectors differ beyond the trunk: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    target.load_state_dict(src, strict=False)   # shapes are still checked
    return target


def make_loss(spec: LossSpec, student: nn.Module, teacher: nn.Module) -> FreqKDLoss:
    """The stage-A loss for a trunk pair: taps default to every teacher tap; a ResNet student
    distils its ``c5`` map into each of them through a learned 1x1 projection."""
    levels = list(spec.levels) if spec.levels is not None else list(teacher.names)
    student_levels = list(spec.student_levels) if spec.student_levels is not None else None
    if student_levels is None and any(lv not in student.names for lv in levels):
        if len(student.names) != 1:
            raise ValueError(f"student taps {student.names} do not match the teacher's {levels}: set loss.student_levels")
        student_levels = [student.names[0]] * len(levels)
    return FreqKDLoss(levels, student_levels=student_levels, student_channels=student.embed_dim,
                      teacher_channels=teacher.embed_dim, cutoff=spec.cutoff, high_weight=spec.high_weight,
                      log_mse=spec.log_mse, l2_normalize=spec.l2_normalize, split=spec.split, kind=spec.kind)


def student_trunk_state(source: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The student trunk's weights from a stage-A checkpoint (``final.pt`` of a Distiller run)."""
    state = load_checkpoint(source) if not isinstance(source, Mapping) else source
    state = state.get("model", state)
    prefix = "student.trunk."
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise RuntimeError(f"{source if not isinstance(source, Mapping) else 'the state dict'} holds no "
                           f"'{prefix}*' weights: is it a FreqKD stage-A checkpoint?")
    return out


# ----------------------------------------------------------------------------------------------
# the two stages
# ----------------------------------------------------------------------------------------------

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
    result = fit(det, train_set, cfg, out_dir, collate_fn=_collate_detection(), resume=resume, device=device,
                 progress=progress, verbose=verbose, params=stage_b_params(det, backbone_lr_scale, cfg.lr),
                 evaluate=lambda m: evaluate_detection(m, val_set, batch_size=eval_batch_size))
    return det, result


# ----------------------------------------------------------------------------------------------
# the divergence study
# ----------------------------------------------------------------------------------------------

def _summary(values: Tensor, n_boot: int, generator: torch.Generator) -> list[float]:
    return list(bootstrap_ci(values, n_boot=n_boot, generator=generator))


@torch.no_grad()
def divergence_study(trunk: nn.Module, pairs: Dataset, *, n_pairs: int | None = None,
                     blocks: Sequence[int] | None = None, cutoff: float = 0.25, kind: str = "ideal",
                     band_split: str = "fft", metric: str = "cosine", window: str | None = None,
                     include_input: bool = False, n_boot: int = 1000, batch_size: int = 8, seed: int = 0,
                     device: torch.device | str | None = None, keep_values: bool = False) -> dict[str, Any]:
    """RGB-vs-IR divergence of one frozen trunk's features, per block and band.

    For the first ``n_pairs`` pairs of ``pairs`` (``(ir, target, rgb)`` items) the trunk runs on
    the RGB frame (reference ``a``) and on the IR frame (``b``); for every tapped block
    :func:`~rskd_tutorial.spectral.band_divergence` gives per-pair low/high divergences, summarised
    by their mean with a bootstrap CI (:func:`~rskd_tutorial.spectral.bootstrap_ci`) and the
    high/low ratio with a paired bootstrap CI (:func:`~rskd_tutorial.spectral.divergence_ratio`);
    the overall ratio is the per-block average (the abstract's "on average across all analysed
    transformer layers"). Pairs are processed batch by batch, so memory does not grow with
    ``n_pairs``.

    Args:
        trunk: a :class:`~rskd_tutorial.models.vit.ViTTrunk` (``blocks`` default: every block) or
            any trunk returning an ``OrderedDict`` of maps (``blocks`` ignored).
        include_input: also report the normalised images themselves as a layer named ``"input"``
            (not part of the overall ratio): what the pixels alone would give.
        keep_values: keep the per-pair values (``values[layer] = {"low": [...], "high": [...]}``).

    Returns:
        a JSON-able dict: ``settings``, ``n_pairs``, ``layers`` (per layer ``name``, ``low`` and
        ``high`` = ``[mean, lo, hi]``, ``ratio`` = ``[estimate, lo, hi]``), ``ratio`` (over blocks)
        and ``seconds``.
    """
    t0 = time.perf_counter()
    device = torch.device(device) if device is not None else next(trunk.parameters()).device
    was_training = trunk.training
    trunk.eval().to(device)
    model = FeatureModel(trunk).to(device)
    n = len(pairs) if n_pairs is None else min(int(n_pairs), len(pairs))
    if n < 2:
        raise ValueError(f"the divergence study needs at least 2 pairs, got {n}")
    loader = DataLoader(Subset(pairs, range(n)), batch_size=batch_size, shuffle=False, collate_fn=collate_pairs)
    kw = dict(cutoff=cutoff, kind=kind, metric=metric, split=band_split, window=window)
    take = None
    if isinstance(trunk, ViTTrunk):
        take = list(range(trunk.depth)) if blocks is None else [b % trunk.depth for b in blocks]
    values: dict[str, dict[str, list[Tensor]]] = {}
    for inputs, _ in loader:
        rgb, ir = (model.normalize(inputs[k].to(device)) for k in ("rgb", "ir"))
        f_rgb = trunk(rgb) if take is None else trunk(rgb, blocks=take)
        f_ir = trunk(ir) if take is None else trunk(ir, blocks=take)
        layers = ([("input", rgb, ir)] if include_input else []) + [(k, f_rgb[k], f_ir[k]) for k in f_rgb]
        for name, a, b in layers:
            d = band_divergence(a.float(), b.float(), **kw)
            slot = values.setdefault(name, {"low": [], "high": []})
            slot["low"].append(d["low"].cpu())
            slot["high"].append(d["high"].cpu())
    trunk.train(was_training)
    g = torch.Generator().manual_seed(seed)
    per_layer, block_divs = [], []
    for name, v in values.items():
        d = {"low": torch.cat(v["low"]), "high": torch.cat(v["high"])}
        row = {"name": name, "low": _summary(d["low"], n_boot, g), "high": _summary(d["high"], n_boot, g),
               "ratio": list(divergence_ratio(d, n_boot=n_boot, generator=g))}
        per_layer.append(row)
        if name != "input":
            block_divs.append(d)
    result: dict[str, Any] = {
        "settings": {**kw, "n_boot": n_boot, "seed": seed, "reference": "rgb", "trunk": getattr(trunk, "arch", type(trunk).__name__)},
        "n_pairs": n, "layers": per_layer,
        "ratio": list(divergence_ratio(block_divs, n_boot=n_boot, generator=g)),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if keep_values:
        result["values"] = {name: {b: torch.cat(v[b]).tolist() for b in ("low", "high")} for name, v in values.items()}
    return result


# ----------------------------------------------------------------------------------------------
# full scale: the `freqkd` recipe and `rskd divergence`
# ----------------------------------------------------------------------------------------------

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
        if (a_dir / FINAL_WEIGHTS).is_file():
            load_weights(stage_a_distiller(student, teacher, loss), a_dir / FINAL_WEIGHTS)
        else:
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


# ----------------------------------------------------------------------------------------------
# tutorial scale
# ----------------------------------------------------------------------------------------------

def tutorial_roots(profile: Any, seed: int = 0) -> tuple[Path, Path]:
    """(training/validation pairs, separate study pairs) of the chapter, written under the cache
    folder (idempotent). The study pairs are scenes neither model trains on (``n_train = 0``)."""
    from rskd_tutorial.data.synthetic import write_scenes

    root = synthetic_root("rgbir", profile, seed=seed, progress=False)
    c = profile.crossmodal
    study = cache_dir() / "data" / f"rgbir-study-{profile.name}-s{seed}"
    write_scenes("rgbir", study, n_train=0, n_val=c.study_pairs, size=c.image_size, seed=seed + 7919, progress=False)
    return root, study


def tutorial_backbone(profile: Any, role: str) -> BackboneSpec:
    """The teacher's or the student's trunk at the profile's scale (tapping the last block)."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    c = profile.crossmodal
    arch = c.teacher_vit if role == "teacher" else c.student_vit
    return BackboneSpec(arch=arch, img_size=(c.image_size, c.image_size), depth=c.vit_depth)


def tutorial_head(profile: Any) -> HeadSpec:
    c = profile.crossmodal
    return HeadSpec(arch="retinanet", out_channels=c.pyramid_channels, anchor_factor=c.anchor_factor)


def tutorial_train_config(profile: Any, stage: str, seed: int = 0, **overrides: Any) -> TrainConfig:
    """AdamW with linear warm-up (at most a quarter of the run) and cosine decay for ``stage`` =
    ``teacher`` (RGB detector), ``distill`` (stage A) or ``finetune`` (stage B)."""
    c = profile.crossmodal
    epochs = {"teacher": c.teacher_epochs, "distill": c.distill_epochs, "finetune": c.finetune_epochs}
    if stage not in epochs:
        raise ValueError(f"stage must be one of {tuple(epochs)}, got {stage!r}")
    steps = epochs[stage] * max(1, c.train_pairs // c.batch_size)
    kwargs: dict[str, Any] = dict(
        epochs=epochs[stage], lr={"teacher": c.lr, "distill": c.distill_lr, "finetune": c.finetune_lr}[stage],
        batch_size=c.batch_size, optimizer="adamw", weight_decay=0.05, schedule="cosine",
        warmup_iters=max(1, min(c.warmup_iters, steps // 4)),
        warmup_factor=0.01, grad_clip=1.0, num_workers=profile.num_workers, seed=seed, eval_every=epochs[stage],
    )
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def tutorial_teacher(profile: Any, seed: int = 0, *, progress: bool = False, verbose: bool = True) -> TutorialRun:
    """The chapter's RGB "foundation model": a ViT detector trained from scratch on the synthetic RGB
    frames (or loaded from the cache), evaluated on the RGB validation frames. Its trunk is
    ``detector_trunk(run.model)``; ``run.extra["key"]`` is its cache key."""
    root, _ = tutorial_roots(profile)
    train_pairs, val_pairs = paired_splits(PairedData(root=str(root)), drop_empty=True)
    train_set, val_set = ModalityView(train_pairs, "rgb"), ModalityView(val_pairs, "rgb")
    spec, head = tutorial_backbone(profile, "teacher"), tutorial_head(profile)
    cfg = tutorial_train_config(profile, "teacher", seed)
    device = profile.device
    torch.manual_seed(seed)
    det = detector_from_trunk(build_trunk(spec), train_set.num_classes, head, spec.img_size).to(device)
    key = run_key("rgbir-vit-teacher", profile=profile.name, seed=seed,
                  config={"spec": asdict(spec), "head": asdict(head), "train": asdict(cfg), "data": data_signature(root)})

    def train(run_dir: Path) -> None:
        fit(det, train_set, cfg, run_dir, collate_fn=_collate_detection(), resume=True, device=device,
            progress=progress, verbose=verbose, keep_checkpoint=False)

    return cached_run(det, key, train, val_set, cfg.batch_size, device, verbose=verbose,
                      extra={"key": key, "spec": spec})


def tutorial_student(profile: Any, teacher: TutorialRun, name: str, loss: LossSpec | None, *, seed: int = 0,
                     init: str = "auto", head: str = "teacher", progress: bool = False,
                     verbose: bool = False) -> TutorialRun:
    """One row of the chapter's table: stage A with ``loss`` (``None``: no distillation, the
    baseline) and stage B on IR, both cached.

    ``init``: ``"teacher"`` starts the student from the teacher's trunk weights (the paper's setting:
    DINOv2 student from DINOv2 weights), ``"scratch"`` from random weights; ``"auto"`` = teacher when
    the profile's student and teacher architectures match. ``head``: ``"teacher"`` starts stage B's
    pyramid and head from the teacher detector's (our tutorial-scale choice: our "foundation model"
    is itself a detector, so stage B starts from a working head instead of learning one from scratch
    in a few CPU epochs), ``"fresh"`` from random weights (the full-scale recipe: DINOv2 has no
    detection head). Stage B is identical for every row either way. Returns the IR detector with its
    IR validation metrics; ``extra`` holds ``trunk`` (the stage-A student), ``stage_a_dir``,
    ``stage_a_seconds`` and ``stage_a_loss`` (the last epoch's mean low/high terms).
    """
    root, _ = tutorial_roots(profile)
    device = profile.device
    t_trunk = detector_trunk(teacher.model)
    t_spec, s_spec = tutorial_backbone(profile, "teacher"), tutorial_backbone(profile, "student")
    if init == "auto":
        init = "teacher" if (t_spec.arch, t_spec.depth) == (s_spec.arch, s_spec.depth) else "scratch"
    if init not in ("teacher", "scratch"):
        raise ValueError(f"init must be 'auto', 'teacher' or 'scratch', got {init!r}")
    if head not in ("teacher", "fresh"):
        raise ValueError(f"head must be 'teacher' or 'fresh', got {head!r}")
    torch.manual_seed(seed)
    student = copy.deepcopy(t_trunk) if init == "teacher" else build_trunk(s_spec)
    for p in student.parameters():
        p.requires_grad_(True)
    student.to(device)
    extra: dict[str, Any] = {"trunk": student, "stage_a_dir": None, "stage_a_seconds": 0.0, "stage_a_loss": {}}
    key_a = "none"
    if loss is not None:
        teacher_trunk = copy.deepcopy(t_trunk).to(device)
        cfg_a = tutorial_train_config(profile, "distill", seed)
        train_pairs, _ = paired_splits(PairedData(root=str(root)))
        distiller = stage_a_distiller(student, teacher_trunk, make_loss(loss, student, teacher_trunk)).to(device)
        key_a = run_key(f"rgbir-freqkd-stageA-{name}", profile=profile.name, seed=seed,
                        config={"teacher": teacher.extra["key"], "init": init, "student": asdict(s_spec),
                                "loss": asdict(loss), "train": asdict(cfg_a)})

        def train_a(run_dir: Path) -> None:
            fit(distiller, train_pairs, cfg_a, run_dir, collate_fn=collate_pairs, resume=True, device=device,
                progress=progress, verbose=verbose, keep_checkpoint=False)

        _, a_dir, _ = train_or_load(distiller, key_a, train_a, verbose=verbose)
        from rskd_tutorial.engine import read_metrics

        last = [r for r in read_metrics(a_dir) if r.get("kind") == "epoch"][-1:]
        extra.update(stage_a_dir=a_dir, stage_a_seconds=run_seconds(a_dir),
                     stage_a_loss={k.split(".")[-1]: v for k, v in (last[0] if last else {}).items()
                                   if k.startswith("kd_freqkd.")})
    train_set, val_set = ir_splits(PairedData(root=str(root)))
    head_spec, cfg_b = tutorial_head(profile), tutorial_train_config(profile, "finetune", seed)
    det = detector_from_trunk(student, train_set.num_classes, head_spec, s_spec.img_size)
    if head == "teacher":
        copy_head(teacher.model, det)
    det.to(device)
    key_b = run_key(f"rgbir-freqkd-stageB-{name}", profile=profile.name, seed=seed,
                    config={"stage_a": key_a, "teacher": teacher.extra["key"], "init": init, "head": head,
                            "head_spec": asdict(head_spec), "train": asdict(cfg_b)})

    def train_b(run_dir: Path) -> None:
        fit(det, train_set, cfg_b, run_dir, collate_fn=_collate_detection(), resume=True, device=device,
            progress=progress, verbose=verbose, params=stage_b_params(det, 1.0, cfg_b.lr), keep_checkpoint=False)

    det, b_dir, loaded = train_or_load(det, key_b, train_b, verbose=verbose)
    det.eval()
    metrics = _evaluate_cached(b_dir, det, val_set, batch_size=cfg_b.batch_size)
    return TutorialRun(det, b_dir, metrics, loaded, run_seconds(b_dir) + extra["stage_a_seconds"], extra=extra)


def tutorial_divergence(profile: Any, trunk: nn.Module, **kwargs: Any) -> dict[str, Any]:
    """:func:`divergence_study` of ``trunk`` on the chapter's study pairs (``profile.crossmodal.study_pairs``)."""
    from rskd_tutorial.data import CocoDetection

    _, study = tutorial_roots(profile)
    pairs = CocoDetection(study, "val", return_paired=True)
    kwargs.setdefault("n_pairs", profile.crossmodal.study_pairs)
    kwargs.setdefault("batch_size", profile.crossmodal.batch_size)
    return divergence_study(trunk, pairs, **kwargs)
