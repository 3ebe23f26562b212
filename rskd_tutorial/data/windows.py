"""DOTA-style sliding-window helpers: cut a large image into overlapping windows, merge detections.

DOTA images are up to ~4000 px wide; the standard protocol trains and tests on 1024 x 1024 windows
with 200 px overlap (stride 824). Windows start at 0 and step by the stride; the last window in each
direction is moved back so that it ends flush with the image border (no padding needed). An image
side shorter than the window gives a single, shorter window.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

__all__ = ["window_starts", "sliding_windows", "merge_window_detections"]


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Start offsets along one axis (last window flush with the border)."""
    if window <= overlap:
        raise ValueError(f"window ({window}) must be larger than overlap ({overlap})")
    if length <= window:
        return [0]
    stride = window - overlap
    starts = []
    s = 0
    while s + window < length:
        starts.append(s)
        s += stride
    starts.append(length - window)
    return starts


def sliding_windows(image_hw: tuple[int, int], window: int = 1024, overlap: int = 200
                    ) -> list[tuple[int, int, int, int]]:
    """Windows ``(x0, y0, x1, y1)`` covering an image of size ``(H, W)``, row by row.

    >>> sliding_windows((1500, 1500))
    [(0, 0, 1024, 1024), (476, 0, 1500, 1024), (0, 476, 1024, 1500), (476, 476, 1500, 1500)]
    """
    H, W = int(image_hw[0]), int(image_hw[1])
    out = []
    for y0 in window_starts(H, window, overlap):
        for x0 in window_starts(W, window, overlap):
            out.append((x0, y0, min(x0 + window, W), min(y0 + window, H)))
    return out


def merge_window_detections(
    dets_per_window: Sequence[dict[str, Tensor]],
    windows: Sequence[Sequence[int]],
    iou_threshold: float = 0.5,
) -> dict[str, Tensor]:
    """Merge per-window detections into full-image detections.

    ``dets_per_window[i]`` holds ``boxes`` (xyxy in window ``i``'s pixels), ``scores`` and ``labels``;
    boxes are shifted by the window offset, then duplicates from overlapping windows are removed by
    NMS per class (``batched_nms``). Returns one dict with the same keys, sorted by score.
    """
    if len(dets_per_window) != len(windows):
        raise ValueError(f"{len(dets_per_window)} detection sets for {len(windows)} windows")
    boxes, scores, labels = [], [], []
    for det, win in zip(dets_per_window, windows):
        b = det["boxes"]
        if b.numel() == 0:
            continue
        off = torch.tensor([win[0], win[1], win[0], win[1]], dtype=b.dtype, device=b.device)
        boxes.append(b + off)
        scores.append(det["scores"])
        labels.append(det["labels"])
    if not boxes:
        ref = dets_per_window[0]["boxes"] if dets_per_window else torch.zeros(0, 4)
        return {"boxes": ref.new_zeros((0, 4)), "scores": ref.new_zeros((0,)),
                "labels": torch.zeros((0,), dtype=torch.int64, device=ref.device)}
    B, S, L = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(B.float(), S.float(), L, iou_threshold)  # sorted by decreasing score
    return {"boxes": B[keep], "scores": S[keep], "labels": L[keep]}
