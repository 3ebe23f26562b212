"""The SCRKD recipes' config dataclasses: data, the SOD net, and the three runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from rskd_tutorial.distill.scrkd import COMPONENTS, SCRKD_COEFFICIENTS, SCRKDCoefficients
from rskd_tutorial.engine.train import TrainConfig

METRIC_KEYS = ("MAE", "maxF", "Sm", "maxEm")


@dataclass
class SaliencyData:
    """A SOD dataset in the package layout ``ROOT/<split>/{images,masks}`` (``data_scripts/`` converts
    ORSSD, EORSSD and ORSI-4199 to it) and how it is augmented and evaluated."""

    root: str
    train_split: str = "train"
    test_split: str = "test"
    hflip: float = 0.5
    vflip: float = 0.5               # the official code draws a random element of the dihedral group
    eval_size: int = 448             # the paper computes every metric at 448 x 448
    name: str | None = None          # dataset name for error messages (e.g. "EORSSD")


@dataclass
class SaliencyModelSpec:
    """An SOD net as ``models.saliency.build_saliency_model`` takes it."""

    arch: str = "pspnet"             # pspnet | transformer
    backbone: str = "resnet50"       # resnet18/34/50/101, or a timm PVTv2 name for the transformer
    channels: int = 256
    pretrained_backbone: str | None = None   # local torchvision ResNet file (resnet50-0676ba61.pth: models.pretrained)


@dataclass
class SODRun:
    """``sod_model`` recipe: train one SOD net at ``resolution`` with its own loss (teacher or baseline)."""

    data: SaliencyData
    model: SaliencyModelSpec
    resolution: int
    train: TrainConfig
    eval_batch_size: int = 8


@dataclass
class SCRKDRun:
    """``scrkd`` recipe: distil the trained teacher (``teacher_checkpoint``, a ``final.pt`` of a
    ``sod_model`` run, loaded strictly) at ``teacher_resolution`` into a student at ``student_resolution``."""

    data: SaliencyData
    model: SaliencyModelSpec
    teacher_resolution: int
    student_resolution: int
    teacher_checkpoint: str
    train: TrainConfig
    coefficients: SCRKDCoefficients = field(default_factory=lambda: SCRKD_COEFFICIENTS["pspnet"])
    components: tuple[str, ...] = COMPONENTS
    matching: str | None = None      # 2x | 4x | cascade | same; default from the resolutions
    eval_batch_size: int = 8


@dataclass
class CascadeRun:
    """``scrkd_cascade`` recipe: teacher (``teacher_checkpoint``) -> assistant -> student."""

    data: SaliencyData
    model: SaliencyModelSpec
    resolutions: tuple[int, int, int]            # teacher, assistant, student (paper: 448, 224, 112)
    teacher_checkpoint: str
    train: TrainConfig
    coefficients: SCRKDCoefficients = field(default_factory=lambda: SCRKD_COEFFICIENTS["pspnet"])
    components: tuple[str, ...] = COMPONENTS
    matching: tuple[str, str] | None = None      # per stage; default: stage_matching(teacher, assistant), then cascade
    eval_batch_size: int = 8
