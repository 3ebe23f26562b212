"""Run profiles: every size a chapter needs, in one frozen dataclass.

Four profiles share one code path and differ only in scale:

* ``ci``  -- proves the code path; at most 90 s a chapter on 2 CPU cores (nbval runs the book in it).
* ``cpu`` -- the tutorial scale on 2 CPU cores: small timm backbones (``regnetx_002``) on stride-4
  pyramids, teachers trained once for thousands of steps and shipped with the package
  (``rskd teachers``), students trained for a few hundred steps, 3 seeds, a held-out test split.
* ``gpu`` -- at most 10 min a chapter on one H100 (``rskd plan --profile gpu``): the ``cpu`` profile's
  model families (``regnetx_002`` trunks, P2-P5 pyramids, light GroupNorm heads) on more scenes
  (detection: 4000, not 1000), batches of 64 and longer teacher training. No teacher is shipped for
  it: its teachers train in the chapters, and their time is in the 10 minutes. (The papers'
  ResNet-50/18 at 512 px would take hours.)
* ``t4``  -- Colab's free T4 (fp16 autocast with a grad scaler, 16 GB): the ``gpu`` models on fewer scenes
  (detection: 2000) in batches of 32, so that every chapter fits a Colab session (45 min by
  ``rskd plan --profile t4``).

``RSKD_FULL=1`` gives the ``gpu`` and ``t4`` profiles their extra seeds (5 instead of 3) and the full
FreqKD sweep (cutoff 0.125 / 0.25 / 0.375 x high-band weight 0.1 / 1); without it the sweep is one
point (the chapter's default row). It does not change ``ci`` and ``cpu`` (their sizes enter the cache
keys of the shipped teachers). ``rskd plan`` shows what either setting costs.

The profile comes from ``get_profile(name)``, else the environment variable ``RSKD_PROFILE``, else
``gpu`` when CUDA is available and ``cpu`` otherwise; ``RSKD_SEEDS=n`` keeps the student seeds
``0..n-1`` (``RSKD_SEEDS=1``: a reader's quick look at a chapter; it applies after ``RSKD_FULL``).
Chapters begin with::

    from rskd_tutorial.profile import get_profile
    P = get_profile()
    print(P.banner())          # "profile: cpu | device: cpu (2 threads) | torch 2.x"
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field, replace

import torch

from rskd_tutorial.devices import default_device  # noqa: F401  (re-exported: chapters call it from here)

PROFILE_NAMES = ("ci", "cpu", "gpu", "t4")
FULL_SEEDS = (0, 1, 2, 3, 4)                        # RSKD_FULL=1: the gpu / t4 student seeds
FULL_SWEEP = ((0.125, 0.25, 0.375), (0.1, 1.0))     # RSKD_FULL=1: the FreqKD cutoff x high-band weight grid


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
    test_images: int = 0             # held-out test split (tables report it; anything tuned is tuned on val)
    anchor_factor_faster_rcnn: float | None = None   # RPN anchors (None: anchor_factor)
    head_convs: int | None = None    # RetinaNet conv+GroupNorm layers a branch (None: torchvision's 4, no norm)
    box_head_dim: int | None = None  # Faster R-CNN FC width (None: min(1024, 4 x FPN width))
    teacher_epochs_retinanet: int | None = None   # RetinaNet teachers learn slower from scratch (None: teacher_epochs)

    def anchor_factor_for(self, arch: str) -> float:
        """The anchor factor of ``arch`` (RetinaNet anchors are 4 x stride, the RPN's 8 x stride, times it)."""
        if arch == "faster_rcnn" and self.anchor_factor_faster_rcnn is not None:
            return self.anchor_factor_faster_rcnn
        return self.anchor_factor


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
    val_images: int = 0                 # a validation split to choose on (the test split is ORSSD-like "test")


@dataclass(frozen=True)
class CrossModalScale:
    """Sizes for the FreqKD chapter: paired RGB / thermal-IR scenes and the two trunks.

    The tutorial scale uses the other chapters' small CNN (a timm ``regnetx_002`` tapped at strides
    4-32, a P2-P5 RetinaNet): a ViT trained from scratch on a few hundred CPU steps does not learn to
    detect (the stored ViT teacher reached 1.8 AP50), and the abstract itself has a ResNet-50 row.
    A ``vit_*`` name builds a ViT trunk instead (the full-scale configs: DINOv2).
    """

    image_size: int
    train_pairs: int
    val_pairs: int
    study_pairs: int                 # pairs in the divergence study (abstract: 500)
    teacher_backbone: str            # timm architecture of the RGB teacher's trunk
    student_backbone: str            # ... of the IR student (same: initialised from the teacher, as the paper)
    vit_depth: int | None            # blocks of a ViT trunk (None: the architecture's own)
    pyramid_channels: int            # FPN / simple-pyramid width
    anchor_factor: float             # x the paper anchors (RetinaNet 4 x stride)
    teacher_epochs: int              # RGB detector training of the teacher (shipped in cpu)
    distill_epochs: int              # stage A: feature distillation RGB -> IR
    finetune_epochs: int             # stage B: IR detection fine-tuning
    batch_size: int
    lr: float                        # AdamW peak LR of the teacher (trained from scratch)
    distill_lr: float                # AdamW peak LR of stage A
    finetune_lr: float               # AdamW peak LR of stage B
    warmup_iters: int
    sweep_cutoffs: tuple[float, ...]  # stage-A cutoff grid (cycles per feature-map pixel), chosen on val
    sweep_weights: tuple[float, ...]  # stage-A high-band weight grid, chosen on val
    test_pairs: int = 0              # held-out pairs every table reports (0: report val)
    head_convs: int | None = None    # RetinaNet conv + GroupNorm layers a branch (None: torchvision's head)


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
        """The device chapters run on: an indexed CUDA device (``cuda:0``, or the current one) when
        there is a GPU, else the CPU (:func:`rskd_tutorial.devices.default_device`)."""
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


_PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        seeds=(0,),
        num_workers=0,
        detection=DetectionScale(
            image_size=96, train_images=16, val_images=8, test_images=8,
            teacher_backbone="regnetx_002", student_backbone="regnetx_002", fpn_channels=32,
            anchor_factor=0.35, anchor_factor_faster_rcnn=0.25, head_convs=1, box_head_dim=64,
            teacher_epochs=1, student_epochs=1, batch_size=4,
            lr_retinanet=2e-3, lr_faster_rcnn=2e-3, warmup_iters=2, optimizer="adamw", weight_decay=0.05,
            rois_per_image=64, rpn_proposals=100, amplifier_epochs=1,
        ),
        saliency=SaliencyScale(
            resolutions=(64, 32, 16), eval_size=64, train_images=8, test_images=4, val_images=4,
            backbone="regnetx_002", teacher_epochs=1, student_epochs=1, batch_size=4, lr=1e-3,
            channels=16, transformer_backbone="pvt_v2_b0", warmup_iters=0,
        ),
        crossmodal=CrossModalScale(
            image_size=64, train_pairs=8, val_pairs=4, test_pairs=4, study_pairs=8,
            teacher_backbone="regnetx_002", student_backbone="regnetx_002", vit_depth=None,
            pyramid_channels=16, anchor_factor=0.35, head_convs=1, teacher_epochs=1, distill_epochs=1,
            finetune_epochs=1, batch_size=4, lr=1e-3, distill_lr=1e-4, finetune_lr=3e-4, warmup_iters=1,
            sweep_cutoffs=(0.25,), sweep_weights=(0.1, 1.0),
        ),
        notes="code path only: numbers in this profile mean nothing",
    ),
    "cpu": Profile(
        name="cpu",
        seeds=(0, 1, 2),                 # student seeds of a comparison row (RSKD_SEEDS=1 for a quick look)
        num_workers=0,                   # scenes are held in memory: no decoding, no worker start-up
        detection=DetectionScale(
            image_size=192, train_images=1000, val_images=100, test_images=100,
            teacher_backbone="regnetx_002", student_backbone="regnetx_002", fpn_channels=64,
            anchor_factor=0.35, anchor_factor_faster_rcnn=0.25, head_convs=1, box_head_dim=256,
            teacher_epochs=18, teacher_epochs_retinanet=30, student_epochs=2, batch_size=8,
            lr_retinanet=2e-3, lr_faster_rcnn=2e-3, warmup_iters=50, optimizer="adamw", weight_decay=0.05,
            rois_per_image=128, rpn_proposals=300, amplifier_epochs=2,
        ),
        saliency=SaliencyScale(
            resolutions=(96, 48, 24), eval_size=96, train_images=600, test_images=100, val_images=100,
            backbone="regnetx_002", teacher_epochs=40, student_epochs=8, batch_size=16, lr=2e-3,
            channels=32, transformer_backbone="pvt_v2_b0", warmup_iters=20,
        ),
        crossmodal=CrossModalScale(
            image_size=160, train_pairs=1000, val_pairs=100, test_pairs=100, study_pairs=200,
            teacher_backbone="regnetx_002", student_backbone="regnetx_002", vit_depth=None,
            pyramid_channels=64, anchor_factor=0.35, head_convs=1, teacher_epochs=20,
            distill_epochs=1, finetune_epochs=1,   # one epoch a stage: 23 student runs fit 30 min on 2 cores
            batch_size=8, lr=2e-3, distill_lr=5e-4, finetune_lr=5e-4, warmup_iters=50,
            sweep_cutoffs=(0.125, 0.25, 0.375), sweep_weights=(0.1, 1.0),   # grid on seed 0, chosen on val
        ),
        notes="the tutorial scale on 2 CPU cores: shipped teachers, students of a few minutes, 3 seeds",
    ),
    "gpu": Profile(
        name="gpu",
        seeds=(0, 1, 2),                 # RSKD_FULL=1: 5 seeds
        num_workers=4,
        detection=DetectionScale(
            image_size=192, train_images=4000, val_images=300, test_images=300,
            teacher_backbone="regnetx_002", student_backbone="regnetx_002", fpn_channels=64,
            anchor_factor=0.35, anchor_factor_faster_rcnn=0.25, head_convs=1, box_head_dim=256,
            teacher_epochs=30, teacher_epochs_retinanet=45, student_epochs=2, batch_size=64,
            lr_retinanet=2e-3, lr_faster_rcnn=2e-3, warmup_iters=100, optimizer="adamw", weight_decay=0.05,
            rois_per_image=128, rpn_proposals=300, amplifier_epochs=3,
        ),
        saliency=SaliencyScale(
            resolutions=(128, 64, 32), eval_size=128, train_images=1500, test_images=200, val_images=200,
            backbone="regnetx_002", teacher_epochs=40, student_epochs=10, batch_size=32, lr=2e-3,
            channels=32, transformer_backbone="pvt_v2_b0", warmup_iters=50,
        ),
        crossmodal=CrossModalScale(
            image_size=224, train_pairs=3000, val_pairs=300, test_pairs=300, study_pairs=500,
            teacher_backbone="regnetx_002", student_backbone="regnetx_002", vit_depth=None,
            pyramid_channels=64, anchor_factor=0.5, head_convs=1, teacher_epochs=30, distill_epochs=3,
            finetune_epochs=3, batch_size=32, lr=4e-3, distill_lr=1e-3, finetune_lr=1e-3, warmup_iters=100,
            sweep_cutoffs=(0.25,), sweep_weights=(0.1,),       # RSKD_FULL=1: FULL_SWEEP
        ),
        notes="at most 10 min a chapter on one H100 (rskd plan --profile gpu); teachers trained in the chapters",
    ),
}
# Colab's free T4: the gpu profile's models on fewer scenes, in smaller batches.
_GPU = _PROFILES["gpu"]
_PROFILES["t4"] = replace(
    _GPU, name="t4", num_workers=2,                       # Colab: 2 CPU cores
    detection=replace(_GPU.detection, train_images=2000, val_images=200, test_images=200, student_epochs=3,
                      batch_size=32),
    saliency=replace(_GPU.saliency, train_images=1000),
    crossmodal=replace(_GPU.crossmodal, image_size=160, train_pairs=2000, val_pairs=200, test_pairs=200,
                       anchor_factor=0.35),
    notes="Colab's free T4 (fp16, 16 GB): a chapter in one session (rskd plan --profile t4)",
)


def profile_name_from_env() -> str:
    """The profile name from ``RSKD_PROFILE``, else ``gpu`` with CUDA, else ``cpu``."""
    name = os.environ.get("RSKD_PROFILE", "").strip().lower()
    if name:
        return name
    return "gpu" if torch.cuda.is_available() else "cpu"


def full_runs() -> bool:
    """``RSKD_FULL=1`` (or ``true`` / ``yes``): the ``gpu`` and ``t4`` profiles' extra seeds and sweeps."""
    return os.environ.get("RSKD_FULL", "").strip().lower() in ("1", "true", "yes")


def get_profile(name: str | None = None) -> Profile:
    """Return the named profile (``ci`` | ``cpu`` | ``gpu`` | ``t4``); ``None`` reads ``RSKD_PROFILE``.
    ``RSKD_FULL=1`` widens ``gpu`` / ``t4`` (:data:`FULL_SEEDS`, :data:`FULL_SWEEP`); ``RSKD_SEEDS=n`` then
    keeps ``n`` seeds."""
    name = (name or profile_name_from_env()).lower()
    if name not in _PROFILES:
        raise ValueError(
            f"unknown profile {name!r} (from RSKD_PROFILE or the argument); choose one of {PROFILE_NAMES}"
        )
    profile = _PROFILES[name]
    if full_runs() and name in ("gpu", "t4"):
        cutoffs, weights = FULL_SWEEP
        profile = replace(profile, seeds=FULL_SEEDS,
                          crossmodal=replace(profile.crossmodal, sweep_cutoffs=cutoffs, sweep_weights=weights))
    n = os.environ.get("RSKD_SEEDS", "").strip()
    if n:
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"RSKD_SEEDS must be a positive integer (the number of student seeds), got {n!r}")
        profile = replace(profile, seeds=tuple(range(int(n))))
    return profile
