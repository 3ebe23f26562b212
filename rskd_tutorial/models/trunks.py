"""CNN trunks: convolutional bodies tapped like a ViT trunk (``OrderedDict`` of named maps, ``names``,
``embed_dim``), so that :class:`~rskd_tutorial.models.vit.FeatureModel` and FreqKD's stage A take either."""

from __future__ import annotations

import os
from collections import OrderedDict

from torch import Tensor, nn

__all__ = ["ResNetTrunk"]


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
