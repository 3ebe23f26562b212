"""Detectors with feature taps: torchvision RetinaNet and Faster R-CNN, driven so that one call gives
the detector's own losses (training) or detections (eval) *and* everything a distillation loss needs.

``build_detector(arch, backbone, num_classes, ...)`` returns a :class:`Detector`. Its call
``det(images, targets)`` returns a :class:`~rskd_tutorial.models.outputs.ModelOutput` whose ``taps``
hold, for both architectures:

* ``features``   -- ``OrderedDict`` level name -> FPN map ``[B, C, H_l, W_l]`` (``p2..p6`` for
  Faster R-CNN, ``p3..p7`` for RetinaNet, as in the papers' MMDetection configs);
* ``image_sizes`` -- per image (h, w) after the detector's resize, before padding;
* ``batch_hw``   -- the padded batch size (h, w): boxes map onto a feature grid by this size;
* ``targets``    -- the targets after the resize (boxes in resized-image pixels), training only;

and for RetinaNet ``cls_logits`` ``[B, sum_l H_l W_l A, K]``, ``bbox_regression`` ``[B, ..., 4]``,
``anchors`` (per image ``[sum_l H_l W_l A, 4]``) and ``anchors_per_level``; for Faster R-CNN
``objectness`` (per level ``[B, A, H_l, W_l]``), ``rpn_deltas`` (per level ``[B, 4A, H_l, W_l]``) and
``proposals`` (per image ``[n, 4]``, no gradient). Heads, box coders, anchor generators and the
RoI sampler are reached through ``det.net`` (the torchvision model) so that a loss can run a frozen
teacher head on student features (DS2D2) or a student head on teacher features (DIPKD) without
running any model twice.

``taps_only=True`` stops after the FPN: a frozen teacher whose head outputs are not needed costs
one backbone pass and nothing else.

Anchors and box coding run in float32 under autocast (:class:`Float32AnchorGenerator`,
:class:`Float32BoxCoder`): torchvision generates anchors in the features' dtype, and bf16's 8-bit
mantissa moves anchor corners by up to 2 px at 512 px (fp32 results are unchanged, bit for bit).

Differences from the papers' MMDetection models, all documented in chapter 0: torchvision's RetinaNet
classification head is used with exactly K sigmoid outputs (the wrapper shifts labels by one, as
mmdet does); P6 of RetinaNet is computed from C5 ("on_input", as the papers' configs); BatchNorm is
trainable when training from scratch and frozen (FrozenBatchNorm2d + stem and layer1 frozen, mmdet's
``frozen_stages=1, norm_eval=True``) when ImageNet weights are given.

Taught in chapter 0 (``book/00_distilling_a_detector.ipynb``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import models as tv_models
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from rskd_tutorial.models.backbones import TUTORIAL_STRIDES, TimmFPN, is_timm_backbone
from rskd_tutorial.models.outputs import ModelOutput
from rskd_tutorial.models.pretrained import mismatch_message, missing_weights_message
from rskd_tutorial.models.utils import CheckpointError, read_checkpoint

ARCHS = ("retinanet", "faster_rcnn")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
_LEVELS = {"faster_rcnn": ("p2", "p3", "p4", "p5", "p6"), "retinanet": ("p3", "p4", "p5", "p6", "p7")}
_STRIDES = {"faster_rcnn": (4, 8, 16, 32, 64), "retinanet": (8, 16, 32, 64, 128)}
# anchor size at each level = scale * stride: mmdet's octave_base_scale=4 (RetinaNet), scales=[8] (RPN)
_PAPER_ANCHOR_SCALE = {"faster_rcnn": 8.0, "retinanet": 4.0}


_HALF = (torch.float16, torch.bfloat16)
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """float16 / bfloat16 -> float32; any other dtype as it is (fp32 and fp64 results stay bit-identical)."""
    return torch.float32 if dtype in _HALF else dtype


class Float32AnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` computing in float32 whatever the features' dtype.

    torchvision builds the anchors in the dtype of the first feature map (and keeps its cell anchors
    converted to it), so under bf16 autocast anchor corners are rounded to bf16's 8-bit mantissa: up
    to 2 px at 512 px. The generator reads only the maps' sizes, dtype and device, so it is handed
    empty float32 stand-ins (features of fp32 or fp64 pass through as they are), with autocast off.
    """

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        dtype, device = _at_least_float32(feature_maps[0].dtype), feature_maps[0].device
        if feature_maps[0].dtype != dtype:
            feature_maps = [torch.empty((0, *f.shape[-2:]), dtype=dtype, device=device) for f in feature_maps]
        with _no_autocast(device):
            return super().forward(image_list, feature_maps)


class Float32BoxCoder(BoxCoder):
    """torchvision's ``BoxCoder`` encoding and decoding in float32 when given fp16 / bf16 tensors.

    torchvision decodes in the dtype of the regression output (a bf16 head under autocast gives bf16
    proposals and detections); here half-precision inputs are promoted to float32 first. fp32 inputs
    take torchvision's own path unchanged.
    """

    @classmethod
    def like(cls, coder: BoxCoder) -> Float32BoxCoder:
        """The float32 coder with ``coder``'s weights and clip."""
        return cls(coder.weights, coder.bbox_xform_clip)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        reference_boxes = reference_boxes.to(_at_least_float32(reference_boxes.dtype))
        return super().encode_single(reference_boxes, proposals.to(_at_least_float32(proposals.dtype)))

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        return super().decode_single(rel_codes.to(_at_least_float32(rel_codes.dtype)), boxes)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``device`` (a no-op on devices without autocast, e.g. ``meta``)."""
    if device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _float32_box_coding(net: nn.Module) -> None:
    """Swap every torchvision ``BoxCoder`` inside ``net`` (RetinaNet and its regression head; Faster
    R-CNN's RPN and RoI heads) for a :class:`Float32BoxCoder` with the same weights."""
    for module in net.modules():
        coder = getattr(module, "box_coder", None)
        if isinstance(coder, BoxCoder) and not isinstance(coder, Float32BoxCoder):
            module.box_coder = Float32BoxCoder.like(coder)


def resnet_fpn(backbone: str, *, returned_layers: Sequence[int], out_channels: int, extra: str,
               pretrained_backbone: str | os.PathLike | None = None) -> BackboneWithFPN:
    """ResNet body + FPN (torchvision modules), optionally loading ImageNet weights from a local file."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    norm = FrozenBatchNorm2d if pretrained_backbone else nn.BatchNorm2d
    body = getattr(tv_models, backbone)(weights=None, norm_layer=norm)
    if pretrained_backbone:
        path = os.fspath(pretrained_backbone)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ImageNet {missing_weights_message(backbone, path)}")
        state = read_checkpoint(path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = body.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise CheckpointError(mismatch_message(backbone, path, missing, unexpected))
        # mmdet frozen_stages=1: the stem and layer1 do not train on top of ImageNet weights
        for name, p in body.named_parameters():
            if name.startswith(("conv1", "bn1", "layer1")):
                p.requires_grad_(False)
    width = 64 if backbone in ("resnet18", "resnet34") else 256   # channels of layer1's output
    in_channels = [width * 2 ** (i - 1) for i in returned_layers]
    if extra == "maxpool":
        extra_block = LastLevelMaxPool()
    else:  # P6 from C5, P7 from P6 (mmdet add_extra_convs='on_input')
        extra_block = LastLevelP6P7(in_channels[-1], out_channels)
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned_layers)}
    return BackboneWithFPN(body, return_layers=return_layers, in_channels_list=in_channels,
                           out_channels=out_channels, extra_blocks=extra_block)


class Detector(nn.Module):
    """A torchvision detector whose call returns losses / detections together with its taps.

    Args:
        net: a torchvision ``RetinaNet`` or ``FasterRCNN``.
        arch: ``"retinanet"`` or ``"faster_rcnn"``.
        num_classes: object classes K (labels 1..K in targets and detections).
        feature_transform: applied to every FPN level before the heads (DS2D2's high-frequency
            amplifier passes ``spectral.high_frequency_map``); the taps hold the transformed maps.
    """

    def __init__(self, net: nn.Module, arch: str, num_classes: int,
                 feature_transform: Callable[[Tensor], Tensor] | None = None,
                 strides: Sequence[int] | None = None):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.net = net
        self.arch = arch
        self.num_classes = num_classes
        self.feature_transform = feature_transform
        self.strides = tuple(strides) if strides is not None else _STRIDES[arch]
        self.levels = tuple(f"p{int(math.log2(s))}" for s in self.strides)
        self._rpn_head_out: tuple[list[Tensor], list[Tensor]] | None = None
        if arch == "faster_rcnn":
            net.rpn.head.register_forward_hook(self._keep_rpn_head_output)

    def _keep_rpn_head_output(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self._rpn_head_out = output

    @property
    def label_offset(self) -> int:
        """torchvision's RetinaNet head has no background column: labels go in as 0..K-1."""
        return 1 if self.arch == "retinanet" else 0

    def backbone_features(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """FPN features of a padded, normalised batch, keyed as the torchvision heads expect."""
        feats = self.net.backbone(images)
        if self.feature_transform is not None:
            feats = OrderedDict((k, self.feature_transform(v)) for k, v in feats.items())
        return feats

    def forward(self, images: Sequence[Tensor] | Tensor, targets: Sequence[dict] | None = None, *,
                taps_only: bool = False) -> ModelOutput:
        """Run the detector once.

        Args:
            images: list of ``[3, H, W]`` tensors in [0, 1] (or a batch tensor).
            targets: per image ``{"boxes": [n, 4] xyxy, "labels": [n] in 1..K}``; needed in training.
            taps_only: stop after the FPN (``predictions`` is ``None``, ``losses`` empty).
        """
        images = list(images.unbind(0)) if torch.is_tensor(images) else list(images)
        if self.training and targets is None and not taps_only:
            raise ValueError("Detector in training mode needs targets (or taps_only=True)")
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        if targets is not None:
            targets = [self._prepare_target(t) for t in targets]
        image_list, targets_t = self.net.transform(images, targets)
        feats = self.backbone_features(image_list.tensors)
        taps: dict[str, Any] = {
            "features": OrderedDict(zip(self.levels, feats.values())),
            "image_sizes": [tuple(s) for s in image_list.image_sizes],
            "batch_hw": tuple(image_list.tensors.shape[-2:]),
            "targets": targets_t,
        }
        if taps_only:
            return ModelOutput(taps=taps)
        if self.arch == "retinanet":
            return self._retinanet(image_list, feats, targets_t, original_sizes, taps)
        return self._faster_rcnn(image_list, feats, targets_t, original_sizes, taps)

    def _prepare_target(self, target: dict) -> dict:
        boxes = target["boxes"]
        keep = target["iscrowd"] == 0 if "iscrowd" in target else None  # crowd/difficult boxes are ignored
        out = {"boxes": boxes if keep is None else boxes[keep],
               "labels": (target["labels"] if keep is None else target["labels"][keep]) - self.label_offset}
        return out

    def _retinanet(self, image_list: Any, feats: OrderedDict, targets: list | None,
                   original_sizes: list, taps: dict) -> ModelOutput:
        net: RetinaNet = self.net
        feat_list = list(feats.values())
        head = net.head(feat_list)
        anchors = net.anchor_generator(image_list, feat_list)
        a = net.anchor_generator.num_anchors_per_location()[0]
        per_level = [f.shape[-2] * f.shape[-1] * a for f in feat_list]
        taps.update(cls_logits=head["cls_logits"], bbox_regression=head["bbox_regression"],
                    anchors=anchors, anchors_per_level=per_level)
        if self.training:
            losses = net.compute_loss(targets, head, anchors)
            return ModelOutput(losses={"loss_cls": losses["classification"], "loss_box": losses["bbox_regression"]},
                               taps=taps)
        split_head = {k: list(v.split(per_level, dim=1)) for k, v in head.items()}
        split_anchors = [list(x.split(per_level)) for x in anchors]
        dets = net.postprocess_detections(split_head, split_anchors, image_list.image_sizes)
        dets = net.transform.postprocess(dets, image_list.image_sizes, original_sizes)
        for d in dets:
            d["labels"] = d["labels"] + self.label_offset
        return ModelOutput(taps=taps, predictions=dets)

    def _faster_rcnn(self, image_list: Any, feats: OrderedDict, targets: list | None,
                     original_sizes: list, taps: dict) -> ModelOutput:
        net: FasterRCNN = self.net
        self._rpn_head_out = None
        proposals, rpn_losses = net.rpn(image_list, feats, targets)
        objectness, deltas = self._rpn_head_out
        self._rpn_head_out = None
        taps.update(objectness=objectness, rpn_deltas=deltas, proposals=[p.detach() for p in proposals])
        dets, roi_losses = net.roi_heads(feats, proposals, image_list.image_sizes, targets)
        if self.training:
            return ModelOutput(losses={
                "loss_rpn_cls": rpn_losses["loss_objectness"], "loss_rpn_box": rpn_losses["loss_rpn_box_reg"],
                "loss_cls": roi_losses["loss_classifier"], "loss_box": roi_losses["loss_box_reg"],
            }, taps=taps)
        dets = net.transform.postprocess(dets, image_list.image_sizes, original_sizes)
        return ModelOutput(taps=taps, predictions=dets)


def build_detector(arch: str, backbone: str | nn.Module, num_classes: int, *, min_size: int = 800, max_size: int = 1333,
                   fpn_channels: int = 256, anchor_factor: float = 1.0, box_head_dim: int = 1024,
                   pretrained_backbone: str | os.PathLike | None = None, rois_per_image: int = 512,
                   rpn_proposals: int = 1000, feature_transform: Callable[[Tensor], Tensor] | None = None,
                   head_convs: int | None = None) -> Detector:
    """Build a RetinaNet or Faster R-CNN on a ResNet-FPN backbone, as the papers configure them.

    Args:
        arch: ``"retinanet"`` (FPN P3-P7, 9 anchors a location, focal loss) or ``"faster_rcnn"``
            (FPN P2-P6, RPN with 3 anchors a location, RoIAlign 7x7, two-FC 1024 box head).
        backbone: ``resnet18`` | ``resnet34`` | ``resnet50`` | ``resnet101`` (the papers' FPNs), any other
            name is a timm ``features_only`` network on a P2-P5 pyramid (the tutorial scale, see
            :mod:`rskd_tutorial.models.backbones`), or a module returning an ``OrderedDict`` of maps with
            ``out_channels`` channels at the architecture's strides (or at its ``strides`` attribute;
            e.g. a ViT with a simple feature pyramid, ``models.vit``).
        num_classes: object classes K, background excluded.
        min_size, max_size: the resize of torchvision's transform (DIOR: 800, 800; DOTA: 1024, 1024).
        fpn_channels: FPN width (papers: 256; the ``ci``/``cpu`` profiles use less).
        anchor_factor: multiplies the papers' anchor sizes (1.0 = paper: RetinaNet 4 x stride with 3
            octave scales, RPN 8 x stride); tutorial scenes are smaller than DIOR's 800 px.
        box_head_dim: width of Faster R-CNN's two FC layers (paper: 1024).
        rois_per_image: proposals sampled per image for Faster R-CNN's box head in training (paper: 512;
            small tutorial scenes with a handful of objects need far fewer, and RoIAlign's backward
            dominates a CPU step).
        rpn_proposals: proposals kept after the RPN's NMS per image (paper: 1000; twice as many before it
            in training).
        pretrained_backbone: path of a torchvision ImageNet checkpoint for the ResNet, or ``None``
            (train from scratch; nothing is ever downloaded).
        feature_transform: applied to every FPN level before the heads (DS2D2's amplifier).
        head_convs: ``None`` keeps torchvision's heads (RetinaNet: four 3x3 convs a branch, no norm);
            ``n`` gives RetinaNet ``n`` 3x3 conv + GroupNorm + ReLU layers a branch (the light heads of the
            tutorial scale; torchvision's v2 head, shortened).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    scale = _PAPER_ANCHOR_SCALE[arch] * anchor_factor
    strides = _STRIDES[arch]
    common = dict(min_size=min_size, max_size=max_size)
    if isinstance(backbone, str) and is_timm_backbone(backbone):
        if pretrained_backbone:
            raise ValueError(f"timm backbone {backbone!r} is trained from scratch here; pretrained_backbone applies "
                             "to the torchvision ResNets only")
        backbone = TimmFPN(backbone, fpn_channels, TUTORIAL_STRIDES)
    custom = isinstance(backbone, nn.Module)
    strides = tuple(getattr(backbone, "strides", strides)) if custom else strides
    if custom and not hasattr(backbone, "out_channels"):
        raise ValueError("a custom backbone module needs an out_channels attribute (the width of its maps)")
    if custom:
        fpn_channels = backbone.out_channels
    if arch == "retinanet":
        body = backbone if custom else resnet_fpn(backbone, returned_layers=(2, 3, 4), out_channels=fpn_channels,
                                                  extra="p6p7", pretrained_backbone=pretrained_backbone)
        sizes = tuple(tuple(scale * s * 2 ** (i / 3) for i in range(3)) for s in strides)
        anchors = Float32AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        head = None
        if head_convs is not None:
            head = light_retinanet_head(fpn_channels, anchors.num_anchors_per_location()[0], num_classes, head_convs)
        net = RetinaNet(body, num_classes=num_classes, anchor_generator=anchors, head=head, score_thresh=0.05,
                        nms_thresh=0.5, detections_per_img=100, topk_candidates=1000, **common)
    else:
        body = backbone if custom else resnet_fpn(backbone, returned_layers=(1, 2, 3, 4), out_channels=fpn_channels,
                                                  extra="maxpool", pretrained_backbone=pretrained_backbone)
        sizes = tuple((scale * s,) for s in strides)
        anchors = Float32AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

        net = FasterRCNN(
            body, num_classes=None, rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=2 * rpn_proposals, rpn_post_nms_top_n_train=rpn_proposals,
            rpn_pre_nms_top_n_test=rpn_proposals, rpn_post_nms_top_n_test=rpn_proposals,
            box_batch_size_per_image=rois_per_image,
            box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
            box_predictor=FastRCNNPredictor(box_head_dim, num_classes + 1),
            box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100, **common,
        )
    _float32_box_coding(net)
    return Detector(net, arch, num_classes, feature_transform=feature_transform, strides=strides)


def light_retinanet_head(channels: int, num_anchors: int, num_classes: int, convs: int) -> nn.Module:
    """torchvision's GroupNorm RetinaNet head (v2) with ``convs`` instead of four conv layers a branch."""
    from functools import partial

    from torchvision.models.detection.retinanet import RetinaNetHead

    if convs < 0:
        raise ValueError(f"head_convs must be >= 0, got {convs}")
    groups = math.gcd(16, channels)
    head = RetinaNetHead(channels, num_anchors, num_classes, norm_layer=partial(nn.GroupNorm, groups))
    head.classification_head.conv = head.classification_head.conv[:convs]
    head.regression_head.conv = head.regression_head.conv[:convs]
    return head


def dense_level_maps(flat: Tensor, taps: dict) -> list[Tensor]:
    """Undo RetinaNet's flattening: ``[B, sum_l H_l W_l A, K]`` -> per level ``[B, A, K, H_l, W_l]``."""
    feats = list(taps["features"].values())
    per_level = taps["anchors_per_level"]
    out = []
    for f, chunk in zip(feats, flat.split(per_level, dim=1)):
        b, h, w = f.shape[0], f.shape[-2], f.shape[-1]
        a = chunk.shape[1] // (h * w)
        out.append(chunk.view(b, h, w, a, -1).permute(0, 3, 4, 1, 2))
    return out
