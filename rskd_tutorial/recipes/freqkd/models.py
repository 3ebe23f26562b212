"""Model surgery of FreqKD: trunks, a detector around a trunk, head copies, the stage-A loss of a trunk pair."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from rskd_tutorial.distill.freqkd import FreqKDLoss
from rskd_tutorial.models.backbones import TimmFPN
from rskd_tutorial.models.detectors import BACKBONES, Detector, build_detector
from rskd_tutorial.models.trunks import ResNetTrunk, TimmTrunk
from rskd_tutorial.models.utils import weights_under
from rskd_tutorial.models.vit import SimpleFeaturePyramid, ViTTrunk
from rskd_tutorial.recipes.freqkd.config import BackboneSpec, HeadSpec, LossSpec


VIT_PREFIXES = ("vit_", "deit")    # timm names built as a ViTTrunk; any other timm name is a CNN trunk


def build_trunk(spec: BackboneSpec) -> nn.Module:
    """A :class:`~rskd_tutorial.models.vit.ViTTrunk` (``vit_*``), a
    :class:`~rskd_tutorial.models.trunks.ResNetTrunk` (torchvision ``resnet*``) or, for any other timm
    name, a :class:`~rskd_tutorial.models.trunks.TimmTrunk` (random init; the tutorial scale's CNN)."""
    if spec.arch in BACKBONES:
        return ResNetTrunk(spec.arch, pretrained_backbone=spec.weights)
    if not spec.arch.startswith(VIT_PREFIXES):
        if spec.weights is not None:
            raise ValueError(f"timm CNN trunk {spec.arch!r} is trained from scratch here; weights apply to ViTs and ResNets")
        return TimmTrunk(spec.arch)
    kwargs: dict[str, Any] = {} if spec.depth is None else {"depth": spec.depth}
    return ViTTrunk(spec.arch, tuple(spec.img_size), blocks=spec.blocks, weights=spec.weights,
                    drop_path_rate=spec.drop_path_rate, **kwargs)


def detector_from_trunk(trunk: nn.Module, num_classes: int, head: HeadSpec,
                        img_size: Sequence[int] = (224, 224)) -> Detector:
    """A detector around (a copy of) ``trunk``: ViT -> simple pyramid + head; ResNet -> the same
    torchvision ResNet-FPN detector the other chapters use (built with the trunk's ImageNet file, if
    any, so the norm layers and frozen stages match), with the trunk's body weights; timm CNN -> the
    tutorial-scale P2-P5 FPN detector of the other chapters with (a copy of) the trunk as its body."""
    hw = tuple(int(v) for v in img_size)
    common = dict(min_size=head.min_size or min(hw), max_size=head.max_size or max(hw), anchor_factor=head.anchor_factor,
                  head_convs=head.head_convs)
    trunk = copy.deepcopy(trunk)
    if isinstance(trunk, TimmTrunk):
        for p in trunk.parameters():
            p.requires_grad_(True)
        backbone = TimmFPN(trunk.arch, head.out_channels, trunk.strides)
        backbone.body = trunk.body
        return build_detector(head.arch, backbone=backbone, num_classes=num_classes, **common)
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
    """The trunk inside a detector built by :func:`detector_from_trunk` (or ``build_vit_detector``); for a
    timm FPN detector a :class:`~rskd_tutorial.models.trunks.TimmTrunk` view sharing its body's parameters."""
    backbone = det.net.backbone
    if hasattr(backbone, "trunk"):
        return backbone.trunk
    if isinstance(backbone, TimmFPN):
        return TimmTrunk(backbone.name, backbone.strides, body=backbone.body)
    return backbone.body


def _trunk_prefix(det: Detector) -> str:
    return "net.backbone.trunk." if hasattr(det.net.backbone, "trunk") else "net.backbone.body."


def copy_head(source: Detector, target: Detector) -> Detector:
    """Copy every weight of ``source`` but its trunk (pyramid, head) into ``target`` (same
    architecture), strictly: a key missing on either side is an error."""
    def head(det: Detector) -> dict[str, Tensor]:
        prefix = _trunk_prefix(det)
        return {k: v for k, v in det.state_dict().items() if not k.startswith(prefix)}

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
                      low_weight=spec.low_weight, log_mse=spec.log_mse, l2_normalize=spec.l2_normalize,
                      split=spec.split, kind=spec.kind)


def student_trunk_state(source: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The student trunk's weights from a stage-A checkpoint (``final.pt`` of a Distiller run)."""
    return weights_under(source, "student.trunk.", required=True)
