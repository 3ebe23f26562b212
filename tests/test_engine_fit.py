"""engine.fit: exact resume, DDP under torchrun (gloo), non-finite loss, run-folder safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from rskd_tutorial.engine import NonFiniteLossError, RunExistsError, TrainConfig, fit, load_checkpoint, read_metrics


class NoisyRegression(Dataset):
    """y = x @ w + noise; a random flip in __getitem__ exercises the data RNG."""

    def __init__(self, n: int = 24):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        self.y = self.x @ torch.randn(6, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i] * (-1 if torch.rand(()) < 0.5 else 1)  # augmentation drawn from torch's RNG
        return x, self.y[i]


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x, y):
        return {"loss_mse": nn.functional.mse_loss(self.net(x), y), "logged": x.mean()}


def _collate(batch):
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.stack(ys)


def _config(**kw):
    base = dict(epochs=3, lr=0.05, batch_size=4, milestones=(2,), warmup_iters=4, seed=3, grad_clip=5.0)
    base.update(kw)
    return TrainConfig(**base)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_is_exact(tmp_path: Path):
    torch.manual_seed(0)
    full = TinyNet()
    init = _weights(full)
    fit(full, NoisyRegression(), _config(), tmp_path / "full", collate_fn=_collate, progress=False, verbose=False)

    part = TinyNet()
    part.load_state_dict(init)
    # interrupted after epoch 1 (6 steps of 4 images), then resumed in a fresh process-like state
    fit(part, NoisyRegression(), _config(), tmp_path / "part", collate_fn=_collate, progress=False,
        verbose=False, max_steps=6)
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["epoch"] == 1
    torch.manual_seed(12345)  # whatever happened in between must not matter
    resumed = TinyNet()
    fit(resumed, NoisyRegression(), _config(), tmp_path / "part", collate_fn=_collate, progress=False,
        verbose=False, resume=True)
    for k, v in _weights(full).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert not torch.equal(init["net.0.weight"], resumed.state_dict()["net.0.weight"])


def test_metrics_logged_and_logged_only_terms_not_optimised(tmp_path: Path):
    result = fit(TinyNet(), NoisyRegression(), _config(epochs=2), tmp_path, collate_fn=_collate, progress=False,
                 verbose=False, evaluate=lambda m: {"score": 0.5})
    records = read_metrics(tmp_path)
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[-1]["val_score"] == 0.5 and result.final_metrics == {"score": 0.5}
    assert all("logged" in r and "loss_mse" in r for r in records)
    # total 'loss' equals loss_mse alone: the 'logged' key is not summed into the objective
    assert all(abs(r["loss"] - r["loss_mse"]) < 1e-6 for r in records if r["kind"] == "train")
    assert (tmp_path / "final.pt").is_file()


def test_existing_run_is_not_overwritten(tmp_path: Path):
    fit(TinyNet(), NoisyRegression(), _config(epochs=1), tmp_path, collate_fn=_collate, progress=False, verbose=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(RunExistsError, match="resume=True"):
        fit(TinyNet(), NoisyRegression(), _config(epochs=1), tmp_path, collate_fn=_collate, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


class ExplodesAtStep(TinyNet):
    def __init__(self, step: int):
        super().__init__()
        self.calls, self.at = 0, step

    def forward(self, x, y):
        self.calls += 1
        out = super().forward(x, y)
        bad = torch.tensor(float("nan")) if self.calls == self.at else torch.tensor(0.0)
        out["loss_planted"] = bad
        return out


def test_non_finite_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path: Path):
    model = ExplodesAtStep(step=8)  # 6 steps an epoch: the NaN comes in epoch 2, step 8
    with pytest.raises(NonFiniteLossError) as err:
        fit(model, NoisyRegression(), _config(), tmp_path, collate_fn=_collate, progress=False, verbose=False)
    msg = str(err.value)
    assert "epoch 2, step 8" in msg and "loss_planted=nan" in msg and "intact" in msg
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_engine_fit import TinyNet, NoisyRegression, _collate, _config
    from rskd_tutorial.engine import fit
    torch.manual_seed(dist.get_rank() if dist.is_initialized() else int(__import__('os').environ['RANK']))
    model = TinyNet()  # different initial weights on each rank: DDP must broadcast rank 0's
    fit(model, NoisyRegression(), _config(epochs=1), sys.argv[1], collate_fn=_collate, progress=False,
        verbose=False, max_steps=2, device="cpu")
    torch.save(model.state_dict(), f"{{sys.argv[1]}}/rank{{dist.get_rank()}}.pt")
""")


@pytest.mark.slow
def test_ddp_two_ranks_gloo_hold_identical_weights(tmp_path: Path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                           str(script), str(out)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2


def test_optimizer_state_lives_only_while_a_run_is_in_progress(tmp_path: Path):
    """Mid-run checkpoints are resumable (optimizer included); once final.pt exists the kept checkpoint holds
    weights and progress only, and resuming the finished run is a no-op."""
    torch.manual_seed(0)
    init = _weights(TinyNet())
    full = TinyNet()
    full.load_state_dict(init)
    fit(full, NoisyRegression(), _config(), tmp_path / "full", collate_fn=_collate, progress=False, verbose=False)
    done = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert done["epoch"] == 3 and "optimizer" not in done and "rng" not in done
    assert all(torch.equal(v, done["model"][k]) for k, v in full.state_dict().items())
    again = fit(TinyNet(), NoisyRegression(), _config(), tmp_path / "full", collate_fn=_collate, progress=False,
                verbose=False, resume=True)
    assert again.epochs_run == 3 and load_checkpoint(tmp_path / "full" / "checkpoint.pt")["epoch"] == 3



def test_resume_from_a_mid_run_checkpoint_with_optimizer_state(tmp_path: Path):
    torch.manual_seed(0)
    init = _weights(TinyNet())
    full, part = TinyNet(), TinyNet()
    full.load_state_dict(init)
    part.load_state_dict(init)
    fit(full, NoisyRegression(), _config(), tmp_path / "full", collate_fn=_collate, progress=False, verbose=False,
        keep_checkpoint=False)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["final.pt", "metrics.jsonl"]

    class StopAfterEpoch1(Exception):
        pass

    cfg = _config(eval_every=1)
    seen = []

    def killer(model):            # raises in epoch 2, after epoch 1's checkpoint: a run killed mid-way
        seen.append(1)
        if len(seen) == 2:
            raise StopAfterEpoch1
        return {"x": 0.0}

    with pytest.raises(StopAfterEpoch1):
        fit(part, NoisyRegression(), cfg, tmp_path / "part", collate_fn=_collate, progress=False, verbose=False,
            evaluate=killer, keep_checkpoint=False)
    mid = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert mid["epoch"] == 1 and {"optimizer", "scheduler", "rng", "scaler"} <= set(mid)
    resumed = TinyNet()
    fit(resumed, NoisyRegression(), cfg, tmp_path / "part", collate_fn=_collate, progress=False, verbose=False,
        resume=True, keep_checkpoint=False)
    assert not (tmp_path / "part" / "checkpoint.pt").exists()
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_not_resumable_checkpoints_hold_no_optimizer_state(tmp_path: Path):
    fit(TinyNet(), NoisyRegression(), _config(), tmp_path, collate_fn=_collate, progress=False, verbose=False,
        max_steps=6, resumable=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and "optimizer" not in state
    with pytest.raises(RuntimeError, match="no optimizer state"):
        fit(TinyNet(), NoisyRegression(), _config(), tmp_path, collate_fn=_collate, progress=False, verbose=False,
            resume=True)


def test_deferred_finite_check_names_the_step_range(tmp_path: Path):
    from rskd_tutorial.engine.train import _check_finite

    losses = {"loss_a": torch.tensor(float("nan"))}
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, steps 7-9: loss_a=nan"):
        _check_finite(losses, torch.tensor(0.0), 1, 8, tmp_path / "none.pt", False, since=6, bad=torch.tensor(1.0))
    _check_finite(losses, torch.tensor(0.0), 1, 8, tmp_path / "none.pt", False, since=6, bad=torch.tensor(0.0))
