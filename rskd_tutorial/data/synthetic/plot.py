"""Figures of synthetic (or converted real) scenes for the chapters: images with boxes or masks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .optical import OPTICAL_CLASSES
from .rgbir import RGBIR_CLASSES
from .sar import SAR_CLASSES, sar_to_uint8

__all__ = ["plot_scenes", "plot_optical", "plot_sar", "plot_rgbir", "plot_saliency"]

_CLASSES = {"optical": OPTICAL_CLASSES, "sar": SAR_CLASSES, "rgbir": RGBIR_CLASSES}
_COLOURS = ["#e41a1c", "#00d5ff", "#ffd700", "#ff00ff", "#ff8c00", "#4daf4a", "#ffffff"]


def _draw_boxes(ax, boxes, labels, names) -> None:
    from matplotlib.patches import Rectangle

    for b, lab in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(labels).reshape(-1)):
        c = _COLOURS[(int(lab) - 1) % len(_COLOURS)]
        ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=0.8, ec=c))
    present = sorted({int(v) for v in np.asarray(labels).reshape(-1)})
    if present and names:
        txt = ", ".join(f"{names[i - 1]}" for i in present if 0 < i <= len(names))
        ax.set_title(f"{len(np.asarray(labels).reshape(-1))} boxes: {txt}", fontsize=7)


def _load_detection(root: Path, split: str, n: int) -> list[dict]:
    data = json.loads((root / "annotations" / f"instances_{split}.json").read_text(encoding="utf-8"))
    names = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    by_img: dict[int, list] = {}
    for a in data["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    out = []
    for im in data["images"][:n]:
        anns = by_img.get(im["id"], [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], np.float32).reshape(-1, 4)
        rec = {"image": np.asarray(Image.open(root / "images" / im["file_name"])), "boxes": boxes,
               "labels": np.array([a["category_id"] for a in anns], np.int64), "names": names}
        if "paired_file_name" in im:
            rec["rgb"] = np.asarray(Image.open(root / "images" / im["paired_file_name"]).convert("RGB"))
            rec["ir"] = rec["image"]
        out.append(rec)
    return out


def _load_saliency(root: Path, split: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    imgs = sorted(p for p in (root / split / "images").iterdir() if not p.name.startswith("."))[:n]
    out = []
    for p in imgs:
        m = next((root / split / "masks").glob(p.stem + ".*"))
        out.append((np.asarray(Image.open(p).convert("RGB")), np.asarray(Image.open(m).convert("L"))))
    return out


def plot_scenes(kind: str, root_or_samples: str | Path | Sequence[Any], n: int = 4, split: str | None = None,
                figsize_per: float = 2.6):
    """A matplotlib Figure of ``n`` scenes of ``kind`` with their boxes (or masks).

    ``root_or_samples`` is a dataset root written by ``write_scenes`` / a converter (the first ``n``
    images of ``split``, default ``train``), or a list of in-memory samples: dicts from
    ``optical_scene`` / ``sar_scene`` / ``rgbir_scene`` or ``(image, mask)`` tuples from
    ``saliency_scene``. RGB/IR pairs are shown as two rows (RGB above, IR below).
    """
    import matplotlib.pyplot as plt

    if kind not in ("optical", "sar", "rgbir", "saliency"):
        raise ValueError(f"unknown kind {kind!r}")
    split = split or "train"
    if isinstance(root_or_samples, (str, Path)):
        root = Path(root_or_samples)
        samples: list = _load_saliency(root, split, n) if kind == "saliency" else _load_detection(root, split, n)
    else:
        samples = list(root_or_samples)[:n]
    if not samples:
        raise ValueError("no samples to plot")
    rows = 2 if kind in ("rgbir", "saliency") else 1
    fig, axes = plt.subplots(rows, len(samples), figsize=(figsize_per * len(samples), figsize_per * rows), squeeze=False)
    names = _CLASSES.get(kind, ())
    for j, s in enumerate(samples):
        if kind == "saliency":
            img, mask = s
            axes[0, j].imshow(img)
            axes[0, j].contour(np.asarray(mask) > 127, levels=[0.5], colors=["#ff3030"], linewidths=0.8)
            axes[1, j].imshow(mask, cmap="gray", vmin=0, vmax=255)
            axes[0, j].set_title(f"{img.shape[0]} px", fontsize=7)
            continue
        nm = s.get("names", names)
        if kind == "rgbir":
            axes[0, j].imshow(s["rgb"])
            axes[1, j].imshow(s["ir"], cmap="gray", vmin=0, vmax=255)
            for r in range(2):
                _draw_boxes(axes[r, j], s["boxes"], s["labels"], nm)
            if "night" in s:
                axes[0, j].set_title(("night" if s["night"] else "day") + f", {len(s['boxes'])} boxes", fontsize=7)
            continue
        img = s["image"] if "image" in s else sar_to_uint8(s["intensity"])
        axes[0, j].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        _draw_boxes(axes[0, j], s["boxes"], s["labels"], nm)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_optical(root_or_samples, n: int = 4, split: str | None = None):
    """``plot_scenes("optical", ...)``."""
    return plot_scenes("optical", root_or_samples, n, split)


def plot_sar(root_or_samples, n: int = 4, split: str | None = None):
    """``plot_scenes("sar", ...)``."""
    return plot_scenes("sar", root_or_samples, n, split)


def plot_rgbir(root_or_samples, n: int = 4, split: str | None = None):
    """``plot_scenes("rgbir", ...)``."""
    return plot_scenes("rgbir", root_or_samples, n, split)


def plot_saliency(root_or_samples, n: int = 4, split: str | None = None):
    """``plot_scenes("saliency", ...)`` (images with mask outlines above, masks below)."""
    return plot_scenes("saliency", root_or_samples, n, split or "train")
