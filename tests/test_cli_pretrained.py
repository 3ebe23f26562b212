"""Pretrained-weight errors name the expected file, its source and checksum; one filename per backbone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from rskd_tutorial.models.detectors import resnet_fpn
from rskd_tutorial.models.pretrained import PRETRAINED, sha256_of
from rskd_tutorial.models.utils import CheckpointError
from rskd_tutorial.recipes.registry import load_run_config

from cli_helpers import CONFIGS, config, error_line, rskd


def _specs(obj, where=""):
    """(dotted key, backbone, pretrained path) of every spec with a pretrained_backbone inside a config."""
    if not dataclasses.is_dataclass(obj):
        return
    if hasattr(obj, "backbone") and getattr(obj, "pretrained_backbone", None):
        yield where, obj.backbone, obj.pretrained_backbone
    for f in dataclasses.fields(obj):
        yield from _specs(getattr(obj, f.name), f"{where}.{f.name}".strip("."))


def test_every_config_names_the_one_file_of_its_backbone():
    seen: dict[str, set[str]] = {}
    for path in sorted(CONFIGS.rglob("*.yaml")):
        for key, backbone, weights in _specs(load_run_config(path).config):
            assert backbone in PRETRAINED, f"{path.name}: {key} {backbone} has no entry in models.pretrained"
            assert Path(weights).name == PRETRAINED[backbone].filename, f"{path.name}: {key}"
            seen.setdefault(backbone, set()).add(weights)
    assert {b: len(v) for b, v in seen.items()} == {b: 1 for b in seen}   # one path per backbone
    assert {"resnet18", "resnet50", "resnet101"} <= set(seen)


def test_missing_weights_through_rskd_name_file_source_and_checksum(tmp_path: Path):
    proc = rskd("train", config("detector", "detector_synthetic_retinanet"), "--set", "model.backbone=resnet18",
                "--set", "model.pretrained_backbone=weights/resnet18.pth", cwd=tmp_path)
    line = error_line(proc)
    assert proc.returncode == 2
    for needle in ("weights/resnet18.pth", "resnet18-f37072fd.pth", "ResNet18_Weights.IMAGENET1K_V1",
                   "sha256 f37072fd", "https://download.pytorch.org/models/resnet18-f37072fd.pth"):
        assert needle in line, (needle, line)


def test_a_wrong_file_under_the_right_name_reports_its_checksum(tmp_path: Path):
    bogus = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"not_a_resnet.weight": torch.zeros(1)}, bogus)
    with pytest.raises(CheckpointError) as info:
        resnet_fpn("resnet18", returned_layers=[2, 3, 4], out_channels=8, extra="p6p7", pretrained_backbone=bogus)
    message = str(info.value)
    assert "does not fit resnet18" in message and "expected resnet18-f37072fd.pth" in message
    assert f"its sha256 is {sha256_of(bogus)[:8]}..., not f37072fd" in message
