"""Baseline feature- and logit-distillation losses: the comparison rows of every paper's table.

All follow the Distiller protocol ``loss(student_out, teacher_out, targets) -> scalar`` and read FPN
(or decoder-stage) maps from ``out.taps["features"]``; a loss distils every level unless ``levels``
names some. Where student and teacher maps differ in size (cross-resolution, chapter 5) the student
map is bilinearly resized to the teacher's; where channels differ a 1x1 adapter is learned.

* :class:`FitNetLoss` -- Romero et al., "FitNets", ICLR 2015, Eq. 3: MSE after a 1x1 regressor.
* :class:`ATLoss` -- Zagoruyko & Komodakis, "Paying more attention to attention", ICLR 2017, Eq. 2.
* :class:`CWDLoss` -- Shu et al., "Channel-wise knowledge distillation for dense prediction",
  ICCV 2021, Eq. 3.
* :class:`FGDLoss` -- Yang et al., "Focal and global knowledge distillation for detectors", CVPR 2022,
  Eqs. 6-11.
* :class:`MGDLoss` -- Yang et al., "Masked generative distillation", ECCV 2022, Eqs. 1-3.
* :class:`PKDLoss` -- Cao et al., "PKD: general distillation framework for object detectors via
  Pearson correlation coefficient", NeurIPS 2022, Eq. 5.
* :class:`LogitKDLoss` -- Hinton et al. 2015 soft targets, for RetinaNet's sigmoid classifier.

Taught in chapter 0 (``book/00_distilling_a_detector.ipynb``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rskd_tutorial.distill.masks import attention_maps, box_scale_masks
from rskd_tutorial.models.outputs import ModelOutput

Channels = int | Mapping[str, int]


def paired_features(s_out: ModelOutput, t_out: ModelOutput,
                    levels: Sequence[str] | None = None) -> list[tuple[str, Tensor, Tensor]]:
    """``(level, student map, teacher map)`` for each distilled level; the student map is resized
    bilinearly to the teacher's size when they differ. Raises a clear error for a missing level."""
    s_feats, t_feats = s_out.taps["features"], t_out.taps["features"]
    names = list(levels) if levels is not None else list(t_feats)
    pairs = []
    for name in names:
        if name not in s_feats or name not in t_feats:
            raise KeyError(f"feature level {name!r} missing: student has {list(s_feats)}, teacher has {list(t_feats)}")
        s, t = s_feats[name], t_feats[name]
        if s.shape[-2:] != t.shape[-2:]:
            s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        pairs.append((name, s, t))
    return pairs


def _channels(spec: Channels, level: str) -> int:
    return spec[level] if isinstance(spec, Mapping) else int(spec)


def _adapters(levels: Sequence[str], cs: Channels, ct: Channels, always: bool) -> nn.ModuleDict:
    """A 1x1 conv per level mapping student to teacher channels (identity when equal and not ``always``)."""
    mods = {}
    for lv in levels:
        a, b = _channels(cs, lv), _channels(ct, lv)
        mods[lv] = nn.Conv2d(a, b, 1) if (always or a != b) else nn.Identity()
    return nn.ModuleDict(mods)


class FitNetLoss(nn.Module):
    """FitNet hint loss (Romero et al. 2015, Eq. 3): ``sum_l mean (r_l(F_S^l) - F_T^l)^2``.

    Args:
        levels: feature levels to distil (all must exist in both models' taps).
        student_channels, teacher_channels: per level (an int applies to all levels).
    """

    def __init__(self, levels: Sequence[str], student_channels: Channels, teacher_channels: Channels):
        super().__init__()
        self.levels = list(levels)
        self.adapters = _adapters(self.levels, student_channels, teacher_channels, always=True)

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        total = 0.0
        for lv, s, t in paired_features(s_out, t_out, self.levels):
            total = total + F.mse_loss(self.adapters[lv](s).float(), t.float())
        return total


def attention_map(feat: Tensor, p: float = 2.0) -> Tensor:
    """AT's spatial attention (Zagoruyko & Komodakis 2017, Eq. 1): ``mean_c |F|^p``, L2-normalised
    over positions, ``[N, H*W]``."""
    return F.normalize(feat.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


class ATLoss(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis 2017, Eq. 2):
    ``sum_l mean_{n,ij} (Q_S^l - Q_T^l)^2`` with ``Q = attention_map(F)`` (channel counts may differ)."""

    def __init__(self, levels: Sequence[str] | None = None, p: float = 2.0):
        super().__init__()
        self.levels = levels
        self.p = p

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        total = 0.0
        for _, s, t in paired_features(s_out, t_out, self.levels):
            total = total + (attention_map(s, self.p) - attention_map(t, self.p)).pow(2).mean()
        return total


def channel_log_distribution(feat: Tensor, tau: float = 1.0) -> Tensor:
    """CWD's ``phi`` (Shu et al. 2021, Eq. 2) in log space: each channel of ``feat / tau`` as a
    distribution over its H*W positions, ``log softmax`` -> ``[N, C, H*W]`` in float32."""
    return torch.log_softmax(feat.float().flatten(2) / tau, dim=2)


class CWDLoss(nn.Module):
    """Channel-wise distillation (Shu et al. 2021, Eq. 3): each channel becomes a distribution over
    positions, ``phi(y_c) = softmax(y_c / tau)``, and

    ``L = tau^2 / (N C) * sum_{n,c} KL(phi(y^T_{n,c}) || phi(y^S_{n,c}))``, summed over levels.
    """

    def __init__(self, levels: Sequence[str], student_channels: Channels, teacher_channels: Channels,
                 tau: float = 1.0):
        super().__init__()
        self.levels = list(levels)
        self.tau = tau
        self.adapters = _adapters(self.levels, student_channels, teacher_channels, always=False)

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        total = 0.0
        for lv, s, t in paired_features(s_out, t_out, self.levels):
            log_s = channel_log_distribution(self.adapters[lv](s), self.tau)    # [N, C, HW]
            log_t = channel_log_distribution(t, self.tau)
            kl = (log_t.exp() * (log_t - log_s)).sum(dim=2)                     # KL(phi_T || phi_S)
            total = total + self.tau ** 2 * kl.mean()
        return total


class _GlobalContext(nn.Module):
    """GcBlock (Cao et al. 2019) as FGD uses it: attention-pooled context added back per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.mask = nn.Conv2d(channels, 1, 1)
        hidden = max(channels // 2, 1)
        self.transform = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.LayerNorm([hidden, 1, 1]),
                                       nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        weights = torch.softmax(self.mask(x).reshape(n, 1, h * w), dim=2)            # [N, 1, HW]
        context = torch.bmm(x.reshape(n, c, h * w), weights.transpose(1, 2))         # [N, C, 1]
        return x + self.transform(context.reshape(n, c, 1, 1))


class FGDLoss(nn.Module):
    """Focal and global distillation (Yang et al. 2022), per level:

    * focal (Eq. 6): ``alpha sum M^fg A^S A^C (F_T - F_S)^2 + beta sum M^bg A^S A^C (F_T - F_S)^2``,
      with the teacher's attention (:func:`~rskd_tutorial.distill.masks.attention_maps`) and the
      scale masks of :func:`~rskd_tutorial.distill.masks.box_scale_masks`;
    * attention (Eq. 8): ``gamma (sum |A^S_T - A^S_S| + sum |A^C_T - A^C_S|)``;
    * global (Eq. 10): ``lambda sum (GC_T(F_T) - GC_S(F_S))^2`` with two GcBlocks;

    every sum divided by the batch size, summed over levels. Defaults are FGD's RetinaNet config
    (tau 0.5, alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6); its Faster R-CNN config uses
    alpha 5e-5, beta 2.5e-5, gamma 5e-5, lambda 5e-7. Boxes come from the student's resized targets.
    """

    def __init__(self, levels: Sequence[str], channels: int, *, tau: float = 0.5, alpha: float = 1e-3,
                 beta: float = 5e-4, gamma: float = 5e-4, lam: float = 5e-6):
        super().__init__()
        self.levels = list(levels)
        self.tau, self.alpha, self.beta, self.gamma, self.lam = tau, alpha, beta, gamma, lam
        self.context_s = nn.ModuleDict({lv: _GlobalContext(channels) for lv in self.levels})
        self.context_t = nn.ModuleDict({lv: _GlobalContext(channels) for lv in self.levels})
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        boxes = [t["boxes"] for t in s_out.taps["targets"]]
        batch_hw = s_out.taps["batch_hw"]
        terms = {"fg": 0.0, "bg": 0.0, "attention": 0.0, "global": 0.0}
        for lv, s, t in paired_features(s_out, t_out, self.levels):
            s, t = s.float(), t.float()
            n = s.shape[0]
            fg, bg = box_scale_masks(boxes, tuple(s.shape[-2:]), batch_hw)
            sp_t, ch_t = attention_maps(t, self.tau)
            sp_s, ch_s = attention_maps(s, self.tau)
            sq = (s - t).pow(2) * sp_t * ch_t
            terms["fg"] = terms["fg"] + (sq * fg).sum() / n
            terms["bg"] = terms["bg"] + (sq * bg).sum() / n
            terms["attention"] = terms["attention"] + ((sp_t - sp_s).abs().sum() + (ch_t - ch_s).abs().sum()) / n
            terms["global"] = terms["global"] + (self.context_s[lv](s) - self.context_t[lv](t)).pow(2).sum() / n
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return (self.alpha * terms["fg"] + self.beta * terms["bg"] + self.gamma * terms["attention"]
                + self.lam * terms["global"])


class MGDLoss(nn.Module):
    """Masked generative distillation (Yang et al. 2022): drop a random ``mask_ratio`` of the student's
    positions, regenerate the teacher feature with ``G = conv3x3 -> ReLU -> conv3x3`` and penalise
    ``alpha / N * sum (G(f(F_S) * M) - F_T)^2`` (Eqs. 1-3), summed over levels. Defaults: MGD's
    detection config (alpha 2e-5, mask ratio 0.65)."""

    def __init__(self, levels: Sequence[str], student_channels: Channels, teacher_channels: Channels, *,
                 alpha: float = 2e-5, mask_ratio: float = 0.65):
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.levels = list(levels)
        self.alpha, self.mask_ratio = alpha, mask_ratio
        self.adapters = _adapters(self.levels, student_channels, teacher_channels, always=False)
        self.generators = nn.ModuleDict({
            lv: nn.Sequential(nn.Conv2d(_channels(teacher_channels, lv), _channels(teacher_channels, lv), 3, padding=1),
                              nn.ReLU(inplace=True),
                              nn.Conv2d(_channels(teacher_channels, lv), _channels(teacher_channels, lv), 3, padding=1))
            for lv in self.levels
        })

    def random_mask(self, n: int, h: int, w: int, device: torch.device | str | None = None) -> Tensor:
        """MGD's random mask (Eq. 2), ``[n, 1, h, w]`` bool: a position is kept (True) unless its
        uniform draw falls below ``mask_ratio``; one mask per image, shared by all channels."""
        return torch.rand(n, 1, h, w, device=device) >= self.mask_ratio

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        total = 0.0
        for lv, s, t in paired_features(s_out, t_out, self.levels):
            s = self.adapters[lv](s)
            n, _, h, w = s.shape
            keep = self.random_mask(n, h, w, s.device).to(s.dtype)
            total = total + (self.generators[lv](s * keep).float() - t.float()).pow(2).sum() / n
        return self.alpha * total


def pearson_normalize(feat: Tensor, eps: float = 1e-6) -> Tensor:
    """PKD's normalisation: each channel to zero mean and unit variance over batch and positions."""
    x = feat.float()
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


class PKDLoss(nn.Module):
    """PKD (Cao et al. 2022, Eq. 5): ``sum_l 1/2 mean (norm(F_S) - norm(F_T))^2``, equal to
    ``1 - r`` (Pearson correlation) per channel, averaged. Channel counts must match."""

    def __init__(self, levels: Sequence[str] | None = None):
        super().__init__()
        self.levels = levels

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        total = 0.0
        for _, s, t in paired_features(s_out, t_out, self.levels):
            total = total + 0.5 * F.mse_loss(pearson_normalize(s), pearson_normalize(t))
        return total


class LogitKDLoss(nn.Module):
    """Soft-target KD on RetinaNet's sigmoid classifier (Hinton et al. 2015 with per-class sigmoids):

    ``T^2 * mean_anchors sum_k KL(Bern(sigmoid(z_T / T)) || Bern(sigmoid(z_S / T)))`` (the soft-target
    BCE minus the teacher's entropy, so it is zero when the logits agree), where ``z_T`` comes from
    the frozen teacher head run on the teacher's FPN taps (given at construction, so no model is run
    twice) and ``z_S`` from the student's taps.
    """

    def __init__(self, teacher_head: nn.Module, temperature: float = 1.0):
        super().__init__()
        from rskd_tutorial.models.utils import freeze

        self.teacher_head = freeze(teacher_head)
        self.temperature = temperature

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        z_s = s_out.taps.get("cls_logits")
        if z_s is None:
            raise KeyError("LogitKDLoss needs RetinaNet taps ('cls_logits'); the student is not a RetinaNet")
        with torch.no_grad():
            z_t = self.teacher_head(list(t_out.taps["features"].values()))["cls_logits"]
        temp = self.temperature
        z_t = z_t.float() / temp
        p_t = torch.sigmoid(z_t)
        cross = F.binary_cross_entropy_with_logits(z_s.float() / temp, p_t, reduction="none")
        entropy = F.binary_cross_entropy_with_logits(z_t, p_t, reduction="none")
        return temp ** 2 * (cross - entropy).sum(dim=-1).mean()
