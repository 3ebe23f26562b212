"""Paired geometric transforms that keep boxes and masks consistent with the image.

Every transform is called as ``image, target = t(image, target)`` and works for both task families:

* detection: ``image`` is a float tensor ``[C, H, W]`` and ``target`` a dict with ``boxes`` (xyxy,
  absolute pixels), ``labels``, ``iscrowd``, ``area`` (per-box entries are cropped/filtered together);
* saliency: ``target`` is a mask tensor ``[1, H, W]`` (float in [0, 1]) transformed like the image.

``image`` may also be a dict of tensors (``{"image": ir, "paired": rgb}`` for RGB/IR pairs, or
``{448: x, 224: y}`` for several resolutions of one scene). The first entry is the reference: boxes
are in its pixel coordinates, and every other entry gets the same geometric operation in relative
coordinates (a crop of the reference's top-left quarter is the top-left quarter of every entry).

Remote-sensing images have no canonical "up", so vertical flips are as valid as horizontal ones.
All randomness comes from the global ``torch`` RNG, so the training engine's seeding controls it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

ImageLike = Union[Tensor, dict]
TargetLike = Union[dict, Tensor]

_PER_BOX_KEYS = ("boxes", "labels", "iscrowd", "area", "scores")

__all__ = ["Compose", "RandomHorizontalFlip", "RandomVerticalFlip", "Resize", "RandomCrop"]


def _ref(image: ImageLike) -> Tensor:
    if isinstance(image, Tensor):
        return image
    if not image:
        raise ValueError("empty image dict")
    return next(iter(image.values()))


def _map(image: ImageLike, fn: Callable[[Tensor, float, float], Tensor]) -> ImageLike:
    """Apply ``fn(tensor, sx, sy)`` to every tensor; ``sx, sy`` = its size relative to the reference."""
    if isinstance(image, Tensor):
        return fn(image, 1.0, 1.0)
    ref = _ref(image)
    H, W = ref.shape[-2:]
    return {k: fn(v, v.shape[-1] / W, v.shape[-2] / H) for k, v in image.items()}


def _resize(x: Tensor, hw: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    dtype = x.dtype
    y = x.float()
    squeeze = y.dim() == 3
    if squeeze:
        y = y[None]
    y = F.interpolate(y, size=hw, mode="bilinear", align_corners=False, antialias=True)
    if squeeze:
        y = y[0]
    if dtype == torch.uint8:
        y = y.round().clamp(0, 255).to(torch.uint8)
    return y.to(dtype) if dtype.is_floating_point else y


def _filter_boxes(target: dict, keep: Tensor) -> dict:
    out = dict(target)
    for k in _PER_BOX_KEYS:
        if k in out and isinstance(out[k], Tensor):
            out[k] = out[k][keep]
    return out


class Compose:
    """Chain transforms: ``Compose([RandomHorizontalFlip(), Resize(512)])``."""

    def __init__(self, transforms: Sequence[Callable[[Any, Any], tuple[Any, Any]]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: ImageLike, target: TargetLike) -> tuple[ImageLike, TargetLike]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class _RandomFlip:
    dim = -1

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image: ImageLike, target: TargetLike) -> tuple[ImageLike, TargetLike]:
        if torch.rand(()).item() >= self.p:
            return image, target
        return self.apply(image, target)

    def apply(self, image: ImageLike, target: TargetLike) -> tuple[ImageLike, TargetLike]:
        """Flip unconditionally (what the random version does with probability ``p``)."""
        H, W = _ref(image).shape[-2:]
        image = _map(image, lambda x, sx, sy: x.flip(self.dim))
        if isinstance(target, Tensor):
            return image, target.flip(self.dim)
        target = dict(target)
        if "boxes" in target:
            b = target["boxes"].clone()
            if self.dim == -1:
                b[:, [0, 2]] = W - target["boxes"][:, [2, 0]]
            else:
                b[:, [1, 3]] = H - target["boxes"][:, [3, 1]]
            target["boxes"] = b
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(_RandomFlip):
    """Mirror left-right with probability ``p`` (boxes: ``x -> W - x``)."""

    dim = -1


class RandomVerticalFlip(_RandomFlip):
    """Mirror top-bottom with probability ``p`` (boxes: ``y -> H - y``)."""

    dim = -2


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class Resize:
    """Resize to ``size`` (int: square; ``(h, w)``) with antialiased bilinear interpolation.

    Boxes are scaled by the same factors; a saliency mask is resized bilinearly too (soft edges).
    Every entry of an image dict is resized to the same ``size`` (they show the same scene).
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _hw(size)

    def __call__(self, image: ImageLike, target: TargetLike) -> tuple[ImageLike, TargetLike]:
        H, W = _ref(image).shape[-2:]
        h, w = self.size
        image = _map(image, lambda x, sx, sy: _resize(x, (h, w)))
        if isinstance(target, Tensor):
            return image, _resize(target, (h, w))
        target = dict(target)
        if "boxes" in target:
            scale = torch.tensor([w / W, h / H, w / W, h / H], dtype=target["boxes"].dtype)
            target["boxes"] = target["boxes"] * scale
            if "area" in target:
                target["area"] = target["area"] * (w * h / (W * H))
        return image, target

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class RandomCrop:
    """Crop a random ``size`` window (int: square; ``(h, w)``; clamped to the image size).

    Boxes are shifted and clipped to the window; boxes left with no width or height are dropped
    together with their labels, ``iscrowd`` and ``area`` (recomputed for the clipped boxes).
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _hw(size)

    def __call__(self, image: ImageLike, target: TargetLike) -> tuple[ImageLike, TargetLike]:
        H, W = _ref(image).shape[-2:]
        th, tw = min(self.size[0], H), min(self.size[1], W)
        y0 = int(torch.randint(0, H - th + 1, ()).item())
        x0 = int(torch.randint(0, W - tw + 1, ()).item())
        return self.crop(image, target, x0, y0, tw, th)

    @staticmethod
    def crop(image: ImageLike, target: TargetLike, x0: int, y0: int, w: int, h: int
             ) -> tuple[ImageLike, TargetLike]:
        """Crop the window ``[x0, x0 + w) x [y0, y0 + h)`` of the reference (deterministic)."""

        def _c(x: Tensor, sx: float, sy: float) -> Tensor:
            a, b = round(x0 * sx), round(y0 * sy)
            return x[..., b:b + max(1, round(h * sy)), a:a + max(1, round(w * sx))]

        image = _map(image, _c)
        if isinstance(target, Tensor):
            return image, target[..., y0:y0 + h, x0:x0 + w]
        target = dict(target)
        if "boxes" in target:
            b = target["boxes"] - torch.tensor([x0, y0, x0, y0], dtype=target["boxes"].dtype)
            b[:, 0::2] = b[:, 0::2].clamp(0, w)
            b[:, 1::2] = b[:, 1::2].clamp(0, h)
            keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            target["boxes"] = b
            if "area" in target:
                target["area"] = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).to(target["area"].dtype)
            target = _filter_boxes(target, keep)
        return image, target

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"
