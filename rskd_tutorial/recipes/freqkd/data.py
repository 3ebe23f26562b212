"""Paired RGB / IR frames: the datasets and batches of stage A, stage B and the divergence study."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from rskd_tutorial.recipes.freqkd.config import PairedData


class ModalityView(Dataset):
    """One modality of a paired dataset as a plain detection dataset: ``(image, target)``.

    ``dataset`` is a :class:`~rskd_tutorial.data.CocoDetection` with ``return_paired=True``
    (``(ir, target, rgb)`` items); ``modality="rgb"`` returns the paired RGB frame as the image (the
    teacher's training and evaluation set), ``"ir"`` the IR frame. ``coco``, ``num_classes``,
    ``categories`` and ``image_ids`` are the underlying dataset's (for COCOeval).
    """

    def __init__(self, dataset: Any, modality: str):
        if modality not in ("rgb", "ir"):
            raise ValueError(f"modality must be 'rgb' or 'ir', got {modality!r}")
        if not getattr(dataset, "return_paired", False):
            raise ValueError("ModalityView needs a CocoDetection built with return_paired=True")
        self.dataset = dataset
        self.modality = modality

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        ir, target, rgb = self.dataset[i]
        return (rgb if self.modality == "rgb" else ir), target

    def __getattr__(self, name: str) -> Any:   # only called for attributes not found the usual way
        if name in ("coco", "num_classes", "categories", "image_ids") and "dataset" in self.__dict__:
            return getattr(self.__dict__["dataset"], name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


def collate_pairs(batch: Sequence[tuple]) -> tuple[dict[str, Tensor], list[dict]]:
    """``[(ir, target, rgb), ...] -> ({"ir": [B, 3, H, W], "rgb": [B, 3, H, W]}, targets)``: the
    inputs a :class:`~rskd_tutorial.distill.base.Distiller` with ``student_input="ir"``,
    ``teacher_input="rgb"`` routes (frames of a batch share one size)."""
    ir, targets, rgb = zip(*batch)
    return {"ir": torch.stack(ir), "rgb": torch.stack(rgb)}, list(targets)


def pair_transforms(data: PairedData, train: bool) -> Any:
    """Resize (when ``data.resize``) and, for training, the horizontal flip applied to both frames of a pair."""
    from rskd_tutorial.data.transforms import Compose, RandomHorizontalFlip, Resize

    ops = [Resize(tuple(data.resize))] if data.resize is not None else []
    if train and data.hflip > 0:
        ops.append(RandomHorizontalFlip(data.hflip))
    return Compose(ops) if ops else None


def paired_splits(data: PairedData, *, drop_empty: bool = False) -> tuple[Any, Any]:
    """(training pairs with the same random flip on both frames, evaluation pairs)."""
    from rskd_tutorial.data import CocoDetection

    train = CocoDetection(data.root, data.train_split, transforms=pair_transforms(data, True), return_paired=True,
                          drop_empty=drop_empty, name=data.name, in_memory=data.in_memory)
    val = CocoDetection(data.root, data.val_split, transforms=pair_transforms(data, False), return_paired=True,
                        name=data.name, in_memory=data.in_memory)
    return train, val


def ir_splits(data: PairedData) -> tuple[Any, Any]:
    """(IR training set with flips and without empty frames, IR evaluation set) for stage B (the
    detector resizes by itself; ``resize`` is ignored here so that boxes are evaluated in the
    dataset's own pixels)."""
    from rskd_tutorial.data import CocoDetection

    data = dataclasses.replace(data, resize=None)
    train = CocoDetection(data.root, data.train_split, transforms=pair_transforms(data, True), drop_empty=True,
                          name=data.name, in_memory=data.in_memory)
    val = CocoDetection(data.root, data.val_split, name=data.name, in_memory=data.in_memory)
    return train, val
