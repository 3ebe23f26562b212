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


def write_yaml(path, data: dict):
    """Write ``data`` as a YAML config file; return its path."""
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def tiny_teacher_run(kind: str, arch: str, tmp_path) -> dict:
    """Write tiny synthetic ``kind`` scenes and train a 1-epoch R18 teacher through ``rskd train``.

    Returns the pieces a distillation config needs: ``data``, ``spec``, ``train``, ``runs`` (folder),
    ``teacher_pt`` (its final weights)."""
    from rskd_tutorial.cli import main
    from rskd_tutorial.data.synthetic import write_scenes

    root = write_scenes(kind, tmp_path / "data", n_train=4, n_val=2, size=64, seed=0, progress=False)
    data = {"root": str(root)}
    spec = {"arch": arch, "backbone": "resnet18", "min_size": 64, "max_size": 64, "fpn_channels": 16,
            "anchor_factor": 0.5, "box_head_dim": 32}
    train = {"epochs": 1, "lr": 0.01, "batch_size": 2, "warmup_iters": 1, "eval_every": 1}
    runs = tmp_path / "runs"
    teacher_cfg = write_yaml(tmp_path / "teacher.yaml", {"recipe": "detector", "data": data, "model": spec,
                                                         "train": train, "eval_batch_size": 2})
    assert main(["train", str(teacher_cfg), "--out", str(runs / "teacher")]) == 0
    return {"data": data, "spec": spec, "train": train, "runs": runs, "teacher_pt": runs / "teacher" / "final.pt"}
