"""COCO-format detection dataset: the one reader for synthetic scenes and converted real datasets.

On-disk layout (what ``write_scenes`` and every ``data_scripts/prepare_*.py`` detection converter
write)::

    ROOT/annotations/instances_<split>.json   # COCO; file_name relative to ROOT/images/
    ROOT/images/...

Paired RGB/IR datasets add ``paired_file_name`` (the RGB frame, relative to ``ROOT/images/``) to each
image entry; ``file_name`` is the infrared frame.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .errors import DatasetFormatError, not_found

__all__ = ["CocoDetection", "collate_detection", "load_image"]


def load_image(path: str | Path) -> Tensor:
    """Read an image file as a float32 tensor ``[3, H, W]`` in [0, 1].

    Single-channel files (SAR amplitude, thermal IR) are repeated to 3 channels; 16-bit files are
    scaled by 65535.
    """
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float32) / 65535.0
            t = torch.from_numpy(np.ascontiguousarray(a))[None].clamp_(0, 1)
            return t.expand(3, -1, -1).contiguous()
        if im.mode == "F":
            a = np.asarray(im, dtype=np.float32)
            return torch.from_numpy(np.ascontiguousarray(a))[None].expand(3, -1, -1).contiguous()
        if im.mode != "RGB":
            im = im.convert("RGB")
        a = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255.0)


def _check_coco(data: Any, path: Path) -> None:
    """Validate the fields this package relies on; raise DatasetFormatError naming the defect."""
    if not isinstance(data, dict):
        raise DatasetFormatError(path, "top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetFormatError(path, f"missing or non-list '{key}'")
    cat_ids = []
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DatasetFormatError(path, f"category entry {c!r} lacks 'id' or 'name'")
        cat_ids.append(c["id"])
    if sorted(cat_ids) != list(range(1, len(cat_ids) + 1)):
        raise DatasetFormatError(path, f"category ids must be 1..K, got {sorted(cat_ids)}")
    img_ids = set()
    for im in data["images"]:
        if not isinstance(im, dict) or any(k not in im for k in ("id", "file_name", "width", "height")):
            raise DatasetFormatError(path, f"image entry {im!r} lacks id/file_name/width/height")
        if im["id"] in img_ids:
            raise DatasetFormatError(path, f"duplicate image id {im['id']}")
        img_ids.add(im["id"])
    ann_ids = set()
    for a in data["annotations"]:
        if not isinstance(a, dict) or any(k not in a for k in ("id", "image_id", "category_id", "bbox")):
            raise DatasetFormatError(path, f"annotation {a!r} lacks id/image_id/category_id/bbox")
        if a["id"] in ann_ids:
            raise DatasetFormatError(path, f"duplicate annotation id {a['id']}")
        ann_ids.add(a["id"])
        if a["image_id"] not in img_ids:
            raise DatasetFormatError(path, f"annotation {a['id']} names unknown image_id {a['image_id']}")
        if a["category_id"] not in cat_ids:
            raise DatasetFormatError(path, f"annotation {a['id']} has unknown category_id {a['category_id']}")
        bb = a["bbox"]
        if not (isinstance(bb, list) and len(bb) == 4 and all(isinstance(v, (int, float)) for v in bb)):
            raise DatasetFormatError(path, f"annotation {a['id']} has bbox {bb!r}, expected [x, y, w, h]")
        if bb[2] <= 0 or bb[3] <= 0:
            raise DatasetFormatError(path, f"annotation {a['id']} has non-positive width/height in bbox {bb}")


class CocoDetection(Dataset):
    """Detection dataset reading ``root/annotations/instances_<split>.json`` and ``root/images/``.

    ``__getitem__`` returns ``(image, target)``: ``image`` float32 ``[3, H, W]`` in [0, 1]
    (single-channel files repeated to 3 channels) and ``target`` a dict with ``boxes`` (float32
    ``[n, 4]``, xyxy absolute pixels), ``labels`` (int64, 1-based category ids), ``image_id`` (int),
    ``iscrowd`` (int64) and ``area`` (float32). With ``return_paired=True`` it returns
    ``(image, target, paired_image)``, the paired (RGB) frame transformed with the same geometry.

    Boxes with ``iscrowd=1`` (DOTA 'difficult', KAIST 'people'/occluded) stay in the target with
    their flag set; the trainer decides whether to ignore them, and COCOeval treats them as ignore
    regions. ``drop_empty=True`` skips images without any non-crowd box (mmdet's filter_empty_gt,
    for training); evaluation keeps every image.

    Attributes: ``coco`` (the pycocotools ``COCO`` object, for COCOeval), ``categories`` (names in
    category-id order), ``num_classes`` (without background), ``image_ids``.

    ``name`` (optional) names the dataset in the error raised when ``root`` is missing.

    ``in_memory=True`` decodes every image once, at construction, and keeps it (8-bit images as uint8
    tensors, 3 bytes a pixel), so a training step decodes no file: the tutorial scale's scenes are small
    enough (1000 scenes of 192 px are 110 MB). A second dataset of the same split in the same process
    (same annotation file, unchanged) shares the decoded images instead of reading them again.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Callable | None = None,
        return_paired: bool = False,
        drop_empty: bool = False,
        *,
        name: str | None = None,
        in_memory: bool = False,
    ) -> None:
        from pycocotools.coco import COCO

        self.root = Path(root)
        self.split = split
        self.ann_file = self.root / "annotations" / f"instances_{split}.json"
        if not self.ann_file.is_file():
            raise not_found(self.root, self.ann_file, name)
        try:
            data = json.loads(self.ann_file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise DatasetFormatError(self.ann_file, f"undecodable text ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise DatasetFormatError(self.ann_file, f"not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
        _check_coco(data, self.ann_file)
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
            coco.createIndex()
        self.coco = coco
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.categories: list[str] = [c["name"] for c in cats]
        self.num_classes = len(self.categories)
        self.transforms = transforms
        self.return_paired = return_paired
        self.drop_empty = drop_empty
        ids = [im["id"] for im in data["images"]]
        if drop_empty:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in coco.imgToAnns.get(i, []))]
        self.image_ids: list[int] = ids
        if return_paired:
            missing = [im["file_name"] for im in data["images"] if "paired_file_name" not in im]
            if missing:
                raise DatasetFormatError(
                    self.ann_file,
                    f"return_paired=True but {len(missing)} image entries have no 'paired_file_name' "
                    f"(first: {missing[0]})",
                )
        self._memory: dict[str, Tensor] | None = None
        if in_memory:
            key = (str(self.ann_file.resolve()), self.ann_file.stat().st_mtime_ns, tuple(ids), return_paired)
            self._memory = _DECODED.get(key)
            if self._memory is None:
                self._memory = {}
                for i in self.image_ids:
                    info = coco.imgs[i]
                    for rel in (info["file_name"], info.get("paired_file_name") if return_paired else None):
                        if rel is not None:
                            self._memory[rel] = _compact(self._read(rel))
                _remember(key, self._memory)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _load(self, rel: str) -> Tensor:
        if self._memory is not None and rel in self._memory:
            t = self._memory[rel]
            return t.float().div_(255.0) if t.dtype == torch.uint8 else t.clone()
        return self._read(rel)

    def _read(self, rel: str) -> Tensor:
        path = self.root / "images" / rel
        try:
            return load_image(path)
        except FileNotFoundError:
            raise DatasetFormatError(self.ann_file, f"lists image {rel} but {path} is missing") from None
        except OSError as e:
            raise DatasetFormatError(path, f"cannot decode image ({e})") from None

    def target(self, index: int) -> dict[str, Any]:
        """The target dict of item ``index`` without loading the image."""
        img_id = self.image_ids[index]
        anns = self.coco.imgToAnns.get(img_id, [])
        if anns:
            xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
            boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        else:
            boxes = torch.zeros((0, 4), dtype=torch.float32)
        return {
            "boxes": boxes,
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": int(img_id),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
            "area": torch.tensor([float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in anns],
                                 dtype=torch.float32),
        }

    def __getitem__(self, index: int):
        info = self.coco.imgs[self.image_ids[index]]
        image = self._load(info["file_name"])
        target = self.target(index)
        if not self.return_paired:
            if self.transforms is not None:
                image, target = self.transforms(image, target)
            return image, target
        paired = self._load(info["paired_file_name"])
        if self.transforms is not None:
            both, target = self.transforms({"image": image, "paired": paired}, target)
            image, paired = both["image"], both["paired"]
        return image, target, paired

    def __repr__(self) -> str:
        return (f"CocoDetection(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
                f"classes={self.categories})")


# Decoded splits of this process, newest last: a chapter builds the same splits for every run it loads from the
# cache, and decoding 1000 scenes again each time costs seconds. The tensors are never modified (``_load``
# returns a converted copy), so datasets may share them.
_DECODED: dict[tuple, dict[str, Tensor]] = {}
_DECODED_MAX = 6


def _remember(key: tuple, memory: dict[str, Tensor]) -> None:
    _DECODED[key] = memory
    while len(_DECODED) > _DECODED_MAX:
        del _DECODED[next(iter(_DECODED))]


def _compact(image: Tensor) -> Tensor:
    """``image`` as uint8 when that is exact (8-bit files), else unchanged."""
    q = image.mul(255.0).round_()
    return q.to(torch.uint8) if torch.equal(q.div(255.0), image) else image


def collate_detection(batch: list[tuple]) -> tuple[list, ...]:
    """``[(image, target[, paired]), ...] -> (images, targets[, paired_images])`` as lists."""
    return tuple(list(items) for items in zip(*batch))  # type: ignore[return-value]
