"""A run that survives being killed: ``rskd train`` SIGKILLed in its second epoch and resumed with --resume
ends with the same weights as an uninterrupted run; a checkpoint write that fails (a full disk) leaves the
previous checkpoint loadable."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from rskd_tutorial.engine import TrainConfig, fit, load_checkpoint
from rskd_tutorial.engine import train as train_module

from cli_helpers import config, rskd, rskd_popen

SMOKE = config("detector", "detector_synthetic_retinanet")
THREE_EPOCHS = ("--no-progress", "--set", "train.epochs=3", "--set", "train.eval_every=3")


def _wait_for(path: Path, proc, timeout: float = 240) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, f"rskd exited ({proc.returncode}) before writing {path}"
        assert time.monotonic() - t0 < timeout, f"no {path} after {timeout} s"
        time.sleep(0.02)


def _model_state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_sigkill_in_second_epoch_then_resume_equals_uninterrupted(tmp_path: Path):
    proc = rskd("synth", "optical", "data/synthetic/detector-optical-64", "--n", "12", "--size", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr       # the config's own scenes (8 train + 4 val), written once
    full = rskd_popen("train", SMOKE, "--out", "runs/full", *THREE_EPOCHS, cwd=tmp_path)
    killed = rskd_popen("train", SMOKE, "--out", "runs/killed", *THREE_EPOCHS, cwd=tmp_path)
    ckpt = tmp_path / "runs/killed/checkpoint.pt"
    try:
        _wait_for(ckpt, killed)                    # epoch 1 is saved: the second epoch is running
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(60) == -signal.SIGKILL
    finally:
        if killed.poll() is None:
            killed.kill()
    assert not (tmp_path / "runs/killed/final.pt").exists()
    assert load_checkpoint(ckpt)["epoch"] == 1
    resumed = rskd("train", SMOKE, "--out", "runs/killed", "--resume", *THREE_EPOCHS, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed runs/killed at epoch 1/3" in resumed.stdout
    assert full.wait(300) == 0
    a, b = _model_state(tmp_path / "runs/full/final.pt"), _model_state(tmp_path / "runs/killed/final.pt")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert load_checkpoint(tmp_path / "runs/full/checkpoint.pt")["epoch"] == 3


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, y):
        return {"loss": nn.functional.mse_loss(self.lin(x), y)}


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    return list(zip(x, x.sum(1, keepdim=True)))


def _collate(batch):
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.stack(ys)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=4, warmup_iters=0, seed=1)
    real_save = torch.save
    calls = {"n": 0}

    def save_until_full(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:                        # epoch 2's checkpoint: half written, then the disk is full
            Path(f).write_bytes(b"PK\x03\x04 half a zip")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(train_module.torch, "save", save_until_full)
    torch.manual_seed(0)
    with pytest.raises(OSError, match="previous checkpoint.pt is intact") as info:
        fit(_Tiny(), _data(), cfg, tmp_path / "run", collate_fn=_collate, progress=False, verbose=False)
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "metrics.jsonl"]  # no .tmp
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(train_module.torch, "save", real_save)
    torch.manual_seed(0)
    resumed = fit(_Tiny(), _data(), cfg, tmp_path / "run", collate_fn=_collate, resume=True, progress=False,
                  verbose=False)
    torch.manual_seed(0)
    straight = fit(_Tiny(), _data(), cfg, tmp_path / "straight", collate_fn=_collate, progress=False, verbose=False)
    assert resumed.epochs_run == 3
    for k, v in _model_state(tmp_path / "straight" / "final.pt").items():
        assert torch.equal(v, _model_state(tmp_path / "run" / "final.pt")[k])
    del straight
