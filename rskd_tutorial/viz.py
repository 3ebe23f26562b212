"""Plotting and display helpers shared by the chapters (one home: chapters never redefine them).

* :func:`show_source` -- show a package function's source next to its equation.
* :func:`plot_training_curves` -- loss / metric curves of several runs from their ``metrics.jsonl``.
* :func:`draw_boxes` / :func:`plot_detections` -- images with ground truth and predictions.
* :func:`feature_grid` -- a row of feature maps (channel-mean magnitude) with a shared colour scale.
* :func:`results_table` -- a pandas table of metrics, optionally x100 and with a reference column.
* :func:`plot_kd_taps` -- the KD recipe as a diagram: which teacher and student taps each KD term reads.
* :func:`plot_stage_pairs` -- SCRKD's diagram: which teacher stage each loss pairs with each student stage.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def show_source(obj: Callable | type, *, lines: tuple[int, int] | None = None) -> Any:
    """Display the source of a package object in a notebook (as a highlighted code block); return
    it as a string outside IPython. ``lines`` selects a (start, stop) slice of the source lines."""
    src = inspect.getsource(obj)
    if lines is not None:
        src = "\n".join(src.splitlines()[lines[0]:lines[1]])
    module = getattr(obj, "__module__", "")
    header = f"# {module}.{getattr(obj, '__qualname__', '')}\n"
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{header}{src}\n```"))
        return None
    except ImportError:
        return header + src


def _to_numpy_image(img: torch.Tensor | np.ndarray) -> np.ndarray:
    if torch.is_tensor(img):
        img = img.detach().float().cpu()
        if img.dim() == 3 and img.shape[0] in (1, 3):
            img = img.permute(1, 2, 0)
        img = img.numpy()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return img


def draw_boxes(ax: plt.Axes, boxes: torch.Tensor | np.ndarray, labels: Sequence[int] | None = None,
               scores: Sequence[float] | None = None, *, color: str = "lime", names: Sequence[str] | None = None,
               linewidth: float = 1.0, score_threshold: float = 0.0) -> None:
    """Draw xyxy boxes (absolute pixels) on ``ax``; label text when ``names`` is given."""
    boxes = boxes.detach().cpu().numpy() if torch.is_tensor(boxes) else np.asarray(boxes)
    for i, (x1, y1, x2, y2) in enumerate(boxes.reshape(-1, 4)):
        if scores is not None and float(scores[i]) < score_threshold:
            continue
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, linewidth=linewidth))
        if names is not None and labels is not None:
            text = names[int(labels[i]) - 1]
            if scores is not None:
                text += f" {float(scores[i]):.2f}"
            ax.text(x1, y1 - 1, text, color=color, fontsize=5, va="bottom")


def plot_detections(images: Sequence[torch.Tensor], targets: Sequence[Mapping[str, Any]] | None = None,
                    predictions: Sequence[Sequence[Mapping[str, Any]]] | None = None, *,
                    titles: Sequence[str] | None = None, row_titles: Sequence[str] | None = None,
                    names: Sequence[str] | None = None, score_threshold: float = 0.3,
                    size: float = 2.6) -> plt.Figure:
    """One column per image; row 0 the ground truth, then one row per model's predictions
    (``predictions[m][i]`` is model m on image i; boxes above ``score_threshold``)."""
    rows = 1 + (len(predictions) if predictions else 0)
    fig, axes = plt.subplots(rows, len(images), figsize=(size * len(images), size * rows), squeeze=False)
    for i, img in enumerate(images):
        arr = _to_numpy_image(img)
        for r in range(rows):
            ax = axes[r, i]
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and targets is not None:
                draw_boxes(ax, targets[i]["boxes"], targets[i].get("labels"), color="lime", names=names)
            elif r > 0:
                p = predictions[r - 1][i]
                draw_boxes(ax, p["boxes"], p.get("labels"), p.get("scores"), color=_COLORS[(r - 1) % len(_COLORS)],
                           names=names, score_threshold=score_threshold)
            if i == 0:
                ax.set_ylabel((["ground truth"] + list(row_titles or []))[r] if r == 0 or row_titles else "")
        if titles:
            axes[0, i].set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def feature_grid(maps: Sequence[torch.Tensor], titles: Sequence[str] | None = None, *,
                 reduce: str = "abs_mean", cmap: str = "magma", shared_scale: bool = True,
                 size: float = 2.4, suptitle: str | None = None) -> plt.Figure:
    """A row of 2-D maps. Each ``[C, H, W]`` (or ``[1, C, H, W]``) tensor is reduced over channels
    (``abs_mean`` = mean |F|, the quantity FGD/DIPKD attention uses; ``mean``; ``none`` for ``[H, W]``)."""
    arrs = []
    for m in maps:
        m = m.detach().float().cpu()
        if m.dim() == 4:
            m = m[0]
        if m.dim() == 3:
            m = m.abs().mean(0) if reduce == "abs_mean" else m.mean(0)
        arrs.append(m.numpy())
    vmin = min(a.min() for a in arrs) if shared_scale else None
    vmax = max(a.max() for a in arrs) if shared_scale else None
    fig, axes = plt.subplots(1, len(arrs), figsize=(size * len(arrs), size), squeeze=False)
    for i, a in enumerate(arrs):
        im = axes[0, i].imshow(a, cmap=cmap, vmin=vmin, vmax=vmax)
        axes[0, i].set_xticks([])
        axes[0, i].set_yticks([])
        if titles:
            axes[0, i].set_title(titles[i], fontsize=8)
        if not shared_scale:
            fig.colorbar(im, ax=axes[0, i], fraction=0.046)
    if shared_scale:
        fig.colorbar(im, ax=list(axes[0]), fraction=0.02)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return fig


def plot_training_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], *, keys: Sequence[str] = ("loss",),
                         val_key: str | None = None, size: tuple[float, float] = (4.0, 3.0)) -> plt.Figure:
    """Curves of several runs: ``runs`` maps a label to the records of ``engine.read_metrics``.
    One panel per key of the training lines (against step), plus one for ``val_key`` per epoch."""
    panels = list(keys) + ([val_key] if val_key else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(size[0] * len(panels), size[1]), squeeze=False)
    for c, (label, records) in enumerate(runs.items()):
        color = _COLORS[c % len(_COLORS)]
        train = [r for r in records if r.get("kind") == "train"]
        epochs = [r for r in records if r.get("kind") == "epoch"]
        for p, key in enumerate(keys):
            pts = [(r["step"], r[key]) for r in train if key in r]
            if pts:
                axes[0, p].plot(*zip(*pts), color=color, label=label, linewidth=1)
        if val_key:
            pts = [(r["epoch"], r[f"val_{val_key}"]) for r in epochs if f"val_{val_key}" in r]
            if pts:
                axes[0, -1].plot(*zip(*pts), marker="o", color=color, label=label, linewidth=1, markersize=3)
    for p, key in enumerate(panels):
        axes[0, p].set_title(key if p < len(keys) else f"validation {key}", fontsize=9)
        axes[0, p].set_xlabel("step" if p < len(keys) else "epoch")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def results_table(rows: Mapping[str, Mapping[str, float]], *, columns: Sequence[str] | None = None,
                  scale: float = 100.0, digits: int = 1, reference: Mapping[str, Any] | None = None,
                  reference_name: str = "paper") -> Any:
    """A pandas DataFrame of metrics (rows: methods), scaled (x100 for AP) and rounded; ``reference``
    adds a column of the paper's numbers (strings or floats, already in the paper's units)."""
    import pandas as pd

    df = pd.DataFrame(rows).T
    if columns is not None:
        df = df[list(columns)]
    df = (df * scale).round(digits)
    if reference is not None:
        df[reference_name] = [reference.get(r, "") for r in df.index]
    return df


def plot_stage_pairs(matching: Any, teacher_res: int, student_res: int, *, n_stages: int = 5,
                     size: tuple[float, float] = (8.0, 3.2)) -> plt.Figure:
    """SCRKD's diagram drawn from a stage rule (``distill.scrkd.StageMatching``): the frozen teacher's and
    the student's decoder stages, and which teacher map each loss pairs with each student stage --
    MVCD (the student's ``f_mv`` branch), MSFD (its fused ``f_ms`` branches, teacher stage
    ``matching.teacher_stage(k, n)``) and DSD (the saliency heads)."""
    fig, ax = plt.subplots(figsize=size)
    yt, ys, w, h = 2.0, 0.0, 0.62, 0.5
    for k in range(1, n_stages + 1):
        for y, who, face in ((yt, "T", "#dde6f3"), (ys, "S", "#f3e6dd")):
            ax.add_patch(plt.Rectangle((k - w / 2, y - h / 2), w, h, facecolor=face, edgecolor="k", lw=0.8))
            ax.text(k, y, f"{who}: o$_{k}$", ha="center", va="center", fontsize=8)
    mvcd = matching.mvcd_stages or tuple(range(1, n_stages + 1))
    pairs = {"MVCD (correlations of f_mv)": [(k, k) for k in mvcd],
             f"MSFD (fused f_ms, teacher stage k+{matching.msfd_offset})":
                 [(k, matching.teacher_stage(k, n_stages)) for k in range(1, n_stages + 1)],
             "DSD (saliency head k)": [(k, k) for k in range(1, n_stages + 1)]}
    for (label, links), dx, color in zip(pairs.items(), (-0.2, 0.0, 0.2), _COLORS):
        for i, (ks, kt) in enumerate(links):
            ax.plot([ks + dx, kt + dx], [ys + h / 2, yt - h / 2], color=color, lw=1.4, label=label if i == 0 else None)
    ax.text(0.25, yt, f"teacher\n{teacher_res} px\n(frozen)", ha="right", va="center", fontsize=8)
    ax.text(0.25, ys, f"student\n{student_res} px", ha="right", va="center", fontsize=8)
    ax.set_xlim(-0.6, n_stages + 0.6)
    ax.set_ylim(-0.6, 2.9)
    ax.axis("off")
    ax.legend(loc="upper center", ncol=3, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 1.02))
    ax.set_title(f"rule '{matching.name}': which teacher stage each SCRKD term reads", fontsize=9, pad=14)
    return fig


def plot_kd_taps(levels: Sequence[str], kd_losses: Mapping[str, Any], *, title: str = "",
                 size: tuple[float, float] = (8.0, 3.2)) -> plt.Figure:
    """The recipe of chapter 0 as a diagram drawn from the losses themselves: a frozen teacher and a
    student (backbone, FPN levels ``levels``, head), and one connector per KD term at every tap it reads --
    the FPN levels in its ``levels`` attribute (every level when it has none set), or the heads' outputs
    for a term without a ``levels`` attribute (logit KD)."""
    fig, ax = plt.subplots(figsize=size)
    cols = ["backbone", *levels, "head"]
    yt, ys, w, h = 2.0, 0.0, 0.7, 0.5
    for x, name in enumerate(cols):
        for y, face in ((yt, "#dde6f3"), (ys, "#f3e6dd")):
            ax.add_patch(plt.Rectangle((x - w / 2, y - h / 2), w, h, facecolor=face, edgecolor="k", lw=0.8))
            ax.text(x, y, name, ha="center", va="center", fontsize=8)
    n = max(len(kd_losses), 1)
    for i, (name, loss) in enumerate(kd_losses.items()):
        read = getattr(loss, "levels", None)
        taps = ["head"] if not hasattr(loss, "levels") else list(read) if read else list(levels)
        dx = (i - (n - 1) / 2) * min(0.5 / n, 0.12)
        color = _COLORS[i % len(_COLORS)]
        for j, tap in enumerate(taps):
            x = cols.index(tap) + dx
            ax.plot([x, x], [ys + h / 2, yt - h / 2], color=color, lw=1.4, label=name if j == 0 else None)
    ax.text(-0.55, yt, "teacher\n(frozen)", ha="right", va="center", fontsize=8)
    ax.text(-0.55, ys, "student", ha="right", va="center", fontsize=8)
    ax.set_xlim(-1.5, len(cols) - 0.4)
    ax.set_ylim(-0.6, 2.9)
    ax.axis("off")
    ax.legend(loc="upper center", ncol=min(len(kd_losses), 6), fontsize=7, frameon=False, bbox_to_anchor=(0.5, 1.02))
    if title:
        ax.set_title(title, fontsize=9, pad=14)
    return fig
