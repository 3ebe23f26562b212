"""Run profiles: every size a chapter needs, in one frozen dataclass.

Three profiles share one code path and differ only in scale:

* ``ci``  -- proves the code path; at most 90 s a chapter on 2 CPU cores (nbval runs the book in it).
* ``cpu`` -- at most 15 min a chapter on 2 CPU cores, with results that already show the point.
* ``gpu`` -- at most 10 min a chapter on one H100: the tutorial scale whose outputs the book shows.

The profile comes from ``get_profile(name)``, else the environment variable ``RSKD_PROFILE``, else
``gpu`` when CUDA is available and ``cpu`` otherwise. Chapters begin with::

    from rskd_tutorial.profile import get_profile
    P = get_profile()
    print(P.banner())          # "profile: cpu | device: cpu (2 threads) | torch 2.x"
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

import torch

PROFILE_NAMES = ("ci", "cpu", "gpu")


@dataclass(frozen=True)
class DetectionScale:
    """Sizes for the detection chapters (0, 1, 2, 3, 6): synthetic optical and SAR scenes."""

    image_size: int                  # side of the square synthetic scene, px (detector min = max size)
    train_images: int
    val_images: int
    teacher_backbone: str            # the papers: resnet101 (DS2D2), resnet50 (DIPKD)
    student_backbone: str            # the papers: resnet18
    fpn_channels: int                # the papers: 256
    anchor_factor: float             # multiplies the papers' anchor sizes (1.0 = paper; small scenes need less)
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    lr_retinanet: float
    lr_faster_rcnn: float
    warmup_iters: int
    optimizer: str = "sgd"           # the papers: SGD; from-scratch tutorial runs learn far faster with AdamW
    weight_decay: float = 1e-4       # the papers: 1e-4 (SGD)
    rois_per_image: int = 512        # Faster R-CNN box-head samples per image (papers: 512)
    rpn_proposals: int = 1000        # Faster R-CNN proposals after NMS (papers: 1000)
    amplifier_epochs: int = 6        # DS2D2's high-frequency amplifier, heads only (official: 24)


@dataclass(frozen=True)
class SaliencyScale:
    """Sizes for the SCRKD chapter: one scene rendered at teacher / assistant / student resolution."""

    resolutions: tuple[int, int, int]   # teacher, assistant, student (papers: 448, 224, 112)
    eval_size: int                      # common evaluation resolution (papers: 448)
    train_images: int
    test_images: int
    backbone: str                       # encoder of the PSPNet-style net (papers: resnet50)
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    lr: float                           # AdamW (papers: 2e-5 with ImageNet weights)
    channels: int = 256                 # decoder width of the SOD nets (papers: 256)
    transformer_backbone: str = "pvt_v2_b1"   # timm encoder of the transformer variant (papers: MiT-B1)
    warmup_iters: int = 0               # linear LR warm-up steps (from-scratch training)


@dataclass(frozen=True)
class CrossModalScale:
    """Sizes for the FreqKD chapter: paired RGB / thermal-IR scenes and ViT backbones."""

    image_size: int
    train_pairs: int
    val_pairs: int
    study_pairs: int                 # pairs in the divergence study (abstract: 500)
    teacher_vit: str                 # timm architecture name of the RGB teacher
    student_vit: str                 # timm architecture name of the IR student (same: init from the teacher)
    vit_depth: int | None            # blocks of both ViTs (None: the architecture's own, 12)
    pyramid_channels: int            # width of the simple feature pyramid (ViTDet: 256)
    anchor_factor: float             # x the paper anchors (RetinaNet 4 x stride)
    teacher_epochs: int              # RGB detector pre-training of the teacher
    distill_epochs: int              # stage A: feature distillation RGB -> IR
    finetune_epochs: int             # stage B: IR detection fine-tuning
    batch_size: int
    lr: float                        # AdamW peak LR of the teacher (trained from scratch)
    distill_lr: float                # AdamW peak LR of stage A
    finetune_lr: float               # AdamW peak LR of stage B
    warmup_iters: int
    sweep_cutoffs: tuple[float, ...]  # stage-A cutoff sweep (cycles per token)
    sweep_weights: tuple[float, ...]  # stage-A high-band weight sweep


@dataclass(frozen=True)
class Profile:
    name: str
    seeds: tuple[int, ...]           # seeds for multi-seed comparisons (chapter 6)
    num_workers: int                 # DataLoader workers
    detection: DetectionScale
    saliency: SaliencyScale
    crossmodal: CrossModalScale
    notes: str = field(default="", compare=False)

    @property
    def device(self) -> torch.device:
        """The device chapters run on: the first CUDA GPU when there is one, else the CPU."""
        return default_device()

    def banner(self) -> str:
        """One line naming the profile, the device and the torch version (first cell of a chapter)."""
        dev = self.device
        if dev.type == "cuda":
            where = f"cuda ({torch.cuda.get_device_name(dev)})"
        else:
            where = f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
        return f"profile: {self.name} | device: {where} | torch {torch.__version__}"

    def to_dict(self) -> dict:
        return asdict(self)


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu`` (the d2l ``try_gpu`` of this book)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        seeds=(0,),
        num_workers=0,
        detection=DetectionScale(
            image_size=96, train_images=16, val_images=8,
            teacher_backbone="resnet18", student_backbone="resnet18", fpn_channels=32,
            anchor_factor=0.5, teacher_epochs=1, student_epochs=1, batch_size=4,
            lr_retinanet=1e-3, lr_faster_rcnn=1e-3, warmup_iters=2, optimizer="adamw", weight_decay=0.05,
            rois_per_image=64, rpn_proposals=100, amplifier_epochs=1,
        ),
        saliency=SaliencyScale(
            resolutions=(64, 32, 16), eval_size=64, train_images=8, test_images=4,
            backbone="resnet18", teacher_epochs=1, student_epochs=1, batch_size=4, lr=1e-3,
            channels=16, transformer_backbone="pvt_v2_b0", warmup_iters=0,
        ),
        crossmodal=CrossModalScale(
            image_size=64, train_pairs=8, val_pairs=4, study_pairs=8,
            teacher_vit="vit_tiny_patch16_224", student_vit="vit_tiny_patch16_224", vit_depth=2,
            pyramid_channels=16, anchor_factor=0.25, teacher_epochs=1, distill_epochs=1, finetune_epochs=1,
            batch_size=4, lr=1e-3, distill_lr=1e-4, finetune_lr=3e-4, warmup_iters=1,
            sweep_cutoffs=(0.25,), sweep_weights=(0.1,),
        ),
        notes="code path only: numbers in this profile mean nothing",
    ),
    "cpu": Profile(
        name="cpu",
        seeds=(0,),                      # one student seed: a second doubles every row of chapter 6
        num_workers=2,
        detection=DetectionScale(
            image_size=256, train_images=128, val_images=48,
            teacher_backbone="resnet50", student_backbone="resnet18", fpn_channels=64,
            anchor_factor=0.35, teacher_epochs=12, student_epochs=6, batch_size=8,
            lr_retinanet=1e-3, lr_faster_rcnn=1e-3, warmup_iters=30, optimizer="adamw", weight_decay=0.05,
            rois_per_image=128, rpn_proposals=300, amplifier_epochs=3,
        ),
        saliency=SaliencyScale(
            resolutions=(128, 64, 32), eval_size=128, train_images=160, test_images=48,
            backbone="resnet18", teacher_epochs=5, student_epochs=4, batch_size=8, lr=1e-3,
            channels=32, transformer_backbone="pvt_v2_b0", warmup_iters=20,
        ),
        crossmodal=CrossModalScale(
            image_size=160, train_pairs=256, val_pairs=64, study_pairs=128,
            teacher_vit="vit_tiny_patch16_224", student_vit="vit_tiny_patch16_224", vit_depth=6,
            pyramid_channels=32, anchor_factor=0.3, teacher_epochs=30, distill_epochs=3, finetune_epochs=6,
            batch_size=16, lr=1e-3, distill_lr=2e-4, finetune_lr=3e-4, warmup_iters=50,
            sweep_cutoffs=(0.125,), sweep_weights=(1.0,),
        ),
        notes="15 min a chapter on 2 CPU cores",
    ),
    "gpu": Profile(
        name="gpu",
        seeds=(0, 1, 2),
        num_workers=8,
        detection=DetectionScale(
            image_size=512, train_images=2000, val_images=300,
            teacher_backbone="resnet50", student_backbone="resnet18", fpn_channels=256,
            anchor_factor=0.5, teacher_epochs=24, student_epochs=12, batch_size=16,
            lr_retinanet=1e-3, lr_faster_rcnn=1e-3, warmup_iters=200, optimizer="adamw", weight_decay=0.05,
            rois_per_image=256, rpn_proposals=1000, amplifier_epochs=6,
        ),
        saliency=SaliencyScale(
            resolutions=(448, 224, 112), eval_size=448, train_images=1000, test_images=200,
            backbone="resnet50", teacher_epochs=15, student_epochs=12, batch_size=16, lr=5e-4,
            channels=128, transformer_backbone="pvt_v2_b1", warmup_iters=100,
        ),
        crossmodal=CrossModalScale(
            image_size=224, train_pairs=2000, val_pairs=300, study_pairs=500,
            teacher_vit="vit_small_patch14_dinov2", student_vit="vit_small_patch14_dinov2", vit_depth=None,
            pyramid_channels=128, anchor_factor=0.5, teacher_epochs=20, distill_epochs=4, finetune_epochs=8,
            batch_size=32, lr=5e-4, distill_lr=1e-4, finetune_lr=2e-4, warmup_iters=100,
            sweep_cutoffs=(0.125, 0.25, 0.375), sweep_weights=(0.1, 1.0),
        ),
        notes="10 min a chapter on one H100",
    ),
}


def profile_name_from_env() -> str:
    """The profile name from ``RSKD_PROFILE``, else ``gpu`` with CUDA, else ``cpu``."""
    name = os.environ.get("RSKD_PROFILE", "").strip().lower()
    if name:
        return name
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """Return the named profile (``ci`` | ``cpu`` | ``gpu``); ``None`` reads ``RSKD_PROFILE``."""
    name = (name or profile_name_from_env()).lower()
    if name not in _PROFILES:
        raise ValueError(
            f"unknown profile {name!r} (from RSKD_PROFILE or the argument); choose one of {PROFILE_NAMES}"
        )
    return _PROFILES[name]
