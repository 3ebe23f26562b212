"""Maps that say *where* a feature-distillation loss looks: boxes on a feature grid, and attention.

One home for the pieces FGD, DIPKD and DS2D2 share:

* :func:`box_grid_extents` maps xyxy boxes (resized-image pixels) onto a feature grid by the
  *padded* batch size (the correct mapping; FGD/DIPKD's code divides by the unpadded image size,
  which stretches the masks when the batch is padded).
* :func:`box_scale_masks`: FGD's foreground scale mask (1/area of the box in cells, max over
  overlapping boxes) and the normalised background mask (DIPKD Eqs. 8-10).
* :func:`attention_maps`: FGD's spatial and channel attention ``HW softmax(mean_c|F|/tau)``,
  ``C softmax(mean_hw|F|/tau)`` (DIPKD Eqs. 3-6).

All vectorised over boxes (no Python loop over boxes or pixels) and computed in float32.
Taught in chapter 0 and chapter 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def box_grid_extents(boxes: Tensor, grid_hw: tuple[int, int], input_hw: tuple[int, int]) -> Tensor:
    """Inclusive cell extents ``[n, 4]`` (x1, y1, x2, y2) of xyxy ``boxes`` on an ``grid_hw`` grid that
    covers an ``input_hw`` (padded batch) image: floor for the start, ceil for the end, clamped."""
    h, w = grid_hw
    sy, sx = h / input_hw[0], w / input_hw[1]
    b = boxes.float()
    x1 = torch.floor(b[:, 0] * sx).clamp(0, w - 1)
    y1 = torch.floor(b[:, 1] * sy).clamp(0, h - 1)
    x2 = torch.ceil(b[:, 2] * sx).clamp(0, w - 1)
    y2 = torch.ceil(b[:, 3] * sy).clamp(0, h - 1)
    return torch.stack([x1, y1, torch.maximum(x2, x1), torch.maximum(y2, y1)], dim=1).long()


def box_footprints(boxes: Tensor, grid_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Boolean footprints ``[n, H, W]`` of ``boxes`` on the grid and their areas in cells ``[n]``."""
    h, w = grid_hw
    ext = box_grid_extents(boxes, grid_hw, input_hw)
    rows = torch.arange(h, device=boxes.device)
    cols = torch.arange(w, device=boxes.device)
    in_rows = (rows[None, :] >= ext[:, 1:2]) & (rows[None, :] <= ext[:, 3:4])   # [n, H]
    in_cols = (cols[None, :] >= ext[:, 0:1]) & (cols[None, :] <= ext[:, 2:3])   # [n, W]
    inside = in_rows[:, :, None] & in_cols[:, None, :]
    area = ((ext[:, 2] - ext[:, 0] + 1) * (ext[:, 3] - ext[:, 1] + 1)).float()
    return inside, area


def box_scale_masks(boxes_per_image: Sequence[Tensor], grid_hw: tuple[int, int],
                    input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """FGD / DIPKD scale masks on one feature grid (DIPKD Eqs. 8-10, FGD Eqs. 4-5).

    Returns ``(fg, bg)``, each ``[B, 1, H, W]`` float32:

    * ``fg[i, j] = max over boxes covering (i, j) of 1 / (box area in cells)``, 0 outside boxes
      (so each isolated box's cells sum to 1 whatever its size);
    * ``bg[i, j] = 1 / N_bg`` on the ``N_bg`` cells outside every box, 0 inside (all zero if no
      background cell is left).
    """
    h, w = grid_hw
    device = boxes_per_image[0].device if len(boxes_per_image) else torch.device("cpu")
    fg = torch.zeros(len(boxes_per_image), 1, h, w, device=device)
    for b, boxes in enumerate(boxes_per_image):  # a loop over images; boxes are vectorised
        if boxes.numel() == 0:
            continue
        inside, area = box_footprints(boxes, grid_hw, input_hw)
        fg[b, 0] = (inside.float() / area[:, None, None]).amax(dim=0)
    is_bg = (fg == 0).float()
    n_bg = is_bg.sum(dim=(2, 3), keepdim=True)
    bg = torch.where(n_bg > 0, is_bg / n_bg.clamp(min=1), torch.zeros_like(is_bg))
    return fg, bg


def attention_maps(feat: Tensor, tau: float = 0.5) -> tuple[Tensor, Tensor]:
    """Spatial and channel attention of a feature map (FGD Eqs. 2-3; DIPKD Eqs. 3-6).

    ``A^S = H W softmax_{ij}(mean_c |F| / tau)`` -> ``[N, 1, H, W]`` (sums to H*W per image) and
    ``A^C = C softmax_c(mean_{ij} |F| / tau)`` -> ``[N, C, 1, 1]`` (sums to C). Computed in float32.
    """
    n, c, h, w = feat.shape
    mag = feat.float().abs()
    spatial = (h * w) * torch.softmax(mag.mean(dim=1).reshape(n, -1) / tau, dim=1)
    channel = c * torch.softmax(mag.mean(dim=(2, 3)) / tau, dim=1)
    return spatial.reshape(n, 1, h, w), channel.reshape(n, c, 1, 1)


def edge_masks(images: Tensor | Sequence[Tensor], quantile: float = 0.9) -> Tensor:
    """Binary edge masks: the pixels whose Sobel gradient magnitude is in the top ``1 - quantile``.

    Per image, the channel mean ``g`` (replicate-padded) is filtered with the 3x3 Sobel kernels
    ``S_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` and ``S_y = S_x^T``; a pixel is an edge when
    ``||(S_x * g, S_y * g)||`` reaches the image's ``k``-th smallest value,
    ``k = int(quantile * H * W)`` (its ``quantile``-quantile).

    Args:
        images: ``[N, C, H, W]`` or a sequence of ``[C, H, W]`` images of one size.
        quantile: in (0, 1); 0.9 marks about 10 % of the pixels (more where values tie).

    Returns:
        Tensor ``[N, H, W]`` of 0.0 / 1.0, in the images' dtype.

    Taught in chapter 1 (section 3).
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    batch = images if isinstance(images, Tensor) else torch.stack(list(images))
    if batch.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W] or a sequence of [C, H, W], got shape {tuple(batch.shape)}")
    gray = batch.mean(1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=gray.dtype, device=gray.device)
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), torch.stack([sobel, sobel.T])[:, None]).norm(dim=1)
    k = max(1, int(quantile * grad[0].numel()))
    threshold = grad.flatten(1).kthvalue(k, dim=1).values
    return (grad >= threshold[:, None, None]).to(gray.dtype)


def region_masks(targets: Sequence[Mapping[str, Tensor]], grid_hw: tuple[int, int], batch_hw: tuple[int, int],
                 *, small_area: float, edges: Tensor | None = None) -> dict[str, Tensor]:
    """Region masks on a feature grid: all ground-truth boxes, the small ones, and (optionally) edges.

    Boxes (xyxy, in pixels of the padded ``batch_hw`` input) cover the cells of
    :func:`box_footprints` (start floored, end ceiled, by the padded
    size); a cell is in ``"all boxes"`` when any box covers it and in ``"small boxes"`` when a box
    of area below ``small_area`` px^2 covers it (COCO's small objects: area below 32^2 px). The
    edge mask is the fraction of each cell's pixels that are edges (adaptive average pooling of
    ``edges``, e.g. from :func:`edge_masks`).

    Args:
        targets: one mapping per image with ``"boxes"`` ``[n_i, 4]`` (``n_i`` may be 0).
        grid_hw: the feature grid ``(H, W)``.
        batch_hw: the padded input size the grid covers.
        small_area: the area threshold of a small box (px^2, in the same pixels as the boxes).
        edges: optional ``[N, H_img, W_img]`` masks in ``[0, 1]``, one per target.

    Returns:
        ``{"all boxes": [N, H, W], "small boxes": [N, H, W]}`` (0.0 / 1.0, float32) plus
        ``"edges"`` ``[N, H, W]`` (values in ``[0, 1]``) when ``edges`` is given: the ``masks`` of
        :func:`~rskd_tutorial.spectral.band_energy_concentration`.

    Taught in chapter 1 (section 3).
    """
    n = len(targets)
    boxes_m, small_m = torch.zeros(n, *grid_hw), torch.zeros(n, *grid_hw)
    for i, t in enumerate(targets):  # a loop over images; each image's boxes are vectorised
        b = t["boxes"]
        if len(b):
            inside, _ = box_footprints(b, grid_hw, batch_hw)
            boxes_m[i] = inside.any(0).to(boxes_m.device)
            small_m[i] = inside[(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) < small_area].any(0).to(small_m.device)
    out = {"all boxes": boxes_m, "small boxes": small_m}
    if edges is not None:
        if edges.dim() != 3 or edges.shape[0] != n:
            raise ValueError(f"edges must be [N={n}, H, W], got shape {tuple(edges.shape)}")
        out["edges"] = F.adaptive_avg_pool2d(edges[:, None], grid_hw)[:, 0]
    return out
