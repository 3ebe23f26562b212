"""The ImageNet files the full-scale configs expect, one filename per backbone, and errors that name them.

Nothing is ever downloaded: a config's ``pretrained_backbone:`` is the path of a local file. This table says
which file that is for each backbone (torchvision's ``IMAGENET1K_V1`` weights, the ones mmdet's
``torchvision://resnetXX`` and the papers' code load), where it comes from, and its checksum: torchvision
names each file ``<arch>-<first 8 hex digits of its sha256>.pth``. The legacy files of 2017
(``resnet50-19c8e357.pth`` ...) hold the same weights in the old serialization (pytorch/vision#2068) and
are accepted under their own names; the configs use the current names.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

TORCHVISION_URL = "https://download.pytorch.org/models/{}"


@dataclass(frozen=True)
class PretrainedFile:
    """One expected weight file: its name, where it comes from and how to check it."""

    backbone: str
    filename: str
    source: str                       # the library's name for these weights
    url: str
    sha256_prefix: str | None         # the first hex digits of the file's sha256 (None: not published)
    legacy: tuple[str, ...] = ()      # other file names of the same weights

    def describe(self) -> str:
        check = f", sha256 {self.sha256_prefix}..." if self.sha256_prefix else ""
        return f"{self.filename} ({self.source}{check}; from {self.url})"


def _torchvision(arch: str, digest: str, enum: str, legacy: str) -> PretrainedFile:
    name = f"{arch}-{digest}.pth"
    return PretrainedFile(arch, name, f"torchvision {enum}.IMAGENET1K_V1", TORCHVISION_URL.format(name), digest,
                          (f"{arch}-{legacy}.pth",))


PRETRAINED: dict[str, PretrainedFile] = {
    "resnet18": _torchvision("resnet18", "f37072fd", "ResNet18_Weights", "5c106cde"),
    "resnet34": _torchvision("resnet34", "b627a593", "ResNet34_Weights", "333f7ec4"),
    "resnet50": _torchvision("resnet50", "0676ba61", "ResNet50_Weights", "19c8e357"),
    "resnet101": _torchvision("resnet101", "63fe2227", "ResNet101_Weights", "5d3b4d8f"),
    "dinov2_vitb14": PretrainedFile(
        "dinov2_vitb14", "dinov2_vitb14_pretrain.pth",
        "Meta's DINOv2 ViT-B/14 (or timm timm/vit_base_patch14_dinov2.lvd142m model.safetensors saved under this name)",
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth", None),
}


def expected_file(backbone: str) -> PretrainedFile | None:
    """The file a config should name for ``backbone``'s ImageNet weights (None: no table entry)."""
    return PRETRAINED.get(backbone)


def missing_weights_message(backbone: str, path: str | os.PathLike) -> str:
    """One line for a ``pretrained_backbone`` path that does not exist: the file expected and its source."""
    entry = expected_file(backbone)
    if entry is None:
        return (f"pretrained weights for {backbone} not found at {os.fspath(path)} (give a local checkpoint, or null to "
                f"train from scratch; nothing is downloaded)")
    what = "download the torchvision checkpoint" if entry.source.startswith("torchvision") else "download the file"
    return (f"pretrained weights for {backbone} not found at {os.fspath(path)}: expected {entry.describe()}; "
            f"{what} by hand to weights/{entry.filename} and point the config at it (nothing is downloaded here), "
            f"or set pretrained_backbone: null to train from scratch")


def mismatch_message(backbone: str, path: str | os.PathLike, missing: list[str], unexpected: list[str]) -> str:
    """One line for a weight file that does not fit ``backbone``: what is wrong, and which file was expected."""
    entry = expected_file(backbone)
    text = f"{os.fspath(path)} does not fit {backbone}: missing {missing[:5]}, unexpected {unexpected[:5]}"
    if entry is not None:
        text += f"; expected {entry.describe()}"
        verdict = checksum_verdict(path, entry)
        if verdict:
            text += f"; {verdict}"
    return text


def checksum_verdict(path: str | os.PathLike, entry: PretrainedFile) -> str:
    """Whether the file's sha256 matches the table (``""`` when the table publishes no checksum)."""
    if not entry.sha256_prefix or not os.path.isfile(path):
        return ""
    digest = sha256_of(path)
    if digest.startswith(entry.sha256_prefix):
        return f"its sha256 {digest[:8]}... matches"
    return f"its sha256 is {digest[:8]}..., not {entry.sha256_prefix}... (another file, or a damaged download)"


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def known_filenames(backbone: str) -> tuple[str, ...]:
    """The current and legacy file names of ``backbone``'s weights."""
    entry = expected_file(backbone)
    return (entry.filename, *entry.legacy) if entry else ()


def check_config_filename(backbone: str, path: str | os.PathLike) -> str | None:
    """A problem with a config's ``pretrained_backbone`` name for ``backbone`` (None: it is the expected name)."""
    entry = expected_file(backbone)
    if entry is None or Path(path).name == entry.filename:
        return None
    return f"{backbone}: {Path(path).name} is not {entry.filename}"
