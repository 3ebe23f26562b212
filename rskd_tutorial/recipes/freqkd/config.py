"""The ``freqkd`` recipe's config dataclasses: data, trunks, head, loss, the two stages and the study."""

from __future__ import annotations

from dataclasses import dataclass, field

from rskd_tutorial.engine.train import TrainConfig


@dataclass
class PairedData:
    """A paired RGB / IR dataset in COCO layout: ``file_name`` = IR frame, ``paired_file_name`` = RGB
    frame (what ``write_scenes("rgbir", ...)`` and the KAIST / FLIR converters in ``data_scripts/``
    write)."""

    root: str
    train_split: str = "train"
    val_split: str = "val"
    hflip: float = 0.5               # the same flip on both frames of a pair (keeps them aligned)
    resize: tuple[int, int] | None = None   # (h, w) both frames are resized to (stage A; default: as stored)
    name: str | None = None          # dataset name in error messages ("KAIST", "FLIR ADAS")
    in_memory: bool = False          # decode every frame once and keep it (the synthetic tutorial pairs)


@dataclass
class BackboneSpec:
    """A trunk: a timm ViT (``vit_base_patch14_dinov2`` ...), a torchvision ResNet (``resnet50`` ...) or a
    small timm CNN (``regnetx_002``: the tutorial scale, tapped at strides 4-32)."""

    arch: str
    img_size: tuple[int, int] = (224, 224)    # ViT positional-embedding grid (multiples of the patch)
    weights: str | None = None                # local file: DINOv2 (ViT) or torchvision ImageNet (ResNet)
    blocks: tuple[int, ...] | None = None     # ViT blocks tapped for distillation (0-based); default: last
    depth: int | None = None                  # override the ViT depth (tutorial profiles)
    drop_path_rate: float = 0.0


@dataclass
class HeadSpec:
    """The detector put on a trunk in stage B."""

    arch: str = "retinanet"                   # retinanet | faster_rcnn
    out_channels: int = 256                   # pyramid / FPN width
    head_convs: int | None = None             # RetinaNet: conv + GroupNorm layers a branch (None: torchvision's head)
    anchor_factor: float = 1.0
    min_size: int | None = None               # detector resize; default: the trunk's img_size
    max_size: int | None = None


@dataclass
class LossSpec:
    """FreqKD's loss options (``distill.freqkd.freqkd_loss``; every default but ``high_weight`` is ours).
    ``low_weight = 0`` or ``high_weight = 0`` gives the single-band variants of the ablation."""

    cutoff: float = 0.25
    high_weight: float = 0.1
    low_weight: float = 1.0
    log_mse: str = "signed_log1p"             # signed_log1p | log1p_of_mse | none
    l2_normalize: bool = True
    split: str = "fft"                        # fft | haar | none (full-band MSE control)
    kind: str = "ideal"                       # ideal | gaussian
    levels: tuple[str, ...] | None = None     # teacher taps (default: all the teacher taps)
    student_levels: tuple[str, ...] | None = None


@dataclass
class StageA:
    """Stage A: feature distillation RGB teacher -> IR student on paired frames."""

    data: PairedData
    train: TrainConfig
    loss: LossSpec = field(default_factory=LossSpec)


@dataclass
class StageB:
    """Stage B: detection fine-tuning on IR (identical for the baseline and every distilled trunk)."""

    data: PairedData
    head: HeadSpec
    train: TrainConfig
    backbone_lr_scale: float = 1.0            # trunk LR = scale x train.lr
    eval_batch_size: int = 8


@dataclass
class DivergenceSpec:
    """The spectral divergence study (``rskd divergence``)."""

    root: str | None = None                   # default: stage A's (else stage B's) data root
    split: str = "train"
    pairs: int = 500
    blocks: tuple[int, ...] | None = None     # default: every block
    cutoff: float = 0.25
    kind: str = "ideal"
    band_split: str = "fft"                   # fft | haar
    metric: str = "cosine"                    # cosine | nmse | rel_mse
    window: str | None = None                 # None | hann
    n_boot: int = 1000
    batch_size: int = 8
    seed: int = 0


@dataclass
class FreqKDRun:
    """Config of the ``freqkd`` recipe (``rskd_tutorial/configs/freqkd/``)."""

    teacher: BackboneSpec
    student: BackboneSpec
    stage_b: StageB
    stage_a: StageA | None = None             # None: no distillation (the DINOv2 baseline row)
    stage_a_weights: str | None = None        # a finished stage A (its final.pt): skip stage A (FLIR transfer)
    divergence: DivergenceSpec = field(default_factory=DivergenceSpec)
