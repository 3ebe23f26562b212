"""Tiny in-memory detection data and detectors for fast tests (no files, no downloads)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from rskd_tutorial.models.detectors import build_detector

SIZE = 64


class TinyBoxes(Dataset):
    """Bright squares on noise; 2 classes by brightness."""

    def __init__(self, n: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            img = torch.rand(3, SIZE, SIZE, generator=g) * 0.3
            boxes, labels = [], []
            for j in range(2):
                x, y = [int(v) for v in torch.randint(0, SIZE - 20, (2,), generator=g)]
                s = 8 + 6 * j
                img[:, y:y + s, x:x + s] = 0.6 + 0.3 * j
                boxes.append([x, y, x + s, y + s])
                labels.append(1 + j)
            self.items.append((img, {"boxes": torch.tensor(boxes, dtype=torch.float32),
                                     "labels": torch.tensor(labels), "image_id": i}))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def tiny_detector(arch: str, backbone: str = "resnet18", **kw):
    torch.manual_seed(kw.pop("seed", 0))
    return build_detector(arch, backbone, 2, min_size=SIZE, max_size=SIZE, fpn_channels=16, anchor_factor=0.5,
                          box_head_dim=32, **kw)
