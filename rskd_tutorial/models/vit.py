"""Vision Transformer backbones with block taps, and a ViTDet-style simple feature pyramid so that a
ViT (or a ResNet) can be trained as a torchvision detector.

Three pieces, one idea each:

* :class:`ViTTrunk` -- a timm ``VisionTransformer`` whose call returns the patch tokens of chosen
  blocks as ``OrderedDict("block<i>" -> [B, D, h, w])`` (``i`` is timm's 0-based block index: the
  last block of ViT-B/14 is ``block11``). CLS and register tokens are dropped and the patch tokens
  are reshaped row-major (the order timm's patch embedding flattens them); positional embeddings are
  interpolated for any input size (timm ``dynamic_img_size``). Input: a normalised batch.
* :class:`FeatureModel` -- wraps a trunk for feature distillation (FreqKD's stage A): called as
  ``model(images, targets=None, taps_only=False)`` on images in [0, 1], it normalises them exactly
  as torchvision's detection transform does (ImageNet mean / std) and returns
  ``ModelOutput(taps={"features": trunk(x)})`` with no loss of its own.
* :class:`SimpleFeaturePyramid` -- ViTDet's simple pyramid (Li et al., "Exploring plain vision
  transformer backbones for object detection", ECCV 2022, Fig. 2c) from the last tapped block:
  2x / 4x deconvolutions up, identity, 2x max-pool down, each followed by 1x1 and 3x3 convolutions
  with LayerNorm; plus P6/P7 (RetinaNet) or a max-pooled ``pool`` level (Faster R-CNN). It has
  ``out_channels`` and returns the five maps :func:`~rskd_tutorial.models.detectors.build_detector`
  expects, so :func:`build_vit_detector` is one call.

Weights. Nothing is downloaded. ``weights=`` takes a local file, either of:

* Meta's original checkpoint, ``dinov2_vitb14_pretrain.pth`` (ViT-B/14; ``dinov2_vits14_pretrain.pth``
  for ViT-S/14), linked from the README of ``facebookresearch/dinov2``
  (``https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth``);
* timm's copy, ``model.safetensors`` of the Hugging Face repository ``timm/vit_base_patch14_dinov2.lvd142m``
  (e.g. ``huggingface-cli download timm/vit_base_patch14_dinov2.lvd142m model.safetensors``).

Put the file under ``weights/`` (the full-scale configs expect ``weights/dinov2_vitb14_pretrain.pth``).
timm's own ``checkpoint_filter_fn`` converts the DINOv2 keys and resamples the positional embedding
(trained at 518 px) to the chosen image size; then the weights load strictly. The architecture names
are timm's ``vit_base_patch14_dinov2`` / ``vit_small_patch14_dinov2`` (LayerScale, no registers).

Taught in chapter 4 (``book/04_freqkd_divergence.ipynb``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rskd_tutorial.models.outputs import ModelOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # torchvision's detection transform uses these too
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "FeatureModel", "SimpleFeaturePyramid", "ViTTrunk",
    "build_vit_detector", "create_vit", "load_vit_weights",
]


def tap_name(index: int) -> str:
    """The tap key of block ``index`` (0-based, timm's numbering): ``"block<index>"``."""
    return f"block{index}"


def load_vit_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a local checkpoint into a timm ``VisionTransformer`` strictly, through timm's
    ``checkpoint_filter_fn`` (DINOv2 key conversion, positional-embedding resampling)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ViT weights not found at {path}: nothing is downloaded by this package; fetch the file by hand "
            f"(Meta's dinov2_vitb14_pretrain.pth, or model.safetensors of timm/vit_base_patch14_dinov2.lvd142m; "
            f"see the docstring of rskd_tutorial.models.vit) and pass its path"
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint_filter_fn(dict(state), model)
    head = [k for k in state if k.startswith("head.") and not hasattr(model.head, "weight")]
    for k in head:   # a classifier head in the file, none in the model (num_classes=0)
        state.pop(k)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"{path} does not fit {type(model).__name__}: missing {result.missing_keys[:6]}, "
            f"unexpected {result.unexpected_keys[:6]}"
        )
    return model


def create_vit(arch: str, img_size: int | tuple[int, int], *, weights: str | os.PathLike | None = None,
               drop_path_rate: float = 0.0, **kwargs: Any) -> nn.Module:
    """A timm ViT without classifier head, accepting any input size (``dynamic_img_size``).

    Args:
        arch: timm architecture, e.g. ``vit_tiny_patch16_224`` (chapters), ``vit_small_patch14_dinov2``
            / ``vit_base_patch14_dinov2`` (DINOv2 ViT-S/14, ViT-B/14).
        img_size: the size the positional embedding is built (and resampled) for.
        weights: local checkpoint file (see :func:`load_vit_weights`), or ``None``: random init.
        drop_path_rate: stochastic depth.
        kwargs: passed to ``timm.create_model`` (e.g. ``depth=6`` for a shallower model).
    """
    import timm

    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size, dynamic_img_size=True,
                                  drop_path_rate=drop_path_rate, **kwargs)
    except RuntimeError as e:   # timm's "Unknown model" is a RuntimeError
        raise ValueError(f"unknown timm ViT architecture {arch!r} ({e})") from None
    if weights is not None:
        load_vit_weights(model, weights)
    return model


class ViTTrunk(nn.Module):
    """A timm ViT whose call returns its tapped blocks as ``OrderedDict("block<i>" -> [B, D, h, w])``.

    Args:
        arch, img_size, weights, drop_path_rate: see :func:`create_vit`.
        blocks: 0-based block indices to tap (negative counts from the end); default: the last one.
        norm: apply the ViT's final LayerNorm to every tap (DINOv2's ``get_intermediate_layers(norm=True)``
            convention; the last block's tap is then exactly the model's output features).
        vit_kwargs: more ``timm.create_model`` arguments.

    Attributes: ``vit`` (the timm model), ``blocks`` (non-negative, sorted), ``embed_dim``,
    ``patch_size``, ``names`` (tap keys in order). The input is a normalised batch ``[B, 3, H, W]``;
    ``h = ceil(H / patch)`` (timm pads the border patch when needed).
    """

    def __init__(self, arch: str, img_size: int | tuple[int, int], *, blocks: Sequence[int] | None = None,
                 weights: str | os.PathLike | None = None, norm: bool = True, drop_path_rate: float = 0.0,
                 **vit_kwargs: Any):
        super().__init__()
        vit_kwargs.setdefault("dynamic_img_pad", True)
        self.vit = create_vit(arch, img_size, weights=weights, drop_path_rate=drop_path_rate, **vit_kwargs)
        depth = len(self.vit.blocks)
        chosen = [depth - 1] if blocks is None else [int(b) + depth if int(b) < 0 else int(b) for b in blocks]
        bad = [b for b in chosen if not 0 <= b < depth]
        if bad or not chosen:
            raise ValueError(f"blocks must be indices into the {depth} blocks of {arch}, got {list(blocks or [])}")
        self.blocks = tuple(sorted(set(chosen)))
        self.names = tuple(tap_name(b) for b in self.blocks)
        self.norm = norm
        self.arch = arch
        self.embed_dim = int(self.vit.embed_dim)
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        self.depth = depth

    def forward(self, x: Tensor, blocks: Sequence[int] | None = None) -> OrderedDict[str, Tensor]:
        """Taps of ``self.blocks``, or of ``blocks`` when given (e.g. every block for a divergence study)."""
        take = self.blocks if blocks is None else tuple(sorted({int(b) % self.depth for b in blocks}))
        maps = self.vit.forward_intermediates(x, indices=list(take), norm=self.norm, stop_early=True,
                                              output_fmt="NCHW", intermediates_only=True)
        return OrderedDict(zip((tap_name(b) for b in take), maps))


class FeatureModel(nn.Module):
    """A trunk as a distillation model: images in [0, 1] -> ``ModelOutput(taps={"features": ...})``.

    The images (a batch tensor or a list of equally sized ``[3, H, W]`` tensors) are normalised with
    ``mean``/``std`` (default ImageNet, as torchvision's detection transform does, so the trunk sees
    the same input here and inside a detector). There is no supervised loss (``losses`` is empty):
    FreqKD's stage A trains on the distillation terms only.
    """

    def __init__(self, trunk: nn.Module, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalize(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """``(x - mean) / std`` of a batch (a list is stacked)."""
        x = images if torch.is_tensor(images) else torch.stack(list(images))
        return (x - self.mean) / self.std

    def forward(self, images: Tensor | Sequence[Tensor], targets: Any = None, *, taps_only: bool = False) -> ModelOutput:
        return ModelOutput(taps={"features": self.trunk(self.normalize(images))})


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (per position), as ViTDet's pyramid uses."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _conv_norm(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 1, bias=False), LayerNorm2d(c_out),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), LayerNorm2d(c_out)]


_PYRAMID = {  # strides of the levels built from the trunk map, and the key names torchvision's heads expect
    "retinanet": ((8, 16, 32), ("0", "1", "2", "p6", "p7")),            # + P6, P7: strides 8 ... 128
    "faster_rcnn": ((4, 8, 16, 32), ("0", "1", "2", "3", "pool")),      # + pool: strides 4 ... 64
}


def _pyramid_scales(patch: int, strides: Sequence[int]) -> list[float]:
    """Scale factors from the trunk's stride to each level, as powers of two (ViTDet keeps the patch
    stride's power-of-two family: patch 14 gives levels at 7, 14, 28 ... for nominal 8, 16, 32 ...)."""
    import math

    return [2.0 ** round(math.log2(patch / s)) for s in strides]


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid on one map of a trunk (Li et al. 2022, Fig. 2c).

    From the tapped map ``x`` at stride ``s`` (the patch size) each level is reached by a scale
    factor: 4 = two 2x2 stride-2 deconvolutions (LayerNorm + GELU between), 2 = one deconvolution,
    1 = identity, 1/2 (1/4) = 2x2 (4x4) max-pool; each then 1x1 conv -> LN -> 3x3 conv -> LN to
    ``out_channels``. The factors aim at the nominal strides (8, 16, 32 for RetinaNet): for patch 16
    they are 2, 1, 1/2 (ViTDet), for patch 8 they are 1, 1/2, 1/4.
    RetinaNet adds P6 = 3x3 stride-2 conv of the last level and P7 = the same on ReLU(P6)
    (torchvision's ``LastLevelP6P7``); Faster R-CNN adds ``pool`` = 1x1 max-pool with stride 2
    (``LastLevelMaxPool``).

    Args:
        trunk: a :class:`ViTTrunk` (any module returning an ``OrderedDict`` of maps with an
            ``embed_dim`` attribute).
        out_channels: width of every level (ViTDet: 256).
        arch: ``"retinanet"`` (five levels at strides 8 ... 128 for patch 16 or 8; 7 ... 112 for
            patch 14) or ``"faster_rcnn"`` (strides 4 ... 64).
        source: the tap the pyramid is built from (default: the trunk's last tap).
    """

    def __init__(self, trunk: nn.Module, out_channels: int = 256, arch: str = "retinanet", source: str | None = None):
        super().__init__()
        if arch not in _PYRAMID:
            raise ValueError(f"arch must be one of {tuple(_PYRAMID)}, got {arch!r}")
        self.trunk = trunk
        self.arch = arch
        self.source = source or trunk.names[-1]
        if self.source not in trunk.names:
            raise ValueError(f"source {self.source!r} is not a tap of the trunk ({trunk.names})")
        self.out_channels = out_channels
        dim = trunk.embed_dim
        strides, self.keys = _PYRAMID[arch]
        self.scales = _pyramid_scales(getattr(trunk, "patch_size", 16), strides)
        stages = []
        for scale in self.scales:
            if scale == 4.0:
                ops = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                       nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
                c = dim // 4
            elif scale == 2.0:
                ops, c = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)], dim // 2
            elif scale == 1.0:
                ops, c = [], dim
            elif scale in (0.5, 0.25):
                k = int(1 / scale)
                ops, c = [nn.MaxPool2d(k, stride=k, ceil_mode=True)], dim
            else:
                raise ValueError(f"no pyramid level at scale {scale} of a patch-{trunk.patch_size} trunk")
            stages.append(nn.Sequential(*ops, *_conv_norm(c, out_channels)))
        self.stages = nn.ModuleList(stages)
        if arch == "retinanet":
            self.p6 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
            self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
            for conv in (self.p6, self.p7):
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feat = self.trunk(x)[self.source]
        maps = [stage(feat) for stage in self.stages]
        if self.arch == "retinanet":
            p6 = self.p6(maps[-1])
            maps += [p6, self.p7(F.relu(p6))]
        else:
            maps.append(F.max_pool2d(maps[-1], 1, 2, 0))
        return OrderedDict(zip(self.keys, maps))


def build_vit_detector(arch: str, img_size: int | tuple[int, int], num_classes: int, *,
                       det_arch: str = "retinanet", out_channels: int = 256,
                       weights: str | os.PathLike | None = None, blocks: Sequence[int] | None = None,
                       anchor_factor: float = 1.0, drop_path_rate: float = 0.0,
                       min_size: int | None = None, max_size: int | None = None, **vit_kwargs: Any):
    """A RetinaNet / Faster R-CNN on a ViT trunk + :class:`SimpleFeaturePyramid`.

    Returns a :class:`~rskd_tutorial.models.detectors.Detector`; its trunk is
    ``detector.net.backbone.trunk`` (what FreqKD's stage A distils and stage B fine-tunes). The
    detector's transform resizes the shorter side to ``min_size`` (default: the image size, so
    tutorial scenes are not resized) and normalises with ImageNet statistics.

    Args:
        arch: timm ViT architecture (see :func:`create_vit`).
        img_size: input size of the positional embedding (``int`` or ``(h, w)``).
        num_classes: object classes K (background excluded).
        det_arch: ``"retinanet"`` or ``"faster_rcnn"``.
        out_channels: pyramid width.
        weights: local ViT checkpoint (DINOv2) or ``None``.
        blocks: blocks the trunk taps (the pyramid reads the last one); default: the last block.
        anchor_factor: see :func:`~rskd_tutorial.models.detectors.build_detector`.
    """
    from rskd_tutorial.models.detectors import build_detector

    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    trunk = ViTTrunk(arch, hw, blocks=blocks, weights=weights, drop_path_rate=drop_path_rate, **vit_kwargs)
    backbone = SimpleFeaturePyramid(trunk, out_channels, det_arch)
    return build_detector(det_arch, backbone=backbone, num_classes=num_classes,
                          min_size=min_size or min(hw), max_size=max_size or max(hw), anchor_factor=anchor_factor)
