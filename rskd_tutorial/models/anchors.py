"""How well a detector's anchors cover a dataset's boxes: the geometry behind small-object recall.

An anchor-based detector can only learn a box from the anchors its matcher assigns to it. With
the papers' rule (IoU >= 0.5 positive, plus each box's best anchor as a "low-quality" match) a box
whose best anchor overlaps it by IoU 0.3 still trains, but from one poorly placed anchor, and the
head must regress most of the offset. Small remote-sensing objects on a coarse grid (RetinaNet's
P3 has stride 8; Faster R-CNN's RPN starts at P2, stride 4) are where this bites: a 9 px vehicle
whose centre falls between two grid points overlaps no 9-11 px anchor by more than about 0.4.
:func:`anchor_coverage` measures it on real boxes, after the detector's own resize (chapter 0,
"Why RetinaNet lags at this scale").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from rskd_tutorial.models.detectors import Detector

__all__ = ["anchor_coverage"]


def _anchor_generator(detector: Detector) -> Any:
    net = detector.net
    return net.anchor_generator if detector.arch == "retinanet" else net.rpn.anchor_generator


@torch.no_grad()
def anchor_coverage(detector: Detector, dataset: Any, *, iou_threshold: float = 0.5,
                    max_images: int | None = None) -> dict[str, np.ndarray]:
    """Per ground-truth box: its best IoU with any anchor and how many anchors reach ``iou_threshold``.

    Boxes are first resized by the detector's own transform (``min_size``/``max_size``), so the
    numbers are those its matcher sees. No network is run: anchors depend on the image size and
    the levels' strides only.

    Args:
        detector: a :class:`~rskd_tutorial.models.detectors.Detector` (RetinaNet anchors, or Faster
            R-CNN's RPN anchors).
        dataset: yields ``(image [3, H, W], target with "boxes" xyxy)``; ``iscrowd`` boxes are skipped.
        iou_threshold: the matcher's positive threshold (RetinaNet and RPN: 0.5 in torchvision; mmdet's
            RPN uses 0.7).
        max_images: look at the first ``max_images`` only (``None``: all).

    Returns:
        ``{"best_iou", "positives", "size"}``, one entry per box: best IoU with any anchor, number of
        anchors at IoU >= ``iou_threshold``, and the box's side ``sqrt(w h)`` in the detector's input
        pixels (COCO's small/medium limits are 32 and 96).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    generator = _anchor_generator(detector)
    transform = detector.net.transform
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    best, positives, size = [], [], []
    for i in range(n):
        image, target = dataset[i]
        boxes = target["boxes"]
        if "iscrowd" in target:
            boxes = boxes[target["iscrowd"] == 0]
        if len(boxes) == 0:
            continue
        image_list, resized = transform([image], [{"boxes": boxes, "labels": torch.zeros(len(boxes), dtype=torch.int64)}])
        h, w = image_list.tensors.shape[-2:]
        # empty maps with each level's shape: the generator reads only their sizes
        maps = [image_list.tensors.new_empty(1, 0, math.ceil(h / s), math.ceil(w / s)) for s in detector.strides]
        anchors = generator(image_list, maps)[0]
        gt = resized[0]["boxes"]
        iou = box_iou(gt, anchors)
        best.append(iou.max(1).values)
        positives.append((iou >= iou_threshold).sum(1))
        size.append(((gt[:, 2] - gt[:, 0]).clamp(min=0) * (gt[:, 3] - gt[:, 1]).clamp(min=0)).sqrt())
    if not best:
        raise ValueError("the dataset holds no (non-crowd) boxes in the images looked at")
    return {"best_iou": torch.cat(best).numpy(), "positives": torch.cat(positives).numpy(),
            "size": torch.cat(size).numpy()}
