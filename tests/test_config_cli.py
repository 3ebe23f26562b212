"""Config validation and the rskd command: one-line errors naming the key, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rskd_tutorial.cli import main
from rskd_tutorial.config import ConfigError, parse_config
from rskd_tutorial.engine import TrainConfig


@dataclass
class Inner:
    size: int
    name: str = "x"


@dataclass
class Outer:
    inner: Inner
    train: TrainConfig
    ratio: float | None = None
    levels: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


def test_parse_config_nested_and_coerced():
    cfg = parse_config(Outer, {"inner": {"size": 3}, "train": {"epochs": 2, "lr": "1e-3"}, "levels": ["p3", "p4"]})
    assert cfg.inner.size == 3 and cfg.train.lr == 1e-3 and cfg.levels == ("p3", "p4") and cfg.ratio is None


@pytest.mark.parametrize("data, message", [
    ({"inner": {"size": 3, "colour": 1}, "train": {"epochs": 1, "lr": 1.0}}, "inner.colour: unknown key"),
    ({"inner": {"size": "big"}, "train": {"epochs": 1, "lr": 1.0}}, "inner.size: expected int, got str 'big'"),
    ({"inner": {"size": 1}, "train": {"epochs": 1}}, "train.lr: required key is missing"),
    ({"inner": {"size": 1}, "train": {"epochs": 1, "lr": 1.0, "optimizer": "adam"}}, "optimizer must be one of"),
    ({"inner": {"size": 1}, "train": {"epochs": 1, "lr": 1.0}, "levels": "p3"}, "levels: expected a list"),
])
def test_parse_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(Outer, data)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_cli_unknown_key_exits_2_with_one_line(tmp_path: Path, capsys):
    path = _write(tmp_path, "recipe: detector\ndata: {root: /x}\nmodel: {arch: retinanet, backbon: resnet18}\n"
                            "train: {epochs: 1, lr: 0.01}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.backbon: unknown key" in err


def test_cli_wrong_type_exits_2(tmp_path: Path, capsys):
    path = _write(tmp_path, "recipe: detector\ndata: {root: /x}\nmodel: {arch: retinanet, backbone: resnet18}\n"
                            "train: {epochs: two, lr: 0.01}\n")
    assert main(["train", str(path)]) == 2
    assert "train.epochs: expected int, got str 'two'" in capsys.readouterr().err


def test_cli_unknown_recipe_and_missing_dataset(tmp_path: Path, capsys):
    assert main(["train", str(_write(tmp_path, "recipe: nope\n"))]) == 2
    assert "'nope' is not registered; available:" in capsys.readouterr().err
    path = _write(tmp_path, f"recipe: detector\ndata: {{root: {tmp_path / 'missing'}}}\n"
                            "model: {arch: retinanet, backbone: resnet18}\ntrain: {epochs: 1, lr: 0.01}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and err.strip().count("\n") == 0


def test_rskd_console_script_help_and_info():
    out = subprocess.run([sys.executable, "-m", "rskd_tutorial.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "synth" in out.stdout
    out = subprocess.run([sys.executable, "-m", "rskd_tutorial.cli", "info"], capture_output=True, text=True)
    assert out.returncode == 0 and "profile:" in out.stdout and "torch" in out.stdout
