"""SCRKD: structured cross-resolution distillation for salient object detection.

Liu, Zhang, Guo, Zhang, "Structured Cross-Resolution Distillation for Remote Sensing Salient Object
Detection", IEEE TGRS 2025 (code: github.com/lyf0801/SCRKD). Every loss is written as the official
code computes it (paper Sec. III-A to III-E; where the paper's equations differ, the docstring
says how). Taught in chapter 5 (``book/05_scrkd_cascade.ipynb``).

``L_total = L_SOD + alpha L_MVCD + beta L_MSFD + gamma L_DSD`` (Eq. 1): the student's own
``loss_sod`` (:func:`sod_loss`, computed by the model) plus three Distiller terms
(:class:`MVCDLoss`, :class:`MultiScaleFeatureDistillation`, :class:`DSDLoss`), built together by
:func:`scrkd_losses` with the coefficients of :data:`SCRKD_COEFFICIENTS`.

Students are SOD nets built with ``disentangle=True`` (their ``mvcd`` / ``msfd`` branch taps carry
the distilled features; ``rskd_tutorial.models.saliency``); teachers are any SOD net of the same
family (their ``features`` taps are the decoder stage maps). Which teacher stage each student stage
meets depends on the resolution gap: :data:`STAGE_MATCHING`.

The two-stage cascade is a training procedure, so it lives with the recipes:
:func:`rskd_tutorial.recipes.scrkd.cascade`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rskd_tutorial.models.outputs import ModelOutput
from rskd_tutorial.models.saliency import conv_bn_prelu, init_official_weights, sod_loss, structure_loss

__all__ = [
    "DSDLoss", "MVCDLoss", "MultiScaleFeatureDistillation", "SCRKDCoefficients", "SCRKD_COEFFICIENTS",
    "STAGE_MATCHING", "StageMatching", "decoupled_probabilities", "dsd_loss", "get_matching", "hcl_loss", "mvcd_loss",
    "mvcd_terms", "scrkd_losses", "self_correlations", "sod_loss", "stage_matching", "structure_loss",
]

EPS = 1e-8


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear, ``align_corners=True`` (every SCRKD resize)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def _pool(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.adaptive_avg_pool2d(x, tuple(size))


# ------------------------------------------------------------------------------------------------
# stage matching
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageMatching:
    """Which teacher map each student stage meets, per setting, as the official code pairs them
    (Sec. III-D leaves the teacher stage open); a generic same-index pairing is a different method.

    * ``msfd_offset``: MSFD pairs student stage ``k`` with teacher stage ``min(k + offset, n)``
      (``1`` for PSPNet: with a 2x larger input, teacher stage ``k+1`` has the student's stage-``k``
      size -- equal *spatial size*, not equal depth);
    * ``msfd_align``: how that teacher map reaches the student's stage size: ``bilinear``
      (``align_corners=True``) or ``avgpool`` (adaptive average pooling);
    * ``mvcd_stages``: 1-based stages MVCD uses (``None``: all);
    * ``mvcd_align``: ``student`` (up-sample the student's branch to the teacher's stage-``k`` size)
      or ``teacher`` (pool the teacher's map down to the student's size);
    * ``dsd_logits``: teacher maps DSD compares with: ``stage`` (map ``k`` at its native stage size)
      or ``input`` (up-sampled to the teacher's input size); the student map is resized to it.
    """

    name: str
    msfd_offset: int
    msfd_align: str
    mvcd_stages: tuple[int, ...] | None
    mvcd_align: str
    dsd_logits: str

    def __post_init__(self) -> None:
        if self.msfd_align not in ("bilinear", "avgpool"):
            raise ValueError(f"msfd_align must be 'bilinear' or 'avgpool', got {self.msfd_align!r}")
        if self.mvcd_align not in ("student", "teacher"):
            raise ValueError(f"mvcd_align must be 'student' or 'teacher', got {self.mvcd_align!r}")
        if self.dsd_logits not in ("stage", "input"):
            raise ValueError(f"dsd_logits must be 'stage' or 'input', got {self.dsd_logits!r}")

    def teacher_stage(self, k: int, n: int) -> int:
        """1-based teacher stage for 1-based student stage ``k`` of ``n``."""
        return min(k + self.msfd_offset, n)


STAGE_MATCHING: dict[str, StageMatching] = {
    # 2x gap (224 -> 112; official SCRKD5): t_k = T_{k+1} (same size), t_5 = Up(T_5); MVCD on all stages
    "2x": StageMatching("2x", 1, "bilinear", None, "student", "stage"),
    # 4x gap and any 448 teacher or 56 student (official SCRKD52): t_k = AvgPool(T_{k+1}), t_5 = AvgPool(T_5);
    # MVCD drops stage 1 (the official code did so for memory; our batched Gram matrices would not need to)
    "4x": StageMatching("4x", 1, "avgpool", (2, 3, 4, 5), "student", "stage"),
    # second cascade stage (official SCRKD5_Cascaded): as 2x, but the assistant-teacher's logits come
    # up-sampled to its input size
    "cascade": StageMatching("cascade", 1, "bilinear", None, "student", "input"),
    # transformer (SegFormer-style) nets: all four maps share the stage-1 size; same index, teacher pooled
    "same": StageMatching("same", 0, "avgpool", None, "teacher", "input"),
}


def stage_matching(teacher_res: int, student_res: int, arch: str = "pspnet") -> StageMatching:
    """The rule for a setting: ``same`` for the transformer variant; for PSPNet ``2x`` when the teacher
    input is exactly twice the student's, else ``4x``. (The official 448 -> 224 run used the ``4x``
    rules too -- for memory; its full-scale config names ``matching: 4x`` explicitly.)"""
    if arch == "transformer":
        return STAGE_MATCHING["same"]
    if teacher_res <= student_res:
        raise ValueError(f"the teacher resolution ({teacher_res}) must exceed the student's ({student_res})")
    return STAGE_MATCHING["2x" if teacher_res == 2 * student_res else "4x"]


def get_matching(m: str | StageMatching) -> StageMatching:
    if isinstance(m, StageMatching):
        return m
    if m not in STAGE_MATCHING:
        raise KeyError(f"unknown stage matching {m!r}; available: {', '.join(STAGE_MATCHING)}")
    return STAGE_MATCHING[m]


# ------------------------------------------------------------------------------------------------
# MVCD (Sec. III-C, Eqs. 6-7)
# ------------------------------------------------------------------------------------------------

def self_correlations(x: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor, Tensor]:
    """Cosine self-correlation matrices of ``x`` ``[B, C, H, W]`` in three views (Eq. 6):
    channel ``[B, C, C]`` (rows ``C x HW``), height ``[B, H, H]`` (rows ``H x CW`` after permuting
    to ``(H, C, W)``) and width ``[B, W, W]`` (rows ``W x CH`` after ``(W, C, H)``).

    ``Corr_pq = <X_p, X_q> / (max(|X_p|, eps) max(|X_q|, eps))`` -- ``F.cosine_similarity``
    semantics, computed as a batched Gram matrix of row-normalised views (the official pairwise
    broadcast needs ~3 GB per sample at a 112 x 112 stage). float32.
    """
    x = x.float()
    b, c, h, w = x.shape
    views = (x.reshape(b, c, h * w), x.permute(0, 2, 1, 3).reshape(b, h, c * w), x.permute(0, 3, 1, 2).reshape(b, w, c * h))
    out = []
    for v in views:
        u = v / v.norm(dim=-1, keepdim=True).clamp_min(eps)
        out.append(torch.bmm(u, u.transpose(1, 2)))
    return out[0], out[1], out[2]


def mvcd_terms(f_s: Tensor, f_t: Tensor, *, align: str = "student") -> dict[str, Tensor]:
    """The three L1 distances of Eq. 7 (``nn.L1Loss()``: mean over ``B x n x n``) by view.

    Sizes are aligned first: ``align='student'`` up-samples ``f_s`` to ``f_t``'s size (bilinear,
    ``align_corners=True``; PSPNet), ``'teacher'`` pools ``f_t`` down to ``f_s``'s (SegFormer).
    The teacher side carries no gradient.
    """
    if f_s.shape[:2] != f_t.shape[:2]:
        raise ValueError(f"MVCD needs equal batch and channels: student {tuple(f_s.shape)}, teacher {tuple(f_t.shape)}")
    if align == "student":
        f_s = _resize(f_s, f_t.shape[-2:])
    elif align == "teacher":
        f_t = _pool(f_t, f_s.shape[-2:])
    else:
        raise ValueError(f"align must be 'student' or 'teacher', got {align!r}")
    cs = self_correlations(f_s)
    with torch.no_grad():
        ct = self_correlations(f_t.detach())
    return {view: F.l1_loss(s, t) for view, s, t in zip(("channel", "height", "width"), cs, ct)}


def mvcd_loss(f_s: Tensor, f_t: Tensor, *, align: str = "student") -> Tensor:
    """Multi-view correlation distillation for one stage (Eq. 7):
    ``|Corr(S^c) - Corr(T^c)|_1 + |Corr(S^h) - Corr(T^h)|_1 + |Corr(S^w) - Corr(T^w)|_1``
    (see :func:`mvcd_terms`). The channel view ignores any positive per-channel scale of a map; the
    whole loss is invariant to a positive scale per sample."""
    terms = mvcd_terms(f_s, f_t, align=align)
    return terms["channel"] + terms["height"] + terms["width"]


class MVCDLoss(nn.Module):
    """MVCD as a Distiller term: ``sum_k mvcd_loss(S.mvcd[k], T.features[k])`` over the stages of the
    matching rule. Sub-terms (summed over stages) go to ``last_terms``."""

    def __init__(self, matching: str | StageMatching = "2x"):
        super().__init__()
        self.matching = get_matching(matching)
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        mv, tf = _branch(s_out, "mvcd"), t_out.taps["features"]
        names = list(mv)
        stages = self.matching.mvcd_stages or range(1, len(names) + 1)
        sums = {"channel": 0.0, "height": 0.0, "width": 0.0}
        for k in stages:
            for view, v in mvcd_terms(mv[names[k - 1]], tf[names[k - 1]], align=self.matching.mvcd_align).items():
                sums[view] = sums[view] + v
        self.last_terms = {k: v.detach() for k, v in sums.items()}
        return sums["channel"] + sums["height"] + sums["width"]


def _branch(s_out: ModelOutput, name: str) -> Mapping[str, Tensor]:
    if name not in s_out.taps:
        raise KeyError(f"the student has no {name!r} taps: build it with disentangle=True (SCRKD's feature "
                       f"disentanglement, Sec. III-B)")
    return s_out.taps[name]


# ------------------------------------------------------------------------------------------------
# MSFD (Sec. III-D, Eqs. 8-12 as coded)
# ------------------------------------------------------------------------------------------------

def hcl_loss(f: Tensor, t: Tensor, pool_sizes: Sequence[int] = (16, 8, 4, 2, 1)) -> Tensor:
    """ReviewKD's hierarchical context loss, the MSFD loss as coded (the paper's Eq. 12 sums equal
    weights over pools 1..16):

    ``(MSE(f, t) + sum_m c_m MSE(P_{L_m} f, P_{L_m} t)) / (1 + sum_m c_m)``, ``P_L`` adaptive average
    pooling to ``L x L``, the sizes taken in the order 16, 8, 4, 2, 1 keeping only ``L < h``, and the
    ``m``-th kept size weighted ``2^-m``. Example: ``h = 7`` keeps 4, 2, 1 with 1/2, 1/4, 1/8.
    """
    f, t = f.float(), t.float()
    loss, weight, total = F.mse_loss(f, t), 1.0, 1.0
    for size in pool_sizes:
        if size >= f.shape[-2]:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(f, size), F.adaptive_avg_pool2d(t, size))
        total += weight
    return loss / total


class MultiScaleFeatureDistillation(nn.Module):
    """MSFD (Sec. III-D, as coded). For every student stage ``k`` (size ``h_k x w_k``):

    1. align: resize every stage's MSFD branch ``f^ms_j`` to ``h_k x w_k`` (bilinear,
       ``align_corners=True``);
    2. refine: one Conv3x3-BN-PReLU per ``k``, shared by the ``n`` candidates (BN sees ``B n`` maps);
    3. target ``t_k``: the teacher map of the matching rule at the student's stage size (constant);
    4. weights ``lambda_{k,j} = softmax_j cos(vec f~_{k,j}, vec t_k)`` per sample, no temperature
       (the paper's Eq. 9 has a learnable tau_1 and a dot-product affinity), ``f^D_k = sum_j lambda f~``;
    5. loss :func:`hcl_loss` ``(f^D_k, t_k)``, summed over stages.

    Called as a Distiller term ``(s_out, t_out, targets)``; :meth:`distil` does the tensor work.
    After a call ``last_weights`` holds ``lambda`` as ``[B, n_stages, n_candidates]`` (rows sum to one).
    The refine convs are trainable and belong to this loss (discarded at inference, like the paper's).
    """

    def __init__(self, channels: int, n_stages: int = 5, matching: str | StageMatching = "2x"):
        super().__init__()
        self.matching = get_matching(matching)
        self.refine = nn.ModuleList(conv_bn_prelu(channels, channels) for _ in range(n_stages))
        init_official_weights(self)
        self.last_weights: Tensor | None = None

    def fuse(self, feats: Sequence[Tensor], k: int, target: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 1-4 for (0-based) stage ``k``: returns ``(f^D_k, lambda_k [B, n])``."""
        size = feats[k].shape[-2:]
        cand = torch.stack([_resize(f, size) for f in feats], dim=1)                # [B, n, C, h, w]
        b, n = cand.shape[:2]
        cand = self.refine[k](cand.flatten(0, 1)).unflatten(0, (b, n))
        sim = F.cosine_similarity(cand.flatten(2).float(), target.detach().flatten(1).float()[:, None], dim=-1)
        lam = torch.softmax(sim, dim=1)                                               # [B, n]
        return (cand.float() * lam[:, :, None, None, None]).sum(dim=1), lam

    def teacher_targets(self, teacher_feats: Sequence[Tensor], student_sizes: Sequence[Sequence[int]]) -> list[Tensor]:
        """``t_k`` for each student stage: teacher stage ``k + offset`` aligned to the student's size."""
        n = len(teacher_feats)
        align = _resize if self.matching.msfd_align == "bilinear" else _pool
        return [align(teacher_feats[self.matching.teacher_stage(k + 1, n) - 1], size).detach()
                for k, size in enumerate(student_sizes)]

    def distil(self, student_feats: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        """``sum_k hcl_loss(f^D_k, t_k)`` for student MSFD branches and aligned teacher targets."""
        if len(student_feats) != len(self.refine) or len(targets) != len(self.refine):
            raise ValueError(f"MSFD was built for {len(self.refine)} stages; got {len(student_feats)} student maps "
                             f"and {len(targets)} targets")
        total, weights = 0.0, []
        for k, t in enumerate(targets):
            fused, lam = self.fuse(student_feats, k, t)
            total = total + hcl_loss(fused, t)
            weights.append(lam.detach())
        self.last_weights = torch.stack(weights, dim=1)
        return total

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        feats = list(_branch(s_out, "msfd").values())
        tgt = self.teacher_targets(list(t_out.taps["features"].values()), [f.shape[-2:] for f in feats])
        return self.distil(feats, tgt)


# ------------------------------------------------------------------------------------------------
# DSD (Sec. III-E, Eqs. 13-14 as coded)
# ------------------------------------------------------------------------------------------------

def decoupled_probabilities(logits: Tensor, tau: float = 1.0) -> Tensor:
    """``softmax_channel([sigma(z), 1 - sigma(z)] / tau)`` ``[B, 2, H, W]`` (Eq. 13-14): the softmax
    acts on *probabilities*, so at ``tau = 1`` the salient-class value is ``sigma(2 sigma(z) - 1)``,
    confined to ``[sigma(-1), sigma(1)] = [0.269, 0.731]`` -- a deliberately compressed distribution."""
    p = torch.sigmoid(logits.float())
    return torch.softmax(torch.cat([p, 1 - p], dim=1) / tau, dim=1)


def dsd_loss(logits_s: Tensor, logits_t: Tensor, tau: float = 1.0) -> Tensor:
    """Decoupled saliency distillation for one map: ``KL(q_T || q_S)`` averaged over the ``2 B H W``
    elements (PyTorch ``KLDivLoss(reduction='mean')``, as coded; the paper writes KL(student||teacher)).
    The student map is resized (bilinear, ``align_corners=True``) to the teacher's size. The paper's
    form ``softmax(D / tau)`` is used (no ``tau^2`` factor); at ``tau = 1`` it equals the code."""
    logits_s = _resize(logits_s, logits_t.shape[-2:])
    q_s = decoupled_probabilities(logits_s, tau)
    q_t = decoupled_probabilities(logits_t.detach(), tau)
    return (q_t * (q_t.log() - q_s.log())).mean()


class DSDLoss(nn.Module):
    """DSD as a Distiller term: ``sum_k dsd_loss(S.logits[k], T.logits[k])`` over the heads (5 for the
    PSPNet net, 1 for the transformer), with the teacher's maps at their native stage size or at its
    input size per the matching rule."""

    def __init__(self, matching: str | StageMatching = "2x", tau: float = 1.0):
        super().__init__()
        self.matching = get_matching(matching)
        self.tau = tau

    def forward(self, s_out: ModelOutput, t_out: ModelOutput, targets: Any = None) -> Tensor:
        zs = s_out.taps["logits"]
        zt = t_out.taps["stage_logits" if self.matching.dsd_logits == "stage" else "logits"]
        if len(zs) != len(zt):
            raise ValueError(f"DSD: the student has {len(zs)} logit maps, the teacher {len(zt)}")
        return torch.stack([dsd_loss(s, t, self.tau) for s, t in zip(zs, zt)]).sum()


# ------------------------------------------------------------------------------------------------
# the whole method
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SCRKDCoefficients:
    """``alpha`` (MVCD), ``beta`` (MSFD), ``gamma`` (DSD) of Eq. 1 and the DSD temperature ``tau``."""

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 10.0
    tau: float = 1.0


# the paper's values per backbone (Sec. IV-A3). The released TransXNet code uses 0 / 0.5 / 20 with a
# probability temperature of 2 (net effect: 2x the KL).
SCRKD_COEFFICIENTS: dict[str, SCRKDCoefficients] = {
    "pspnet": SCRKDCoefficients(1.0, 1.0, 10.0),
    "segformer": SCRKDCoefficients(0.1, 1.0, 100.0),
    "transxnet": SCRKDCoefficients(0.2, 0.6, 20.0),
}

COMPONENTS = ("mvcd", "msfd", "dsd")


def scrkd_losses(channels: int, n_stages: int = 5, matching: str | StageMatching = "2x",
                 coefficients: SCRKDCoefficients = SCRKD_COEFFICIENTS["pspnet"],
                 components: Sequence[str] = COMPONENTS) -> tuple[dict[str, nn.Module], dict[str, float]]:
    """The Distiller's ``(losses, weights)`` for SCRKD, or an ablation of it (``components`` a subset
    of ``("mvcd", "msfd", "dsd")``; the student keeps its three branches either way)."""
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ValueError(f"components must be a non-empty subset of {COMPONENTS}, got {list(components)}")
    m = get_matching(matching)
    build = {
        "mvcd": (lambda: MVCDLoss(m), coefficients.alpha),
        "msfd": (lambda: MultiScaleFeatureDistillation(channels, n_stages, m), coefficients.beta),
        "dsd": (lambda: DSDLoss(m, coefficients.tau), coefficients.gamma),
    }
    losses = {c: build[c][0]() for c in COMPONENTS if c in components}
    return losses, {c: build[c][1] for c in losses}
