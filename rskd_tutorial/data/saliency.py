"""Salient-object-detection folder dataset: one scene at several resolutions (SCRKD cascade).

On-disk layout (what ``write_scenes("saliency", ...)`` and ``data_scripts/prepare_sod.py`` write)::

    ROOT/<split>/images/<name>.png|jpg     # RGB
    ROOT/<split>/masks/<name>.png          # 0/255 single channel, same stem as the image
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .coco import load_image
from .errors import DatasetFormatError, not_found

__all__ = ["SaliencyFolder", "collate_saliency", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _resize(x: Tensor, s: int) -> Tensor:
    if x.shape[-2:] == (s, s):
        return x
    return F.interpolate(x[None], size=(s, s), mode="bilinear", align_corners=False, antialias=True)[0]


def _index(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            if p.stem in out:
                raise DatasetFormatError(p, f"two files share the name {p.stem!r} in {folder}")
            out[p.stem] = p
    return out


class SaliencyFolder(Dataset):
    """Images and binary masks from ``root/<split>/images`` and ``root/<split>/masks``.

    ``__getitem__`` returns ``(images, mask)``:

    * ``images``: float ``[3, s, s]`` in [0, 1] when ``image_sizes`` is an int, else a dict
      ``{s: tensor}`` with one entry per size (teacher 448, assistant 224, student 112 ...), each
      resized from the stored image with antialiased bilinear interpolation, so every resolution sees
      the same content.
    * ``mask``: float32 ``[1, m, m]`` in [0, 1], ``m = mask_size`` or the largest image size. The
      bilinear resize keeps soft edges (values between 0 and 1 on object borders), which is what a
      BCE/IoU loss on probabilities expects; ``binary=True`` thresholds it at 0.5.

    ``transforms`` run once on ``(image, mask)`` at the stored resolution, before the resizing, so
    a flip or crop is identical at every size. ``names`` lists the file stems in item order.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_sizes: int | Sequence[int],
        mask_size: int | None = None,
        transforms: Callable | None = None,
        binary: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.image_dir = self.root / split / "images"
        self.mask_dir = self.root / split / "masks"
        for d in (self.image_dir, self.mask_dir):
            if not d.is_dir():
                raise not_found(self.root, d, name, synthetic_kind="saliency")
        self.single = isinstance(image_sizes, int)
        self.image_sizes: list[int] = [image_sizes] if isinstance(image_sizes, int) else [int(s) for s in image_sizes]
        if not self.image_sizes:
            raise ValueError("image_sizes is empty")
        self.mask_size = int(mask_size) if mask_size is not None else max(self.image_sizes)
        self.transforms = transforms
        self.binary = binary
        images, masks = _index(self.image_dir), _index(self.mask_dir)
        if not images:
            raise DatasetFormatError(self.image_dir, "holds no images")
        no_mask = sorted(set(images) - set(masks))
        if no_mask:
            raise DatasetFormatError(images[no_mask[0]], f"has no mask in {self.mask_dir} ({len(no_mask)} images lack one)")
        no_image = sorted(set(masks) - set(images))
        if no_image:
            raise DatasetFormatError(masks[no_image[0]], f"has no image in {self.image_dir} ({len(no_image)} masks lack one)")
        self.names: list[str] = sorted(images)
        self._images = images
        self._masks = masks

    def __len__(self) -> int:
        return len(self.names)

    def load_mask(self, index: int) -> Tensor:
        """The stored mask of item ``index`` as float ``[1, H, W]`` in [0, 1]."""
        path = self._masks[self.names[index]]
        try:
            with Image.open(path) as im:
                a = np.asarray(im.convert("L"), dtype=np.uint8)
        except OSError as e:
            raise DatasetFormatError(path, f"cannot decode mask ({e})") from None
        return torch.from_numpy(a.copy())[None].float().div_(255.0)

    def __getitem__(self, index: int):
        path = self._images[self.names[index]]
        try:
            image = load_image(path)
        except OSError as e:
            raise DatasetFormatError(path, f"cannot decode image ({e})") from None
        mask = self.load_mask(index)
        if mask.shape[-2:] != image.shape[-2:]:
            raise DatasetFormatError(self._masks[self.names[index]],
                                     f"mask is {tuple(mask.shape[-2:])} but image is {tuple(image.shape[-2:])}")
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        images = {s: _resize(image, s) for s in self.image_sizes}
        mask = _resize(mask, self.mask_size).clamp_(0, 1)
        if self.binary:
            mask = (mask >= 0.5).float()
        return (images[self.image_sizes[0]] if self.single else images), mask

    def __repr__(self) -> str:
        return (f"SaliencyFolder(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
                f"image_sizes={self.image_sizes}, mask_size={self.mask_size})")


def collate_saliency(batch: list[tuple]) -> tuple[Tensor | dict[int, Tensor], Tensor]:
    """Stack ``(images, mask)`` items: ``images`` ``[B, 3, s, s]`` (or a dict of those), masks ``[B, 1, m, m]``."""
    images, masks = zip(*batch)
    if isinstance(images[0], dict):
        stacked: Tensor | dict[int, Tensor] = {s: torch.stack([im[s] for im in images]) for s in images[0]}
    else:
        stacked = torch.stack(images)
    return stacked, torch.stack(masks)
