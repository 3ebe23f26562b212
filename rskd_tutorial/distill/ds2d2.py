"""DS2D2: dual-stream spectral decoupling distillation (Gao et al., IEEE TGRS 63:5639711, 2025).

Official code: ``PolarAid/DS2D2`` (MMDetection 3.3), files
``mmdet/models/distillation/ds2d2_{retinanet,faster_rcnn}{,_amplifier}.py``. Only the paper's
abstract and the repository's README were available to us; every mechanic here follows the official
code, which is complete.

Both streams act on the FPN outputs of every level (Faster R-CNN P2-P6, RetinaNet P3-P7) after a
one-level Haar DWT (:func:`~rskd_tutorial.spectral.haar_dwt`, ``mode="zero"``):

**Explicit stream** (official ``DS2D2.explicit``) -- feature imitation band by band, weighted per
location by the density-independent scale weight :func:`disw`:

.. math::
    \\mathcal L^{low}_{exp} = \\sum_l \\operatorname{mean}\\big[\\Omega^l (LL(\\phi F^l_S) - LL(F^l_T))^2\\big],\\qquad
    \\mathcal L^{high}_{exp} = \\sum_l \\operatorname{mean}\\big[\\Omega^l (D(\\phi F^l_S) - D(F^l_T))^2\\big]

with one shared bias-free 1x1 conv ``phi`` (:class:`DS2D2ExplicitLoss`).

**Implicit stream** (official ``DS2D2.implicit``) -- student and teacher features go through the
*same* frozen head (an "amplifier") and the predictions are matched. The full-frequency amplifier
is the teacher's own head fed with ``F``; the high-frequency amplifier is a teacher-architecture
head re-trained on ``H(F)`` (:func:`~rskd_tutorial.spectral.high_frequency_map`; the training stage is
``rskd_tutorial.recipes.ds2d2.train_amplifier``), fed with ``H(F)``:

* RetinaNet (:class:`DS2D2RetinaNetImplicitLoss`): quality-focal KD on the class logits + GIoU on the
  decoded boxes weighted by teacher confidence, both over ``N_pos``;
* Faster R-CNN (:class:`DS2D2FasterRCNNImplicitLoss`): RoI-level KL (T = 3, x0.5, summed over RoIs)
  on RoIs sampled from the student's proposals + confidence-weighted L1 on the teacher's class
  deltas.

**Total**: ``L_det + l1 L_exp^low + l2 L_exp^high + l3 L_imp^full + l4 L_imp^high``.
Here the four terms are four Distiller terms named ``explicit_low``, ``explicit_high``,
``implicit_full``, ``implicit_high`` with the weights of :class:`DS2D2Weights` (official values in
:data:`OFFICIAL_WEIGHTS`), so the Distiller logs each term raw (``kd_<name>``) and weighted
(``loss_kd_<name>``). :func:`ds2d2_losses` builds them from the three detectors.

Deviations from the official code, each explained where it is made:

* DISW is built in float32 on the features' device (official: float16 on the CPU, which drops the
  weight of large objects); ``disw_dtype="float16"`` reproduces the official rounding.
* Faster R-CNN RoI sampling is seeded and, by default, one sampled RoI set serves both implicit
  terms (official: two independent unseeded samplings); see :class:`RoISampler`.
* torchvision conventions: Faster R-CNN's classifier has the background at index **0** (mmdet: last),
  its regressor has ``4 (K + 1)`` outputs (mmdet: ``4 K``); RetinaNet's head has ``K`` sigmoid logits
  (as mmdet). The formulas are adapted accordingly.

Taught in chapter 2 (``book/02_ds2d2.ipynb``).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from rskd_tutorial.devices import module_device
from rskd_tutorial.distill.masks import box_footprints, box_grid_extents
from rskd_tutorial.models.outputs import ModelOutput
from rskd_tutorial.models.utils import freeze
from rskd_tutorial.spectral import haar_dwt, high_frequency_map

__all__ = [
    "DISW_DTYPES", "DS2D2ExplicitLoss", "DS2D2FasterRCNNImplicitLoss", "DS2D2RetinaNetImplicitLoss",
    "DS2D2Weights", "OFFICIAL_WEIGHTS", "RoISampler", "TERMS", "disw", "ds2d2_losses", "explicit_band_loss",
    "giou_aligned", "quality_focal_kd", "retinanet_kd_targets", "roi_kl_kd", "roi_l1_kd",
]

TERMS = ("explicit_low", "explicit_high", "implicit_full", "implicit_high")
DISW_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_EPS = torch.finfo(torch.float32).eps     # mmdet's weight_reduce_loss adds this to every avg_factor


# ----------------------------------------------------------------------------------------------
# loss weights
# ----------------------------------------------------------------------------------------------

@dataclass
class DS2D2Weights:
    """The four loss weights of the total objective (official ``dist_cfg`` names in brackets).

    * ``explicit_low``  -- lambda_1 [``distloss_explicit_cL``]
    * ``explicit_high`` -- lambda_2 [``distloss_explicit_cH``]
    * ``implicit_full`` -- lambda_3 [``distloss_implicit_cL``]
    * ``implicit_high`` -- lambda_4 [``distloss_implicit_cH``]

    A weight of 0 drops the term (it is not computed): the ablation rows of chapter 2.
    """

    explicit_low: float
    explicit_high: float
    implicit_full: float
    implicit_high: float

    def terms(self) -> dict[str, float]:
        """The Distiller weights of the terms that are switched on (weight != 0)."""
        return {k: float(v) for k, v in asdict(self).items() if v != 0}

    def only(self, *names: str) -> DS2D2Weights:
        """The same weights with every term not in ``names`` set to 0 (``only("explicit_low",
        "explicit_high")`` is the explicit-only ablation)."""
        unknown = set(names) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown DS2D2 terms {sorted(unknown)}; terms are {TERMS}")
        return DS2D2Weights(**{k: (v if k in names else 0.0) for k, v in asdict(self).items()})


#: ``dist_cfg`` of the official student configs (``configs/distillation/ds2d2_*_r18_fpn_2x_*.py``;
#: the R34/R50 students use the same values as the R18 one of their dataset and detector).
OFFICIAL_WEIGHTS: dict[tuple[str, str], DS2D2Weights] = {
    ("faster_rcnn", "dior"): DS2D2Weights(0.5, 0.5, 1e-5, 1e-5),
    ("faster_rcnn", "dota"): DS2D2Weights(0.12, 1.2, 1.5e-3, 3e-3),
    ("retinanet", "dior"): DS2D2Weights(1e-5, 1e-5, 1.0, 1.0),
    ("retinanet", "dota"): DS2D2Weights(7e-5, 5e-5, 0.7, 0.5),
}


# ----------------------------------------------------------------------------------------------
# DISW
# ----------------------------------------------------------------------------------------------

def disw(boxes_per_image: Sequence[Tensor], grid_hw: tuple[int, int], input_hw: tuple[int, int], *,
         dtype: torch.dtype | str = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Density-independent scale weight (DISW) on one ``grid_hw`` grid, ``[B, 1, h, w]``.

    .. math::
        \\Omega_{b,i,j} = 1 + \\sum_{g \\in \\mathcal G_b} \\frac{\\mathbb 1[(i, j) \\in \\mathrm{cells}(g)]}{A_g}

    Background weighs 1; every object adds a total mass of exactly 1 spread over the ``A_g`` cells of
    its footprint (so a small object gets a large weight per cell); overlapping objects *accumulate*
    (no max, no normalisation), so crowded regions are not down-weighted -- "density-independent".
    Cells: ``floor`` of the scaled start, ``ceil`` of the scaled end, clamped, inclusive, with the
    scale ``grid / input_hw`` where ``input_hw`` is the **padded batch size** (``taps["batch_hw"]``)
    and ``grid_hw`` the DWT grid (:func:`~rskd_tutorial.distill.masks.box_grid_extents`).

    Args:
        boxes_per_image: per image ``[n_b, 4]`` xyxy boxes in resized-image pixels (may be empty).
        grid_hw: ``(h, w)`` of the map the weight multiplies (DS2D2: the LL band of a level).
        input_hw: the padded batch size ``(H_in, W_in)``.
        dtype: ``float32`` (default, exact) or ``float16``: the official construction, which adds
            ``1/A_g`` box after box into a float16 map. ``1 + 1/A`` rounds to 1 once ``A >= 2048``
            cells and is quantised in steps of ~0.001 below, so large objects at fine levels lose
            their weight; that mode exists only to reproduce the official numbers (it loops over
            the boxes of an image, because the rounding depends on their order).
        device: where to build the map (default: the boxes' device).

    Returns:
        float32 ``[B, 1, h, w]`` (broadcast over channels and bands; never full channel width).

    Taught in chapter 2 (``book/02_ds2d2.ipynb``).
    """
    if isinstance(dtype, str):
        if dtype not in DISW_DTYPES:
            raise ValueError(f"disw dtype must be one of {list(DISW_DTYPES)}, got {dtype!r}")
        dtype = DISW_DTYPES[dtype]
    h, w = int(grid_hw[0]), int(grid_hw[1])
    n_img = len(boxes_per_image)
    if device is None:
        device = boxes_per_image[0].device if n_img else torch.device("cpu")
    boxes = [b.reshape(-1, 4).to(device=device, dtype=torch.float32) for b in boxes_per_image]
    out = torch.ones(n_img, h, w, device=device)
    counts = [len(b) for b in boxes]
    if sum(counts) == 0:
        return out[:, None]
    if dtype == torch.float16:
        return _disw_float16(boxes, (h, w), input_hw, device)[:, None]
    if dtype != torch.float32:
        raise ValueError(f"disw dtype must be float32 or float16, got {dtype}")
    all_boxes = torch.cat(boxes)
    image_of = torch.repeat_interleave(torch.arange(n_img, device=device), torch.tensor(counts, device=device))
    inside, area = box_footprints(all_boxes, (h, w), input_hw)                 # [N, h, w], [N]
    out.index_add_(0, image_of, inside.float() / area[:, None, None])
    return out[:, None]


def _disw_float16(boxes: list[Tensor], grid_hw: tuple[int, int], input_hw: tuple[int, int],
                  device: torch.device) -> Tensor:
    """The official float16 accumulation (built on the CPU there), box by box in annotation order:
    ``w <- fp16(w + 1/A)`` on the box's cells. Vectorised over images, looped over the box rank."""
    h, w = grid_hw
    acc = torch.ones(len(boxes), h, w, dtype=torch.float16, device=device)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    for k in range(max(len(b) for b in boxes)):
        has = [b.shape[0] > k for b in boxes]
        idx = [i for i, ok in enumerate(has) if ok]
        ext = box_grid_extents(torch.stack([boxes[i][k] for i in idx]), grid_hw, input_hw)    # [m, 4]
        area = ((ext[:, 2] - ext[:, 0] + 1) * (ext[:, 3] - ext[:, 1] + 1)).double()
        inc = (1.0 / area).float()                                     # official: a Python float
        inside = (((rows[None, :] >= ext[:, 1:2]) & (rows[None, :] <= ext[:, 3:4]))[:, :, None]
                  & ((cols[None, :] >= ext[:, 0:1]) & (cols[None, :] <= ext[:, 2:3]))[:, None, :])
        sel = acc[idx]
        acc[idx] = torch.where(inside, (sel.float() + inc[:, None, None]).half(), sel)
    return acc.float()


# ----------------------------------------------------------------------------------------------
# explicit stream
# ----------------------------------------------------------------------------------------------

def explicit_band_loss(student: Tensor, teacher: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One level of the explicit stream: ``(low, high)`` with

    ``low = mean[W (LL_S - LL_T)^2]`` over ``B C h w`` and ``high = mean[W (D_S - D_T)^2]`` over
    ``B C 3 h w``, one-level Haar DWT in ``mode="zero"`` of both maps (the student map already adapted),
    computed in float32. ``weight`` is ``[B, 1, h, w]`` (e.g. :func:`disw`), ``None`` = uniform 1.

    For even sizes and a uniform weight, Parseval's identity of the orthonormal Haar transform gives
    ``(low + 3 high) / 4 == mean (F_S - F_T)^2`` (the spatial MSE; a unit test checks it).
    """
    ll_s, (d_s,) = haar_dwt(student.float(), levels=1, mode="zero")
    with torch.no_grad():
        ll_t, (d_t,) = haar_dwt(teacher.detach().float(), levels=1, mode="zero")
    sq_low = (ll_s - ll_t).pow(2)
    sq_high = (d_s - d_t).pow(2)
    if weight is None:
        return sq_low.mean(), sq_high.mean()
    weight = weight.float()
    # the weight broadcasts over channels (and bands); the means still run over every element
    low = (sq_low * weight).sum() / sq_low.numel()
    high = (sq_high * weight[:, :, None]).sum() / sq_high.numel()
    return low, high


class DS2D2ExplicitLoss(nn.Module):
    """One band of DS2D2's explicit stream, summed over FPN levels (official ``DS2D2.explicit`` +
    ``transform_bboxes``).

    ``band="low"`` gives ``L_exp^low``, ``band="high"`` ``L_exp^high``. The two terms share one
    adapter ``phi`` (a bias-free 1x1 conv, the *same* for every level, PyTorch default init): build the
    pair with :meth:`pair`, or pass the same ``adapter`` to both. The DISW map is built on the DWT
    grid of each level from the student's resized targets and the padded batch size.

    Args:
        adapter: the shared 1x1 conv (``nn.Conv2d(C, C, 1, bias=False)``), or ``None`` to create one.
        band: ``"low"`` (LL) or ``"high"`` (the three detail bands).
        channels: FPN width, used when ``adapter`` is ``None``.
        levels: FPN levels (default: all of them).
        disw_dtype: ``"float32"`` (ours) or ``"float16"`` (the official rounding), see :func:`disw`.
        use_disw: ``False`` replaces DISW by a uniform weight (an exercise of chapter 2).

    Taught in chapter 2 (``book/02_ds2d2.ipynb``).
    """

    def __init__(self, adapter: nn.Module | None = None, *, band: str = "low", channels: int | None = None,
                 levels: Sequence[str] | None = None, disw_dtype: str = "float32", use_disw: bool = True):
        super().__init__()
        if band not in ("low", "high"):
            raise ValueError(f"band must be 'low' or 'high', got {band!r}")
        if disw_dtype not in DISW_DTYPES:
            raise ValueError(f"disw_dtype must be one of {list(DISW_DTYPES)}, got {disw_dtype!r}")
        if adapter is None:
            if channels is None:
                raise ValueError("DS2D2ExplicitLoss needs an adapter or the channel count")
            adapter = nn.Conv2d(channels, channels, 1, bias=False)
        self.adapter = adapter
        self.band = band
        self.levels = list(levels) if levels is not None else None
        self.disw_dtype = disw_dtype
        self.use_disw = use_disw
        self.last_terms: dict[str, Tensor] = {}

    @classmethod
    def pair(cls, channels: int, **kwargs: Any) -> tuple[DS2D2ExplicitLoss, DS2D2ExplicitLoss]:
        """``(low, high)`` losses sharing one adapter, as in the official code."""
        adapter = nn.Conv2d(channels, channels, 1, bias=False)
        return cls(adapter, band="low", **kwargs), cls(adapter, band="high", **kwargs)

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        s_feats, t_feats = s_out.taps["features"], t_out.taps["features"]
        batch_hw = tuple(s_out.taps["batch_hw"])
        if tuple(t_out.taps["batch_hw"]) != batch_hw:
            raise ValueError(f"student and teacher saw different batch sizes: {batch_hw} vs {t_out.taps['batch_hw']} "
                             "(both detectors must resize images the same way)")
        boxes = [t["boxes"] for t in s_out.taps["targets"]]
        total, per_level = 0.0, {}
        for lv in (self.levels or list(t_feats)):
            s, t = s_feats[lv], t_feats[lv]
            h, w = math.ceil(s.shape[-2] / 2), math.ceil(s.shape[-1] / 2)
            weight = disw(boxes, (h, w), batch_hw, dtype=self.disw_dtype, device=s.device) if self.use_disw else None
            low, high = explicit_band_loss(self.adapter(s), t, weight)
            value = low if self.band == "low" else high
            per_level[lv] = value.detach()
            total = total + value
        self.last_terms = per_level
        return total


# ----------------------------------------------------------------------------------------------
# implicit stream: RetinaNet
# ----------------------------------------------------------------------------------------------

def quality_focal_kd(z_s: Tensor, z_t: Tensor, weight: Tensor, avg_factor: Tensor | float, beta: float = 1.0) -> Tensor:
    """Quality-focal KD of sigmoid logits (official ``KD_QualityFocalLoss``):

    ``sum_a w_a sum_k BCE(sigma(z_S), sigma(z_T)) |sigma(z_S) - sigma(z_T)|^beta / (avg_factor + eps)``

    ``z_s``, ``z_t``: ``[N, K]`` logits (the teacher's are detached); ``weight``: ``[N]`` anchor weights.
    The BCE is taken on the student *logits*; the focal factor is not detached (as in the code).
    """
    z_s = z_s.float()
    p_t = torch.sigmoid(z_t.detach().float())
    loss = F.binary_cross_entropy_with_logits(z_s, p_t, reduction="none")
    loss = loss * (torch.sigmoid(z_s) - p_t).abs().pow(beta)
    return (loss * weight.float()[:, None]).sum() / (avg_factor + _EPS)


def giou_aligned(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """Generalised IoU of aligned xyxy box pairs ``[N, 4]``, as mmdet's ``bbox_overlaps(mode='giou',
    is_aligned=True, eps=1e-6)`` computes it (union and enclosing area floored at ``eps``)."""
    a, b = a.float(), b.float()
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = (area_a + area_b - overlap).clamp(min=eps)
    enclose = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0)
    enclose_area = (enclose[:, 0] * enclose[:, 1]).clamp(min=eps)
    return overlap / union - (enclose_area - union) / enclose_area


def retinanet_kd_targets(anchors: Sequence[Tensor], gt_boxes: Sequence[Tensor], matcher: Any,
                         image_sizes: Sequence[tuple[int, int]], level_shapes: Sequence[tuple[int, int]],
                         strides: Sequence[int], num_anchors: int, pad_divisor: int = 32) -> tuple[Tensor, Tensor]:
    """Anchor weights ``omega`` ``[B, A_total]`` and ``N_pos`` of the RetinaNet implicit stream
    (the student head's ``get_targets``, as in the official code).

    ``omega_a = 1`` for positive and negative anchors, 0 for ignored ones (IoU in [0.4, 0.5) for the
    papers' assigner; torchvision's ``Matcher`` marks them -2) and for anchors outside the image's own
    ``pad_divisor``-padded area (mmdet's valid flags: grid cells with ``y < ceil(pad_h / stride)``).
    ``N_pos = sum_b max(n_pos_b, 1)`` (mmdet's PseudoSampler counts each image as at least one positive).
    """
    weights, n_pos = [], []
    device = anchors[0].device
    for b, (anc, gt) in enumerate(zip(anchors, gt_boxes)):
        if gt.numel() == 0:
            matched = torch.full((anc.shape[0],), -1, dtype=torch.long, device=device)
        else:
            matched = matcher(box_iou(gt.float(), anc.float()))
        ph = math.ceil(image_sizes[b][0] / pad_divisor) * pad_divisor
        pw = math.ceil(image_sizes[b][1] / pad_divisor) * pad_divisor
        valid = []
        for (fh, fw), s in zip(level_shapes, strides):
            vh, vw = min(math.ceil(ph / s), fh), min(math.ceil(pw / s), fw)
            grid = (torch.arange(fh, device=device)[:, None] < vh) & (torch.arange(fw, device=device)[None, :] < vw)
            valid.append(grid[:, :, None].expand(fh, fw, num_anchors).reshape(-1))
        valid = torch.cat(valid)
        weights.append(((matched != -2) & valid).float())
        n_pos.append(max(int((matched >= 0).sum()), 1))
    return torch.stack(weights), torch.tensor(float(sum(n_pos)), device=device)


def head_inputs(feats: Mapping[str, Tensor], high_frequency: bool) -> list[Tensor]:
    """The FPN maps a frozen implicit head reads: as they are (teacher head) or as H(F) (the amplifier; ``spectral.high_frequency_map``)."""
    maps = list(feats.values())
    return [high_frequency_map(f) for f in maps] if high_frequency else maps


class DS2D2RetinaNetImplicitLoss(nn.Module):
    """One amplifier term of DS2D2's implicit stream for RetinaNet (official ``DS2D2.implicit``
    in ``ds2d2_retinanet.py``).

    The frozen ``head`` (the teacher's RetinaNet head = full-frequency amplifier, or the trained
    high-frequency amplifier's head with ``high_frequency=True``, which then sees ``H(F)``) is run on
    the student's and on the teacher's FPN maps. With the student head's anchors, assigner and box
    coder:

    .. math::
        \\mathcal L_{cls} = \\frac1{N_{pos}}\\sum_a \\omega_a \\sum_k \\mathrm{BCE}(\\sigma z_S, \\sigma z_T)\\,|\\sigma z_S - \\sigma z_T|^{\\beta},\\qquad
        \\mathcal L_{reg} = \\frac1{N_{pos}}\\sum_a \\sigma(\\max_k z_{T})\\,(1 - \\mathrm{GIoU}(b_S, b_T))

    and the term is ``L_cls + L_reg``. The regression sum runs over *all* anchors (as the code).
    Student maps pass through the head *with* gradient (its parameters are frozen); the teacher's
    under ``no_grad``.

    Args:
        head: torchvision ``RetinaNetHead`` (frozen here with ``models.utils.freeze``).
        high_frequency: feed ``high_frequency_map`` of both feature sets (the HF amplifier term).
        matcher, box_coder: the student RetinaNet's ``proposal_matcher`` and ``box_coder``.
        strides: FPN strides of P3-P7 (for the anchor valid flags).
        beta: focal exponent of the QFL-KD (official 1).

    Deviation (tiny): torchvision's box decoder clamps ``dw, dh`` only from above
    (``log(1000/16)``), mmdet's from both sides.
    """

    def __init__(self, head: nn.Module, *, high_frequency: bool, matcher: Any, box_coder: Any,
                 strides: Sequence[int] = (8, 16, 32, 64, 128), beta: float = 1.0):
        super().__init__()
        self.head = freeze(head)
        self.high_frequency = high_frequency
        self.matcher = matcher
        self.box_coder = box_coder
        self.strides = tuple(strides)
        self.beta = beta
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        taps = s_out.taps
        if "anchors" not in taps:
            raise KeyError("DS2D2RetinaNetImplicitLoss needs RetinaNet student taps ('anchors'); run the student "
                           "in training mode with targets")
        self.head.eval()
        out_s = self.head(head_inputs(taps["features"], self.high_frequency))
        with torch.no_grad():
            out_t = self.head(head_inputs(t_out.taps["features"], self.high_frequency))
        z_s, z_t = out_s["cls_logits"].float(), out_t["cls_logits"].detach().float()
        r_s, r_t = out_s["bbox_regression"].float(), out_t["bbox_regression"].detach().float()
        n_img, n_anchor, k = z_s.shape
        shapes = [tuple(f.shape[-2:]) for f in taps["features"].values()]
        num_anchors = n_anchor // sum(h * w for h, w in shapes)
        with torch.no_grad():
            omega, n_pos = retinanet_kd_targets(
                taps["anchors"], [t["boxes"] for t in taps["targets"]], self.matcher, taps["image_sizes"],
                shapes, self.strides, num_anchors)
        cls = quality_focal_kd(z_s.reshape(-1, k), z_t.reshape(-1, k), omega.reshape(-1), n_pos, self.beta)
        anchors = torch.stack(list(taps["anchors"])).reshape(-1, 4).float()
        b_s = self.box_coder.decode_single(r_s.reshape(-1, 4), anchors)
        b_t = self.box_coder.decode_single(r_t.reshape(-1, 4), anchors)
        w_reg = torch.sigmoid(z_t.reshape(-1, k).max(dim=1).values)
        reg = (w_reg * (1 - giou_aligned(b_s, b_t))).sum() / (n_pos + _EPS)
        self.last_terms = {"cls": cls.detach(), "reg": reg.detach(), "n_pos": n_pos.detach()}
        return cls + reg


# ----------------------------------------------------------------------------------------------
# implicit stream: Faster R-CNN
# ----------------------------------------------------------------------------------------------

def roi_kl_kd(z_s: Tensor, z_t: Tensor, temperature: float = 3.0, weight: float = 0.5) -> Tensor:
    """RoI classification KD (official ``KD_KLDivLoss(class_reduction='sum', T=3, loss_weight=0.5)``
    called with the RoI count as its weight, which turns its mean into a sum over RoIs):

    ``weight * sum_r T^2 sum_k p_T^k (log p_T^k - log p_S^k)``, ``p = softmax(z / T)`` over all
    ``K + 1`` classes (background included; its index does not matter). A **sum** over RoIs.
    """
    log_p_s = F.log_softmax(z_s.float() / temperature, dim=1)
    log_p_t = F.log_softmax(z_t.detach().float() / temperature, dim=1)   # exact zero when the logits agree
    return weight * temperature ** 2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum()


def roi_l1_kd(deltas_s: Tensor, deltas_t: Tensor, z_t: Tensor, background: int = 0) -> Tensor:
    """Confidence-weighted L1 on the teacher's class deltas:

    ``sum_r q_r |d_S^{k*} - d_T^{k*}|_1 / (4 sum_r q_r + eps)`` with ``q_r, k*_r`` the max and
    arg-max of ``softmax(z_T)`` over the *foreground* classes (softmax over all ``K + 1``, T = 1).

    ``deltas_*``: ``[N, 4 (K + 1)]`` (torchvision, background column at ``background``) or ``[N, 4]``
    (class-agnostic: used as is). ``background``: index of the background class (torchvision 0,
    mmdet ``K``).
    """
    probs = F.softmax(z_t.detach().float(), dim=1)
    n, c = probs.shape
    fg = torch.ones(c, dtype=torch.bool, device=probs.device)
    fg[background] = False
    fg_idx = torch.arange(c, device=probs.device)[fg]
    q, k = probs[:, fg].max(dim=1)
    cls = fg_idx[k]
    d_s, d_t = deltas_s.float(), deltas_t.detach().float()
    if d_s.shape[1] != 4:
        d_s = d_s.reshape(n, -1, 4)[torch.arange(n, device=d_s.device), cls]
        d_t = d_t.reshape(n, -1, 4)[torch.arange(n, device=d_t.device), cls]
    return (q[:, None] * (d_s - d_t).abs()).sum() / (4 * q.sum() + _EPS)


class RoISampler(nn.Module):
    """Samples the RoIs of the Faster R-CNN implicit stream from the student's proposals
    (as the official code does): GT boxes added, MaxIoU 0.5/0.5 assignment and 512 RoIs a image with
    25 % positives -- the student RoI head's own ``select_training_samples``.

    Deviation, and why: the official code re-samples inside each implicit call with the global RNG,
    so the two implicit terms see different RoI sets and adding KD shifts the random stream of the
    student's own RoI sampling. Here the sampling runs on a forked RNG seeded from ``seed`` and a
    call counter (a buffer, so a resumed run continues the same sequence), leaving the global stream
    untouched; with ``shared=True`` (default) both implicit terms use the *same* sampled set in a
    step (lower variance, same expectation); ``shared=False`` draws one set per term, as the code.

    The student's RoI head is held by reference, not registered as a sub-module.
    """

    def __init__(self, student_roi_heads: nn.Module, *, seed: int = 0, shared: bool = True):
        super().__init__()
        self._heads = (student_roi_heads,)            # a tuple: not a registered sub-module
        self.seed = int(seed)
        self.shared = shared
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self._cache: tuple[Any, list[Tensor]] | None = None

    def forward(self, s_out: ModelOutput) -> list[Tensor]:
        """Per image ``[n_i, 4]`` RoIs (resized-image pixels, no gradient) for the call ``s_out``."""
        if self.shared and self._cache is not None and self._cache[0]() is s_out:
            return self._cache[1]
        heads = self._heads[0]
        proposals = [p.detach() for p in s_out.taps["proposals"]]
        tgts = [{"boxes": t["boxes"], "labels": t["labels"]} for t in s_out.taps["targets"]]
        seed = (self.seed * 1_000_003 + int(self.calls) * 7919 + _rank() * 104_729) % (2 ** 63 - 1)
        self.calls += 1
        device = proposals[0].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            rois, _, _, _ = heads.select_training_samples(proposals, tgts)
        rois = [r.detach() for r in rois]
        self._cache = (weakref.ref(s_out), rois)
        return rois


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def roi_head_outputs(roi_heads: nn.Module, feats: Mapping[str, Tensor] | Sequence[Tensor], rois: Sequence[Tensor],
                     image_sizes: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """``(class_logits [N, K+1], box_deltas [N, 4 (K+1)])`` of a torchvision ``RoIHeads`` on given RoIs:
    RoIAlign (its multi-scale level mapping) -> two-FC box head -> predictor. ``feats`` are the FPN
    maps in level order (p2, p3, ...); they are keyed as the RoI pool expects."""
    maps = list(feats.values()) if isinstance(feats, Mapping) else list(feats)
    names = list(roi_heads.box_roi_pool.featmap_names)
    x = roi_heads.box_roi_pool(OrderedDict(zip(names, maps[:len(names)])), list(rois), list(image_sizes))
    return roi_heads.box_predictor(roi_heads.box_head(x))


class DS2D2FasterRCNNImplicitLoss(nn.Module):
    """One amplifier term of DS2D2's implicit stream for Faster R-CNN (official ``DS2D2.implicit``
    in ``ds2d2_faster_rcnn.py``).

    RoIs ``R`` are sampled from the student's proposals (:class:`RoISampler`); the frozen RoI head
    ``h`` (the teacher's = full-frequency amplifier, or the trained HF amplifier's with
    ``high_frequency=True``, fed ``H(F)``) gives ``(z, delta)`` for the student's and the teacher's
    maps on the same RoIs, and the term is

    .. math::
        0.5\\,T^2 \\sum_{r} \\mathrm{KL}\\big(\\mathrm{softmax}(z_T/T)\\,\\|\\,\\mathrm{softmax}(z_S/T)\\big)
        + \\frac{\\sum_r q_r \\|\\delta_S^{k^*_r} - \\delta_T^{k^*_r}\\|_1}{4 \\sum_r q_r + \\epsilon}

    (:func:`roi_kl_kd` + :func:`roi_l1_kd`; T = 3). The KL is a *sum* over the ~512 B RoIs, which is
    why the official weights of this stream are tiny (1e-5 on DIOR). torchvision puts background at
    index 0 of the classifier (mmdet: last) and has class-specific deltas for it too; ``q, k*`` are
    taken over the foreground columns only, as the code does.

    Args:
        roi_heads: torchvision ``RoIHeads`` of the amplifier (frozen here).
        sampler: the :class:`RoISampler` built on the *student's* RoI head (share one between the
            full- and high-frequency terms).
        high_frequency: feed ``high_frequency_map`` of both feature sets.
        temperature, cls_weight: of the KL term (official 3 and 0.5).
    """

    def __init__(self, roi_heads: nn.Module, sampler: RoISampler, *, high_frequency: bool,
                 temperature: float = 3.0, cls_weight: float = 0.5):
        super().__init__()
        self.roi_heads = freeze(roi_heads)
        self.sampler = sampler
        self.high_frequency = high_frequency
        self.temperature = temperature
        self.cls_weight = cls_weight
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        if "proposals" not in s_out.taps:
            raise KeyError("DS2D2FasterRCNNImplicitLoss needs Faster R-CNN student taps ('proposals'); run the "
                           "student in training mode with targets")
        rois = self.sampler(s_out)
        sizes = s_out.taps["image_sizes"]
        self.roi_heads.eval()
        z_s, d_s = roi_head_outputs(self.roi_heads, head_inputs(s_out.taps["features"], self.high_frequency),
                                    rois, sizes)
        with torch.no_grad():
            z_t, d_t = roi_head_outputs(self.roi_heads, head_inputs(t_out.taps["features"], self.high_frequency),
                                        rois, sizes)
        cls = roi_kl_kd(z_s, z_t, self.temperature, self.cls_weight)
        reg = roi_l1_kd(d_s, d_t, z_t, background=0)
        self.last_terms = {"cls": cls.detach(), "reg": reg.detach(),
                           "rois": torch.tensor(float(sum(len(r) for r in rois)))}
        return cls + reg


# ----------------------------------------------------------------------------------------------
# the four terms from three detectors
# ----------------------------------------------------------------------------------------------

def ds2d2_losses(student: nn.Module, teacher: nn.Module, amplifier: nn.Module | None, weights: DS2D2Weights, *,
                 temperature: float = 3.0, cls_weight: float = 0.5, qfl_beta: float = 1.0,
                 disw_dtype: str = "float32", shared_rois: bool = True, roi_seed: int = 0) -> dict[str, nn.Module]:
    """DS2D2's KD terms for a ``Distiller``: ``{name: loss}`` for every term whose weight is non-zero
    (use ``weights.terms()`` as the Distiller's weights).

    Args:
        student, teacher: :class:`~rskd_tutorial.models.detectors.Detector` of the same architecture
            and FPN width (the teacher's head is the full-frequency amplifier).
        amplifier: the trained high-frequency amplifier (a teacher-architecture ``Detector`` built
            with ``feature_transform=high_frequency_map``); only its RetinaNet head / RoI head is used
            (its RPN is discarded, as in the code). ``None`` is allowed when ``implicit_high`` is 0.
        weights: lambda_1..lambda_4 (:class:`DS2D2Weights`; e.g. ``OFFICIAL_WEIGHTS[("retinanet", "dior")]``).
        temperature, cls_weight: Faster R-CNN RoI KL (official 3, 0.5). ``qfl_beta``: RetinaNet (1).
        disw_dtype: ``"float32"`` or ``"float16"`` (official rounding). ``shared_rois``, ``roi_seed``: see
            :class:`RoISampler`.

    What the terms own (the explicit stream's adapter, the RoI sampler's call counter) is built on the
    CPU -- the adapter's initial weights do not depend on the device -- and moved to the student's
    device; the frozen heads stay where the teacher and the amplifier are (a Distiller moves them).
    """
    arch = getattr(student, "arch", None)
    if arch is None or getattr(teacher, "arch", None) != arch:
        raise ValueError(f"student and teacher must be Detectors of one architecture, got {arch!r} and "
                         f"{getattr(teacher, 'arch', None)!r}")
    on = weights.terms()
    if "implicit_high" in on and (amplifier is None or getattr(amplifier, "arch", None) != arch):
        raise ValueError("implicit_high needs the trained high-frequency amplifier (a Detector of the teacher's "
                         "architecture)")
    feats_s = student.net.backbone.out_channels
    feats_t = teacher.net.backbone.out_channels
    if feats_s != feats_t:
        raise ValueError(f"DS2D2 needs equal FPN widths (the heads are shared): student {feats_s}, teacher {feats_t}")
    losses: dict[str, nn.Module] = {}
    if "explicit_low" in on or "explicit_high" in on:
        low, high = DS2D2ExplicitLoss.pair(feats_s, disw_dtype=disw_dtype)
        _to_device_of(student, low)                   # the adapter is shared: moving one moves both
        if "explicit_low" in on:
            losses["explicit_low"] = low
        if "explicit_high" in on:
            losses["explicit_high"] = high
    heads = {"implicit_full": (teacher, False), "implicit_high": (amplifier, True)}
    if arch == "retinanet":
        for name in ("implicit_full", "implicit_high"):
            if name in on:
                det, hf = heads[name]
                losses[name] = DS2D2RetinaNetImplicitLoss(
                    det.net.head, high_frequency=hf, matcher=student.net.proposal_matcher,
                    box_coder=student.net.box_coder, strides=student.strides, beta=qfl_beta)
    else:
        sampler = _to_device_of(student, RoISampler(student.net.roi_heads, seed=roi_seed, shared=shared_rois))
        for name in ("implicit_full", "implicit_high"):
            if name in on:
                det, hf = heads[name]
                losses[name] = DS2D2FasterRCNNImplicitLoss(det.net.roi_heads, sampler, high_frequency=hf,
                                                           temperature=temperature, cls_weight=cls_weight)
    return losses


def _to_device_of(model: nn.Module, module: nn.Module) -> nn.Module:
    """``module`` moved to the device of ``model``'s parameters (as it is when ``model`` has none)."""
    device = module_device(model)
    return module.to(device) if device is not None else module
