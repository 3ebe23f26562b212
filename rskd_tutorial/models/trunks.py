"""CNN trunks: convolutional bodies tapped like a ViT trunk (``OrderedDict`` of named maps, ``names``,
``embed_dim``), so that :class:`~rskd_tutorial.models.vit.FeatureModel` and FreqKD's stage A take either.

* :class:`ResNetTrunk` -- a torchvision ResNet tapped at C5 (the full-scale cross-architecture row).
* :class:`TimmTrunk` -- a small timm ``features_only`` CNN tapped at every pyramid stride (C2-C5): the
  body of the tutorial-scale detectors (:class:`~rskd_tutorial.models.backbones.TimmFPN`), so a trunk
  moves into and out of a detector without copying weights by name.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict

from collections.abc import Sequence

from torch import Tensor, nn

from rskd_tutorial.models.backbones import TUTORIAL_STRIDES, timm_features

__all__ = ["ResNetTrunk", "TimmTrunk"]


class ResNetTrunk(nn.Module):
    """A torchvision ResNet body tapped at C5 (``OrderedDict("c5" -> [B, 2048, H/32, W/32])``), for
    FreqKD's cross-architecture row (a ResNet-50 student of a ViT teacher; the abstract reports
    +1.0 mAP50).

    ``body`` is built exactly as :func:`~rskd_tutorial.models.detectors.resnet_fpn` builds a
    RetinaNet's body (with ImageNet weights from a local file: FrozenBatchNorm, stem and layer1
    frozen, as mmdet does), so its weights move into a detector built with the same
    ``pretrained_backbone`` by ``detector.net.backbone.body.load_state_dict(trunk.body.state_dict())``.
    """

    def __init__(self, backbone: str = "resnet50", *, pretrained_backbone: str | os.PathLike | None = None):
        super().__init__()
        from rskd_tutorial.models.detectors import resnet_fpn

        self.body = resnet_fpn(backbone, returned_layers=(2, 3, 4), out_channels=8, extra="p6p7",
                               pretrained_backbone=pretrained_backbone).body
        self.arch = backbone
        self.pretrained_backbone = pretrained_backbone
        self.names = ("c5",)
        self.embed_dim = 512 if backbone in ("resnet18", "resnet34") else 2048

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(c5=list(self.body(x).values())[-1])


class TimmTrunk(nn.Module):
    """A timm ``features_only`` CNN tapped at ``strides``: ``OrderedDict("c2" -> [B, C2, H/4, W/4], ...)``.

    The tap of stride ``2**k`` is named ``ck`` (C2-C5 for the tutorial strides 4-32). ``body`` is the
    timm network itself, built as :class:`~rskd_tutorial.models.backbones.TimmFPN` builds it, so
    ``TimmTrunk(arch, body=detector.net.backbone.body)`` views a detector's trunk (sharing its
    parameters) and a trained trunk's ``body`` can be put into a new detector. ``channels`` holds the
    width of each tap; ``embed_dim`` the last one's (FreqKD learns a 1x1 projection only where the
    student's and the teacher's widths differ).

    Args:
        arch: timm architecture (``regnetx_002`` at the tutorial scale).
        strides: output strides of the taps (each one of the network's reductions).
        body: an existing ``features_only`` network of ``arch`` with these strides (default: a new one, random init).
    """

    def __init__(self, arch: str, strides: Sequence[int] = TUTORIAL_STRIDES, *, body: nn.Module | None = None):
        super().__init__()
        self.body = body if body is not None else timm_features(arch, strides)
        self.arch = arch
        self.strides = tuple(int(s) for s in strides)
        self.names = tuple(f"c{int(math.log2(s))}" for s in self.strides)
        self.channels = tuple(int(c) for c in self.body.feature_info.channels())
        if len(self.channels) != len(self.names):
            raise ValueError(f"body {arch!r} returns {len(self.channels)} maps for strides {self.strides}")
        self.embed_dim = self.channels[-1]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(zip(self.names, self.body(x)))
