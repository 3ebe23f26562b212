"""The ``rskd`` entry point in a subprocess: --version, the delegated subcommands' own options and --help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rskd_tutorial import __version__

from cli_helpers import error_line, rskd


def test_version(tmp_path: Path):
    proc = rskd("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"rskd {__version__}"


@pytest.mark.parametrize("command, option", [
    ("synth", "--val-fraction"), ("divergence", "--pairs"), ("bench", "--detector"), ("teachers", "--check"),
])
def test_delegated_subcommand_help(tmp_path: Path, command: str, option: str):
    """A leading option reaches the subcommand's own parser (argparse.REMAINDER used to drop it: exit 2)."""
    proc = rskd(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: rskd {command}") and option in proc.stdout


def test_synth_options_before_positionals(tmp_path: Path):
    proc = rskd("synth", "--n", "3", "--size", "32", "--workers", "1", "optical", tmp_path / "scenes", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "scenes" / "synth_manifest.json").read_text())
    assert (manifest["kind"], manifest["size"], manifest["n_train"] + manifest["n_val"]) == ("optical", 32, 3)


def test_bench_readme_options_reach_bench(tmp_path: Path):
    """The README's `rskd bench --detector retinanet --profile ...`, at the ci profile and one step."""
    out = tmp_path / "bench.json"
    proc = rskd("bench", "--detector", "retinanet", "--profile", "ci", "--method", "student", "--steps", "1",
                "--warmup", "0", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file() and "student" in out.read_text()


def test_unknown_subcommand_and_bad_set_are_usage_errors(tmp_path: Path):
    assert rskd("nope", cwd=tmp_path).returncode == 2
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("recipe: detector\ndata: {root: x}\nmodel: {arch: retinanet, backbone: regnetx_002}\n"
                   "train: {epochs: 1, lr: 0.01}\n")
    for flag, message in (("train.epochs=two", "train.epochs: expected int, got str 'two'"),
                          ("model.backbon=resnet18", "model.backbon: unknown key"),
                          ("train", "expected KEY=VALUE"),
                          ("data.root.x=1", "data.root is str")):
        proc = rskd("train", cfg, "--set", flag, cwd=tmp_path)
        assert proc.returncode == 2 and message in error_line(proc), (flag, proc.stderr)
