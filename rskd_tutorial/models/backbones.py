"""Small timm backbones with an FPN: the tutorial-scale trunks of the detection chapters.

The papers' detectors are ResNet-50/101 FPNs at 800 px; on two CPU cores such a model gets a few
hundred optimizer steps in a chapter's budget and does not learn from scratch. The tutorial scale
uses a timm ``features_only`` network instead (``regnetx_002``: 2.3 M parameters, 0.56 s for a
forward + backward of 8 images at 192 px on one CPU thread, against 2.1 s for ResNet-18) and a
pyramid that starts at stride 4 (P2), because the synthetic DIOR-like vehicles are about 6 px wide
at 192 px and a stride-8 grid misses almost half of them.

:class:`TimmFPN` returns ``OrderedDict("0" -> P2, "1" -> P3, ...)`` with ``out_channels`` channels,
the form torchvision's RetinaNet / Faster R-CNN heads take. Taught in chapter 0.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

__all__ = ["TUTORIAL_STRIDES", "TimmFPN", "is_timm_backbone", "timm_features"]

TUTORIAL_STRIDES: tuple[int, ...] = (4, 8, 16, 32)   # P2-P5
_TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def is_timm_backbone(name: str) -> bool:
    """True for a backbone name the tutorial scale builds with timm (anything but torchvision's ResNets)."""
    return name not in _TORCHVISION_RESNETS


def timm_features(name: str, strides: Sequence[int]) -> nn.Module:
    """timm ``name`` as a ``features_only`` network returning one map per entry of ``strides`` (random init);
    a clear error when timm does not know ``name`` or the network has no map at one of the strides."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"backbone must be one of {_TORCHVISION_RESNETS} or a timm model name, got {name!r}")
    reductions = list(timm.create_model(name, pretrained=False, features_only=True).feature_info.reduction())
    missing = [s for s in strides if s not in reductions]
    if missing:
        raise ValueError(f"timm model {name!r} has feature strides {reductions}; cannot tap {missing}")
    return timm.create_model(name, pretrained=False, features_only=True,
                             out_indices=tuple(reductions.index(s) for s in strides))


class TimmFPN(nn.Module):
    """A timm ``features_only`` network + torchvision FPN with levels at ``strides`` (random init).

    Args:
        name: timm architecture (e.g. ``regnetx_002``, ``mobilenetv3_small_100``).
        out_channels: FPN width of every level.
        strides: output strides of the pyramid levels; each must be one of the network's reductions.
    """

    def __init__(self, name: str, out_channels: int = 64, strides: Sequence[int] = TUTORIAL_STRIDES):
        super().__init__()
        self.body = timm_features(name, strides)
        self.fpn = FeaturePyramidNetwork(list(self.body.feature_info.channels()), out_channels)
        self.name = name
        self.strides = tuple(int(s) for s in strides)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.body(x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))
