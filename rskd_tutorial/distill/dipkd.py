"""DIPKD: dual information purification KD for SAR ship detection (Yang et al., AAAI 2025).

Paper: X. Yang, J. Sun, S. Duan, D. Cheng, "Dual Information Purification for Lightweight SAR Object
Detection", AAAI 2025. Official code: ``Mok-kn/Dip`` (an FGD-style add-on to MMDetection 2.x,
``mmdet/losses/kd.py``). Equation and table numbers below are the paper's.

Three parts act on the FPN outputs (Faster R-CNN P2-P5, RetinaNet P3-P6, as the code hooks them):

* **SNS** -- selective noise suppression (Eqs. 3-7): FGD's spatial / channel attention
  (:func:`attention_maps`, re-exported from :mod:`rskd_tutorial.distill.masks`) guides a 3-level Haar
  soft-threshold denoiser (:func:`rskd_tutorial.spectral.wavelet_denoise`); :class:`SelectiveNoiseSuppression`.
* **KLD** -- knowledge level decoupling (Eqs. 8-14): target and non-target losses, each normalised by
  its own area, with a random part of the background dropped; :func:`kld_masks`.
* **RIT** -- reverse information transfer (Eqs. 15-19): the student's detection-head scores are
  refined by a residual conv "feature matcher" into a spatial gate that is tied to the student's
  features; :class:`ReverseInformationTransfer`.

:class:`DIPKDLoss` sums them (Eqs. 14, 20): ``alpha L_tar + beta L_ntar + gamma L_rit`` over the
levels, with the paper's weights (alpha 5e-5, beta 3.5e-5, gamma 4.5e-7, tau 0.5, mask rate 25 %) as
fields of :class:`DIPKDConfig`, and a switch per module for the ablation (Table 3).

**Where this differs from the released code** -- this is a "paper-differentiable" variant, which
follows the paper's equations where the code would keep the teacher's knowledge from the student:

* the code denoises through NumPy/PyWavelets, so the student's denoised features are constants:
  the target and non-target losses give the student **no gradient** (only ``gamma L_rit``, with
  gamma = 1e-8, reaches it). Here the denoiser is a differentiable torch Haar transform applied to the
  student with gradient and to the teacher under ``no_grad`` (thresholds under stop-gradient);
* ``mask_rate`` is the fraction of background *dropped* (paper, Table 5); the code's ``lambda_mask``
  is the fraction *kept*, so its 0.25 drops 75 %;
* the non-target loss has no MGD-style generator (code history only) and normalises by the kept
  background cells on both sides (Eq. 10);
* boxes map onto the feature grid by the padded batch size (the code divides by the unpadded image
  size, FGD's stretch); see :mod:`rskd_tutorial.distill.masks`;
* the feature loss compares the *un-gated* student feature (Eq. 11); the code feeds the RIT-gated
  feature to the wavelet branch, which -- once gradients flow -- would ask ``F_S * a = F_T`` and
  inflate the student's background features by ``1 / a``;
* RIT reads the student's head on the **student's** features (paper, Eq. 15) by default;
  ``rit_source="teacher_features"`` runs the student's head on the teacher's features, as the code
  does (RPN head for Faster R-CNN; the classification head for RetinaNet, which the code cannot run);
* losses are sums (paper: "not normalised"): the feature terms as in the code (sums divided by the
  batch size), the RIT term summed over positions and divided by the batch size (code: a mean).

The code's ``init_student`` (teacher neck and head weights copied into the student) is a training
procedure, not a loss: :func:`rskd_tutorial.recipes.dipkd.init_student_from_teacher`.

Taught in chapter 3 (``book/03_dipkd.ipynb``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rskd_tutorial.distill.baselines import paired_features
from rskd_tutorial.distill.masks import attention_maps, box_scale_masks
from rskd_tutorial.models.detectors import dense_level_maps
from rskd_tutorial.models.outputs import ModelOutput
from rskd_tutorial.spectral import max_haar_level, wavelet_denoise

__all__ = [
    "DEFAULT_LEVELS", "DIPKDConfig", "dipkd_levels", "DIPKDLoss", "ReverseInformationTransfer", "SelectiveNoiseSuppression",
    "attention_maps", "dipkd_loss", "kld_masks",
]

# FPN levels the official code hooks (neck.fpn_convs.0-3): Faster R-CNN P2-P5, RetinaNet P3-P6.
DEFAULT_LEVELS = {"faster_rcnn": ("p2", "p3", "p4", "p5"), "retinanet": ("p3", "p4", "p5", "p6")}
SNS_WEIGHTINGS = ("loss", "input")
RIT_SOURCES = ("student", "teacher_features")


@dataclass
class DIPKDConfig:
    """DIPKD's settings (the ``loss:`` block of a ``dipkd`` config). Defaults: the paper's.

    * ``alpha``, ``beta``, ``gamma`` -- weights of the target, non-target and RIT losses (Eqs. 14, 20;
      paper 5e-5, 3.5e-5, 4.5e-7 "for all experiments"; the code's history: alpha 4e-5..5e-5,
      beta 2.5e-5..3.5e-5, gamma 1e-8).
    * ``tau`` -- attention temperature (Eqs. 5-6, Table 4).
    * ``mask_rate`` -- fraction of background cells dropped from the non-target loss (Eq. 8, Table 5;
      the code's ``lambda_mask = 1 - mask_rate``).
    * ``sns``, ``kld``, ``rit`` -- switch each module on or off (Table 3). With ``kld`` off the feature
      loss covers the whole map with one uniform scale ``1 / (H W)`` and weight ``alpha + beta`` (the
      same total mass as a one-box scene with KLD on), with ``sns`` off the features are compared raw
      with no attention weight.
    * ``sns_weighting`` -- ``"loss"``: denoise the raw features and weight the squared error by the
      teacher's ``A^S A^C`` (the code); ``"input"``: denoise ``A^C A^S F`` with each model's own
      attention (Eq. 7 read literally).
    * ``rit_source`` -- ``"student"`` (paper) or ``"teacher_features"`` (code): which features the
      student's head scores for RIT.
    * ``wavelet_levels``, ``threshold_scale`` -- the denoiser (code: 3 Haar levels, ``0.5 std(cH_j)``).
    * ``levels`` -- FPN levels to distil (``None``: :data:`DEFAULT_LEVELS` of the architecture).
    """

    alpha: float = 5e-5
    beta: float = 3.5e-5
    gamma: float = 4.5e-7
    tau: float = 0.5
    mask_rate: float = 0.25
    sns: bool = True
    kld: bool = True
    rit: bool = True
    sns_weighting: str = "loss"
    rit_source: str = "student"
    wavelet_levels: int = 3
    threshold_scale: float = 0.5
    levels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_rate <= 1.0:
            raise ValueError(f"mask_rate must be in [0, 1] (the fraction of background dropped), got {self.mask_rate}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.sns_weighting not in SNS_WEIGHTINGS:
            raise ValueError(f"sns_weighting must be one of {SNS_WEIGHTINGS}, got {self.sns_weighting!r}")
        if self.rit_source not in RIT_SOURCES:
            raise ValueError(f"rit_source must be one of {RIT_SOURCES}, got {self.rit_source!r}")
        if self.levels is not None:
            self.levels = tuple(self.levels)

    @property
    def modules(self) -> str:
        """The switched-on modules, e.g. ``"SNS+KLD+RIT"`` (``"none"`` when all are off)."""
        on = [n for n, f in (("SNS", self.sns), ("KLD", self.kld), ("RIT", self.rit)) if f]
        return "+".join(on) or "none"


# ----------------------------------------------------------------------------------------------
# KLD: target / non-target masks (Eqs. 8-10)
# ----------------------------------------------------------------------------------------------

def kld_masks(boxes: Sequence[Tensor], feature_hw: tuple[int, int], input_hw: tuple[int, int],
              mask_rate: float = 0.25, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """KLD's binary mask ``M`` and scale mask ``S`` on one feature grid (DIPKD Eqs. 8-10).

    Args:
        boxes: per image an ``[n, 4]`` xyxy tensor in resized-image pixels (``taps["targets"]``).
        feature_hw: the grid ``(H, W)``.
        input_hw: the padded batch size ``taps["batch_hw"]`` the grid covers (boxes are mapped by it,
            :func:`~rskd_tutorial.distill.masks.box_grid_extents`).
        mask_rate: probability that a background cell is dropped (paper semantics).
        generator: draws the background mask (``None``: the global RNG); it may live on another
            device than the boxes.

    Returns ``(M, S)``, each ``[B, 1, H, W]`` float32:

    * ``M = 1`` on target cells (inside a box) and on **dropped** background cells (``n = 1`` in
      Eq. 8, drawn i.i.d. with probability ``mask_rate``), ``0`` on kept background;
    * ``S = 1 / (H_r W_r)`` on target cells (box area in cells, the largest value where boxes
      overlap, Eq. 9), ``1 / N_bg`` on kept background with ``N_bg = sum(1 - M)`` (Eq. 10), and ``0``
      on dropped cells.

    So ``M * S`` weights the target loss (Eq. 11) and ``(1 - M) * S`` the non-target loss (Eq. 12):
    each box's cells sum to 1 and the kept background sums to 1. ``S = 0`` on dropped cells is the
    one reading of Eqs. 8-12 under which the dropped background leaves the losses, as the paper's text
    and Table 5 ("100 %: only targets") say. Taught in chapter 3.
    """
    if not 0.0 <= mask_rate <= 1.0:
        raise ValueError(f"mask_rate must be in [0, 1], got {mask_rate}")
    fg, _ = box_scale_masks(list(boxes), tuple(feature_hw), tuple(input_hw))
    target = fg > 0
    if mask_rate > 0:
        where = generator.device if generator is not None else fg.device
        u = torch.rand(fg.shape, generator=generator, device=where).to(fg.device)
        dropped = ~target & (u < mask_rate)
    else:
        dropped = torch.zeros_like(target)
    kept = ~(target | dropped)
    n_bg = kept.sum(dim=(2, 3), keepdim=True).float()
    scale = torch.where(target, fg, kept.float() / n_bg.clamp(min=1.0))
    return (target | dropped).float(), scale


# ----------------------------------------------------------------------------------------------
# SNS: attention-guided wavelet denoising (Eqs. 3-7)
# ----------------------------------------------------------------------------------------------

class SelectiveNoiseSuppression(nn.Module):
    """SNS (DIPKD Eqs. 3-7): ``F' = f_wld(A^C * A^S * F)`` with a differentiable Haar denoiser.

    ``f_wld`` is :func:`~rskd_tutorial.spectral.wavelet_denoise` (``levels``-level Haar, soft
    threshold ``threshold_scale * std(cH_j)`` per image and level, thresholds under stop-gradient;
    the code's db1 / 3 levels / 0.5), capped at ``floor(log2(min(H, W)))`` levels on small maps.

    ``weighting="loss"`` (default; the code): ``denoise(F) = f_wld(F)``, and the attention enters the
    loss as the teacher's ``A^S_T A^C_T`` weight. ``weighting="input"`` (Eq. 7 literally):
    ``denoise(F) = f_wld(A^C(F) A^S(F) F)`` with the attention of the feature being denoised.

    ``forward(student, teacher)`` returns ``(F_S', F_T', weight)``: the student side keeps its
    gradient, the teacher side and the weight (``None`` for ``"input"``) are computed under
    ``no_grad``. Taught in chapter 3.
    """

    def __init__(self, tau: float = 0.5, weighting: str = "loss", levels: int = 3, threshold_scale: float = 0.5):
        super().__init__()
        if weighting not in SNS_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {SNS_WEIGHTINGS}, got {weighting!r}")
        self.tau, self.weighting, self.levels, self.threshold_scale = tau, weighting, levels, threshold_scale

    def denoise(self, feat: Tensor) -> Tensor:
        """Eq. 7 on one ``[N, C, H, W]`` map (float32)."""
        x = feat.float()
        if self.weighting == "input":
            spatial, channel = attention_maps(x, self.tau)
            x = x * spatial * channel
        levels = min(self.levels, max_haar_level(*x.shape[-2:]))
        return wavelet_denoise(x, levels=levels, threshold_scale=self.threshold_scale)

    def forward(self, student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        denoised_s = self.denoise(student)
        with torch.no_grad():
            teacher = teacher.detach().float()
            denoised_t = self.denoise(teacher)
            weight = None
            if self.weighting == "loss":
                spatial, channel = attention_maps(teacher, self.tau)
                weight = spatial * channel
        return denoised_s, denoised_t, weight


# ----------------------------------------------------------------------------------------------
# RIT: reverse information transfer (Eqs. 15-19)
# ----------------------------------------------------------------------------------------------

class ReverseInformationTransfer(nn.Module):
    """RIT on one level (DIPKD Eqs. 15-19, in the form of the code's ``FeatureLoss``).

    ``scores`` are the detection head's logits on this level, ``[B, A, K, H, W]`` (RetinaNet:
    anchors x classes) or ``[B, A, H, W]`` (Faster R-CNN's RPN objectness, K = 1). The feature matcher
    (Eq. 18) is residual, two 3x3 convs over the ``A K`` score channels::

        r = clip(s + conv2(relu(conv1(s))), -10, 10)
        a = max over anchors and classes of sigmoid(r) + 1e-6        (Eq. 16: max over classes)

    and the loss (Eq. 19's form in the code) ties the gated student feature to the gate::

        L_rit = 1/B * sum_{b,i,j} (mean_c(F_S * a) - a)^2

    Summed over positions (paper: "not normalised"; the code takes the mean). Nothing is detached:
    the gradient reaches the student's features, its head (through the scores) and the matcher.
    Taught in chapter 3.
    """

    def __init__(self, score_channels: int, clip: float = 10.0):
        super().__init__()
        self.conv1 = nn.Conv2d(score_channels, score_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(score_channels, score_channels, 3, padding=1)
        self.clip = clip

    def gate(self, scores: Tensor) -> Tensor:
        """The spatial gate ``a`` ``[B, 1, H, W]`` in ``(0, 1]`` (Eqs. 16-18)."""
        s = scores.float()
        if s.dim() == 5:
            s = s.flatten(1, 2)
        r = (s + self.conv2(F.relu(self.conv1(s)))).clamp(-self.clip, self.clip)
        return torch.sigmoid(r).amax(dim=1, keepdim=True) + 1e-6

    def forward(self, feat: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """``(L_rit, gate)`` for the student feature ``feat`` ``[B, C, H, W]``."""
        a = self.gate(scores)
        gated = feat.float() * a
        loss = (gated.mean(dim=1, keepdim=True) - a).pow(2).sum() / feat.shape[0]
        return loss, a


# ----------------------------------------------------------------------------------------------
# the loss
# ----------------------------------------------------------------------------------------------

class DIPKDLoss(nn.Module):
    """DIPKD's distillation loss (Eqs. 11-14, 19-20), summed over the distilled FPN levels:

    ``alpha L_tar + beta L_ntar + gamma L_rit``, with, per level,

    * ``L_tar = 1/B sum W M S (F_T' - f(F_S'))^2`` and ``L_ntar = 1/B sum W (1 - M) S (F_T' - f(F_S'))^2``
      (Eqs. 11-12), ``(M, S)`` from :func:`kld_masks`, ``F' `` from :class:`SelectiveNoiseSuppression`,
      ``W`` the teacher's ``A^S A^C`` (``sns_weighting="loss"``) or 1, ``f`` a 1x1 adapter only when the
      channel counts differ (the code's ``align``);
    * ``L_rit`` from :class:`ReverseInformationTransfer` (one matcher per level).

    Follows the Distiller protocol ``loss(student_out, teacher_out, targets)``; the raw sub-terms
    (``tar``, ``ntar`` -- or ``fea`` with KLD off -- and ``rit``) go to ``last_terms``.

    Args:
        arch: ``"faster_rcnn"`` (RIT scores = RPN objectness) or ``"retinanet"`` (classification head).
        channels: teacher FPN width; ``student_channels`` the student's (default: the same).
        score_channels: RIT matcher channels, ``A`` (RPN anchors) or ``A K`` (RetinaNet).
        config: :class:`DIPKDConfig` (paper defaults).
        score_head: the student's head to run on the teacher's features when
            ``config.rit_source == "teacher_features"`` (Faster R-CNN: ``det.net.rpn.head``; RetinaNet:
            ``det.net.head.classification_head``); kept by reference, not registered (it is the student's).
        generator: draws KLD's background masks (``None``: the global RNG, seeded by ``engine.fit``).

    :func:`dipkd_loss` builds it from two detectors. Taught in chapter 3.
    """

    def __init__(self, arch: str, channels: int, score_channels: int, config: DIPKDConfig | None = None, *,
                 student_channels: int | None = None, score_head: nn.Module | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        cfg = config or DIPKDConfig()
        if arch not in DEFAULT_LEVELS:
            raise ValueError(f"arch must be one of {tuple(DEFAULT_LEVELS)}, got {arch!r}")
        if not (cfg.sns or cfg.kld or cfg.rit):
            raise ValueError("DIPKDLoss with SNS, KLD and RIT all off distils nothing; train the plain student instead")
        if cfg.rit and cfg.rit_source == "teacher_features" and score_head is None:
            raise ValueError("rit_source='teacher_features' needs score_head (the student's RPN / classification head)")
        self.arch, self.config, self.generator = arch, cfg, generator
        self.levels = list(cfg.levels or DEFAULT_LEVELS[arch])
        cs = channels if student_channels is None else student_channels
        self.adapters = nn.ModuleDict({lv: nn.Conv2d(cs, channels, 1) if cs != channels else nn.Identity()
                                       for lv in self.levels})
        self.sns = SelectiveNoiseSuppression(cfg.tau, cfg.sns_weighting, cfg.wavelet_levels, cfg.threshold_scale)
        self.rit = nn.ModuleDict({lv: ReverseInformationTransfer(score_channels) for lv in self.levels} if cfg.rit else {})
        self._score_head: list[nn.Module] = [score_head] if score_head is not None else []
        self.last_terms: dict[str, Tensor] = {}

    def level_scores(self, s_out: ModelOutput, t_out: ModelOutput) -> list[Tensor]:
        """The RIT score logits of every detector level (``[B, A, H, W]`` or ``[B, A, K, H, W]``)."""
        if self.config.rit_source == "student":
            if self.arch == "faster_rcnn":
                return list(s_out.taps["objectness"])
            return dense_level_maps(s_out.taps["cls_logits"], s_out.taps)
        feats = t_out.taps["features"]
        head = self._score_head[0]
        if self.arch == "faster_rcnn":
            return list(head(list(feats.values()))[0])
        flat = head(list(feats.values()))
        per_level = [f.shape[-2] * f.shape[-1] * head.num_anchors for f in feats.values()]
        return dense_level_maps(flat, {"features": feats, "anchors_per_level": per_level})

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        cfg = self.config
        taps = s_out.taps
        names = list(taps["features"])
        scores = self.level_scores(s_out, t_out) if cfg.rit else None
        boxes = [t["boxes"] for t in taps["targets"]] if cfg.kld else None
        device = next(iter(taps["features"].values())).device
        terms: dict[str, Tensor] = {}

        def add(name: str, value: Tensor) -> None:
            terms[name] = terms[name] + value if name in terms else value

        with torch.autocast(device.type, enabled=False):     # masks, softmax, DWT in float32
            for lv, s, t in paired_features(s_out, t_out, self.levels):
                s = self.adapters[lv](s.float())
                t = t.detach().float()
                n, _, h, w = s.shape
                if cfg.sns or cfg.kld:
                    fs, ft, weight = self.sns(s, t) if cfg.sns else (s, t, None)
                    sq = (fs - ft).pow(2)
                    if weight is not None:
                        sq = sq * weight
                    if cfg.kld:
                        m, scale = kld_masks(boxes, (h, w), taps["batch_hw"], cfg.mask_rate, self.generator)
                        add("tar", (sq * (m * scale)).sum() / n)
                        add("ntar", (sq * ((1 - m) * scale)).sum() / n)
                    else:
                        add("fea", sq.sum() / (n * h * w))
                if cfg.rit:
                    rit, _ = self.rit[lv](s, scores[names.index(lv)])
                    add("rit", rit)
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        total = (cfg.alpha * terms.get("tar", 0.0) + cfg.beta * terms.get("ntar", 0.0)
                 + (cfg.alpha + cfg.beta) * terms.get("fea", 0.0) + cfg.gamma * terms.get("rit", 0.0))
        return total

    def weighted_terms(self) -> dict[str, float]:
        """The last call's sub-terms times their weights (what the student's objective sees)."""
        cfg = self.config
        w = {"tar": cfg.alpha, "ntar": cfg.beta, "fea": cfg.alpha + cfg.beta, "rit": cfg.gamma}
        return {k: float(v) * w[k] for k, v in self.last_terms.items()}


def dipkd_levels(detector: nn.Module) -> list[str]:
    """The FPN levels DIPKD distils on ``detector``: the official ones (:data:`DEFAULT_LEVELS`, every level
    but the coarsest) when the detector has them, else the same rule on its own pyramid (the tutorial
    scale's P2-P5 gives P2-P4)."""
    official = list(DEFAULT_LEVELS[detector.arch])
    have = list(detector.levels)
    return official if all(lv in have for lv in official) else have[:-1] or have


def dipkd_loss(student: nn.Module, teacher: nn.Module, config: DIPKDConfig | None = None, *,
               generator: torch.Generator | None = None) -> DIPKDLoss:
    """A :class:`DIPKDLoss` for two :class:`~rskd_tutorial.models.detectors.Detector` s of one
    architecture: FPN widths, RIT score channels and (for ``rit_source="teacher_features"``) the
    student's score head are read from the models."""
    cfg = config or DIPKDConfig()
    if student.arch != teacher.arch:
        raise ValueError(f"student ({student.arch}) and teacher ({teacher.arch}) must share the architecture")
    if cfg.levels is None:
        cfg = replace(cfg, levels=tuple(dipkd_levels(student)))
    net = student.net
    if student.arch == "faster_rcnn":
        head: nn.Module = net.rpn.head
        score_channels = head.cls_logits.out_channels
    else:
        head = net.head.classification_head
        score_channels = head.num_anchors * head.num_classes
    return DIPKDLoss(student.arch, teacher.net.backbone.out_channels, score_channels, cfg,
                     student_channels=net.backbone.out_channels,
                     score_head=head if cfg.rit_source == "teacher_features" else None, generator=generator)
