"""The one training loop of the book: ``fit``.

Every chapter and every full-scale config trains through :func:`fit`. It takes any ``nn.Module``
whose call ``model(inputs, targets)`` returns either a mapping of named losses or a
:class:`~rskd_tutorial.models.outputs.ModelOutput` (whose ``losses`` are used); every entry whose
key starts with ``loss`` is summed into the objective, the others are only logged. A
:class:`~rskd_tutorial.distill.base.Distiller` is such a module, so distillation needs nothing special.

What it does: seeded and resumable to the bit (model, optimizer, scheduler, grad scaler, RNG states,
epoch), mixed precision on CUDA (bf16 on compute capability >= 8.0, else fp16 with a grad scaler:
:func:`~rskd_tutorial.devices.amp_dtype`), a check that every parameter and buffer is on the training
device (an indexed one: a bare ``cuda`` becomes ``cuda:<n>``), DistributedDataParallel under
``torchrun`` (NCCL on GPU, gloo on CPU), gradient clipping, linear warm-up then step or cosine decay,
an atomic checkpoint each epoch, a progress bar on rank 0, metrics appended to
``metrics.jsonl`` in the run folder (TensorBoard too when installed), and a clear error naming the
step and the loss term when a loss stops being finite -- the last good checkpoint stays intact.

Checkpoints and optimizer state: while a run is in progress, ``checkpoint.pt`` is the resumable state
(optimizer, scheduler, grad scaler, RNGs), rewritten atomically after each epoch: this is what ``resume``
and the kill-and-resume guarantee need. Once ``final.pt`` is written the optimizer state has no further
use (the schedule has ended), so a kept ``checkpoint.pt`` (``keep_checkpoint=True``) is rewritten
without optimizer, scaler and RNG state -- weights, epoch, step, history and config only -- and
tutorial runs (``keep_checkpoint=False``) delete it. ``resumable=False`` drops the optimizer state from
the per-epoch checkpoints as well (runs nobody will resume); resuming such a checkpoint with epochs
left is an error that says so.

Speed on CUDA: ``cudnn.benchmark``, pinned host memory with ``non_blocking`` copies, persistent loader
workers (``num_workers > 0``), and no host synchronisation on every step -- logged values are summed on
the device and read every ``log_every`` steps and at the end of an epoch; the finite-loss check runs at
those steps too (on the CPU, where reading a value costs nothing, it runs every step as before). CPU
runs train the same weights, bit for bit, as before these changes.

Taught in chapter 0 (``book/00_distilling_a_detector.ipynb``).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from rskd_tutorial.devices import amp_dtype, check_devices, resolve_device
from rskd_tutorial.models.utils import load_state_strict, read_checkpoint

CHECKPOINT = "checkpoint.pt"     # full training state, rewritten atomically each epoch
FINAL_WEIGHTS = "final.pt"       # model weights only, written when training ends
METRICS = "metrics.jsonl"


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; training stopped, the last checkpoint is intact."""


class RunExistsError(FileExistsError):
    """The run folder already holds a checkpoint and neither ``resume`` nor ``overwrite`` was given."""


@dataclass
class TrainConfig:
    """Optimisation settings of one training run (the ``train:`` block of a YAML config)."""

    epochs: int
    lr: float
    batch_size: int = 8
    optimizer: str = "sgd"                  # sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "multistep"             # multistep | cosine | constant
    milestones: tuple[int, ...] = ()        # epochs at which the LR is multiplied by gamma
    gamma: float = 0.1
    warmup_iters: int = 500                 # linear warm-up (the papers: 500 iterations from 0.001)
    warmup_factor: float = 0.001
    grad_clip: float | None = None          # max global grad norm; None = no clipping
    amp: str = "auto"                       # auto (CUDA capability >= 8.0: bf16, else fp16; CPU off) | bf16 | fp16 | off
    num_workers: int = 0
    seed: int = 0
    eval_every: int = 1                     # epochs between evaluations (the last epoch is always evaluated)
    log_every: int = 10                     # steps between metric lines in metrics.jsonl
    find_unused_parameters: bool = True     # DDP: KD adapters may sit out a step
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        choices = {"optimizer": ("sgd", "adamw"), "schedule": ("multistep", "cosine", "constant"),
                   "amp": ("auto", "bf16", "fp16", "off")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self.milestones = tuple(int(m) for m in self.milestones)


@dataclass
class FitResult:
    """What :func:`fit` returns: where the run lives and what it measured."""

    out_dir: Path
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)   # one record per epoch
    final_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0

    @property
    def weights(self) -> Path:
        return self.out_dir / FINAL_WEIGHTS


# ----------------------------------------------------------------------------------------------
# distributed helpers
# ----------------------------------------------------------------------------------------------

def distributed_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, local, world


def _init_distributed(device: torch.device) -> bool:
    rank, local, world = distributed_env()
    if world <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return True


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def to_device(obj: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """Move tensors inside nested lists / tuples / dicts to ``device``."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device, non_blocking) for v in obj]
        return type(obj)(moved) if isinstance(obj, tuple) and not hasattr(obj, "_fields") else moved
    return obj


# ----------------------------------------------------------------------------------------------
# pieces of the loop
# ----------------------------------------------------------------------------------------------

class _LossOnly(nn.Module):
    """Wraps a model so that its call returns the loss mapping alone (what DDP needs to see)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        return losses_of(self.model(inputs, targets))


def losses_of(output: Any) -> dict[str, torch.Tensor]:
    """The loss mapping of a model call: a Mapping as is, or ``output.losses``."""
    if isinstance(output, Mapping):
        return dict(output)
    if hasattr(output, "losses"):
        return dict(output.losses)
    raise TypeError(
        f"fit() needs model(inputs, targets) to return a mapping of losses or an object with .losses; "
        f"got {type(output).__name__}"
    )


def total_loss(losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the entries whose name starts with ``loss`` (others are logged only)."""
    terms = [v for k, v in losses.items() if k.startswith("loss")]
    if not terms:
        raise ValueError(f"no loss term to optimise: keys were {sorted(losses)} (names must start with 'loss')")
    return torch.stack([t.float() for t in terms]).sum()


def build_optimizer(params: Sequence[nn.Parameter] | Sequence[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimisation step ``step``: linear warm-up, then the schedule."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "multistep":
        decay = cfg.gamma ** sum(step >= m * steps_per_epoch for m in cfg.milestones)
    elif cfg.schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    else:
        decay = 1.0
    if step < cfg.warmup_iters:
        alpha = step / cfg.warmup_iters
        decay *= cfg.warmup_factor * (1 - alpha) + alpha
    return decay


def training_device(device: torch.device | str | None, local_rank: int = 0, world: int = 1) -> torch.device:
    """The indexed device :func:`fit` trains on: ``None`` -> ``cuda:<local_rank>`` with CUDA, else CPU; a bare
    ``cuda`` -> ``cuda:<local_rank>`` under torchrun, else the current CUDA device (``cuda:0``)."""
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return resolve_device(device, index=local_rank if world > 1 else None)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   clip_params: Iterable[torch.Tensor] | None = None, max_norm: float | None = None) -> None:
    """One optimisation step through the grad scaler (a pass-through when it is disabled, i.e. without
    fp16): backward of the scaled loss, ``unscale_`` *before* clipping (so ``max_norm`` bounds the true
    gradient), ``step`` (skipped by the scaler when a gradient is inf/NaN) and ``update`` of the scale."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if max_norm is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(clip_params, max_norm)
    scaler.step(optimizer)
    scaler.update()


def load_scaler_state(scaler: torch.amp.GradScaler, state: Mapping[str, Any] | None) -> None:
    """Restore a resumed run's grad-scaler state (scale, growth tracker). A checkpoint written without an
    active scaler (fp32 or bf16: an empty state) leaves a fresh scaler, and a disabled scaler ignores it."""
    if state:
        scaler.load_state_dict(dict(state))


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file. If the
    write fails (a full disk), the temporary file is removed, ``path`` keeps its previous content and the
    ``OSError`` names the file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and str(path) not in str(e):
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
            raise OSError(e.errno, f"could not write {path} ({e.strerror or e}); {kept}") from e
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (``weights_only=True``: no code is unpickled); a missing file
    is a ``FileNotFoundError``, a truncated or foreign one a ``models.utils.CheckpointError`` naming it."""
    return read_checkpoint(path, map_location=map_location)


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load model weights from ``final.pt`` or ``checkpoint.pt`` (strict by default: a missing or
    unexpected key is an error that lists them)."""
    if strict:
        return load_state_strict(model, path)
    state = load_checkpoint(path)
    model.load_state_dict(state.get("model", state), strict=False)
    return model


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl`` (training lines have ``kind='train'``, epoch
    summaries ``kind='epoch'``)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _MetricLog:
    def __init__(self, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = out_dir / METRICS
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional dependency

                self.tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: the jsonl file is the record
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _count_images(inputs: Any) -> int:
    if torch.is_tensor(inputs):
        return int(inputs.shape[0])
    if isinstance(inputs, Mapping):
        return _count_images(next(iter(inputs.values())))
    if isinstance(inputs, (list, tuple)):
        return len(inputs)
    return 1


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------

def fit(
    model: nn.Module,
    train_set: Dataset,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    collate_fn: Callable | None = None,
    evaluate: Callable[[nn.Module], Mapping[str, float]] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    verbose: bool = True,
    params: Sequence[nn.Parameter] | Sequence[dict] | None = None,
    max_steps: int | None = None,
    keep_checkpoint: bool = True,
    resumable: bool = True,
) -> FitResult:
    """Train ``model`` on ``train_set`` and return a :class:`FitResult`.

    Args:
        model: ``model(inputs, targets)`` returns a loss mapping or a ``ModelOutput``.
        train_set: yields samples that ``collate_fn`` turns into ``(inputs, targets)``.
        config: optimisation settings.
        out_dir: run folder (``checkpoint.pt``, ``final.pt``, ``metrics.jsonl``).
        evaluate: called on rank 0 with the bare model every ``config.eval_every`` epochs and after
            the last one; returns named metrics that are logged with the epoch.
        resume: continue from ``out_dir/checkpoint.pt`` exactly where it stopped.
        overwrite: start over even if ``out_dir`` already holds a run.
        device: default: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; a bare ``cuda`` gets an
            index (:func:`training_device`). Every parameter and buffer of ``model`` must be there after
            ``model.to(device)`` (else a ``DeviceMismatchError`` names them).
        progress: show a tqdm bar (rank 0 only). ``verbose``: print one line per epoch.
        params: what to optimise (default: every parameter with ``requires_grad``).
        max_steps: stop after this many optimisation steps in total (tests, benchmarks).
        keep_checkpoint: keep ``checkpoint.pt`` once training has finished (rewritten without optimizer
            state: a finished run does not continue); ``False`` leaves only ``final.pt`` (tutorial runs).
        resumable: write the optimizer state into the per-epoch checkpoints (what ``resume`` needs);
            ``False`` for runs nobody will resume (smaller, faster checkpoint writes).
    """
    out_dir = Path(out_dir)
    rank, local_rank, world = distributed_env()
    device = training_device(device, local_rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True     # fixed-size scenes: pick the fastest convolution once
    distributed = _init_distributed(device)
    main = is_main_process()
    ckpt_path = out_dir / CHECKPOINT
    _prepare_out_dir(out_dir, resume=resume, overwrite=overwrite, main=main, distributed=distributed)

    seed_everything(config.seed + rank)
    trainable = _place_model(model, device, config, params)
    optimizer = build_optimizer(trainable, config)
    loader, sampler, generators = _train_loader(train_set, config, collate_fn, device, distributed)
    steps_per_epoch = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config, steps_per_epoch))
    autocast_dtype = amp_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)   # fp16 only
    start_epoch, step, history = 0, 0, []
    if resume and ckpt_path.exists():
        start_epoch, step, history = _restore(ckpt_path, model, optimizer, scheduler, scaler)
        if verbose and main:
            print(f"resumed {out_dir} at epoch {start_epoch}/{config.epochs}")

    wrapped: nn.Module = _LossOnly(model)
    if distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.find_unused_parameters,
        )
    log = _MetricLog(out_dir, enabled=main)
    t_start, images_seen, start_step = time.perf_counter(), 0, step
    final_metrics: dict[str, float] = {}
    epoch = start_epoch
    step_fn = _StepRunner(wrapped, model, optimizer, scheduler, scaler, trainable, params is None, config, device,
                          autocast_dtype, ckpt_path, distributed,
                          check_every=1 if device.type == "cpu" else max(1, config.log_every))
    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            generators[0].manual_seed(config.seed * 1_000_003 + epoch)
            generators[1].manual_seed(config.seed * 1_000_003 + epoch + 7)
            if distributed:
                sampler.set_epoch(epoch)
            t_epoch = time.perf_counter()
            sums, n_batches, step, images = _train_epoch(loader, step_fn, epoch, step, config, optimizer, log,
                                                         progress=progress and main, main=main, max_steps=max_steps)
            images_seen += images * (world if distributed else 1)
            record = _epoch_record(epoch, step, time.perf_counter() - t_epoch, sums, n_batches)
            last = epoch + 1 == config.epochs or (max_steps is not None and step >= max_steps)
            if evaluate is not None and main and ((epoch + 1) % config.eval_every == 0 or last):
                metrics = {k: float(v) for k, v in evaluate(model).items()}
                record.update({f"val_{k}": v for k, v in metrics.items()})
                final_metrics = metrics
                model.train()
            history.append(record)
            if main:
                log.write(record)
                _save_checkpoint(ckpt_path, model, optimizer if resumable else None, scheduler, scaler, epoch, step,
                                 history, config)
                if verbose:
                    print(_epoch_line(record, config.epochs))
            if distributed:
                dist.barrier()
            if max_steps is not None and step >= max_steps:
                break
        seconds = time.perf_counter() - t_start
        if main and verbose and history:
            print(f"trained {step - start_step} steps ({step} in all) in {seconds:.0f} s: "
                  f"{seconds / max(step - start_step, 1):.2f} s/step incl. evaluation")
        if main:
            atomic_save({"model": model.state_dict(), "epoch": epoch + 1, "config": asdict(config)},
                        out_dir / FINAL_WEIGHTS)
            if not keep_checkpoint:
                ckpt_path.unlink(missing_ok=True)
            elif history and int(history[-1]["epoch"]) == config.epochs:   # the schedule is over (not a
                # max_steps stop, which may be resumed): keep weights and progress, drop the optimizer state
                _save_checkpoint(ckpt_path, model, None, scheduler, None, int(history[-1]["epoch"]) - 1, step,
                                 history, config)
    finally:
        log.close()
        _release(step_fn, optimizer, device)
    return FitResult(out_dir=out_dir, epochs_run=len(history), history=history, final_metrics=final_metrics,
                     seconds=seconds, images_per_second=images_seen / max(seconds, 1e-9))


# ----------------------------------------------------------------------------------------------
# the named steps of fit()
# ----------------------------------------------------------------------------------------------

def _prepare_out_dir(out_dir: Path, *, resume: bool, overwrite: bool, main: bool, distributed: bool) -> None:
    """Refuse to train into a finished or running run unless resuming or overwriting; create the folder."""
    ckpt_path = out_dir / CHECKPOINT
    if main:
        if ckpt_path.exists() and not (resume or overwrite):
            raise RunExistsError(
                f"{out_dir} already holds a run ({CHECKPOINT}); pass resume=True (--resume) to continue it "
                f"or overwrite=True (--overwrite) to start over"
            )
        if overwrite and not resume:
            for name in (CHECKPOINT, FINAL_WEIGHTS, METRICS):
                (out_dir / name).unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
    if distributed:
        dist.barrier()


def _place_model(model: nn.Module, device: torch.device, config: TrainConfig,
                 params: Sequence[nn.Parameter] | Sequence[dict] | None) -> list:
    """Move the model to ``device`` (checking that everything arrived) and return what to optimise."""
    check_devices(model, device, where="fit()", movable=True)    # meta tensors: .to() cannot move them
    model.to(device)
    check_devices(model, device, where="fit()")
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    trainable = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("fit(): the model has no parameter with requires_grad=True")
    return trainable


def _train_loader(train_set: Dataset, config: TrainConfig, collate_fn: Callable | None, device: torch.device,
                  distributed: bool) -> tuple[DataLoader, Any, tuple[torch.Generator, torch.Generator]]:
    """The shuffled training loader, its sampler and the two generators ``fit`` reseeds every epoch (so a
    resumed run draws the same batches as an uninterrupted one)."""
    sampler_gen, loader_gen = torch.Generator(), torch.Generator()
    if distributed:
        sampler = DistributedSampler(train_set, shuffle=True, seed=config.seed, drop_last=False)
    else:
        sampler = RandomSampler(train_set, generator=sampler_gen)
    loader = DataLoader(
        train_set, batch_size=config.batch_size, sampler=sampler, collate_fn=collate_fn,
        num_workers=config.num_workers, pin_memory=device.type == "cuda", drop_last=len(train_set) > config.batch_size,
        worker_init_fn=_worker_init, generator=loader_gen, persistent_workers=config.num_workers > 0,
    )
    if len(loader) == 0:
        raise ValueError(f"fit(): the training set is empty ({len(train_set)} samples)")
    return loader, sampler, (sampler_gen, loader_gen)


def _restore(ckpt_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             scaler: torch.amp.GradScaler) -> tuple[int, int, list[dict[str, Any]]]:
    """Load a resumable checkpoint into model, optimizer, scheduler, scaler and the RNGs; return
    ``(epoch, step, history)`` where it stopped."""
    state = load_checkpoint(ckpt_path, map_location="cpu")
    model.load_state_dict(state["model"])
    epoch = int(state["epoch"])
    if "optimizer" not in state:
        if epoch < int(state.get("config", {}).get("epochs", epoch + 1)):
            raise RuntimeError(f"{ckpt_path} holds no optimizer state (written with resumable=False, or by a "
                               f"finished run): it cannot be resumed exactly; start over with overwrite=True")
        return epoch, int(state["step"]), list(state.get("history", []))   # a finished run: nothing left to do
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    load_scaler_state(scaler, state.get("scaler"))
    _set_rng_state(state["rng"])
    return epoch, int(state["step"]), list(state.get("history", []))


@dataclass
class _StepRunner:
    """One optimisation step: forward under autocast, the finite check, backward, clip, step, LR step."""

    wrapped: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    trainable: list
    own_params: bool
    config: TrainConfig
    device: torch.device
    autocast_dtype: torch.dtype | None
    ckpt_path: Path
    distributed: bool
    check_every: int = 1             # steps between finite-loss checks (each one a host sync on CUDA)
    _bad: torch.Tensor | None = None  # non-finite losses since the last check (on the device)

    def __call__(self, inputs: Any, targets: Any, epoch: int, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        non_blocking = self.device.type == "cuda"     # pinned host batches: the copy overlaps the step
        inputs = to_device(inputs, self.device, non_blocking)
        targets = to_device(targets, self.device, non_blocking)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            losses = self.wrapped(inputs, targets)
        loss = total_loss(losses)
        if self.check_every == 1:
            _check_finite(losses, loss, epoch, step, self.ckpt_path, self.distributed)
        else:
            bad = (~torch.isfinite(loss.detach())).float()
            self._bad = bad if self._bad is None else self._bad + bad
            if (step + 1) % self.check_every == 0:
                self.flush_check(losses, epoch, step)
        optimizer_step(loss, self.optimizer, self.scaler, self.trainable if self.own_params else self.model.parameters(),
                       self.config.grad_clip)
        self.scheduler.step()
        return losses, loss

    def flush_check(self, losses: Mapping[str, torch.Tensor], epoch: int, step: int) -> None:
        """The deferred finite-loss check (CUDA): raise if any loss since the last check was not finite."""
        if self._bad is None:
            return
        bad, self._bad = self._bad, None
        _check_finite(losses, bad, epoch, step, self.ckpt_path, self.distributed,
                      since=max(0, step + 1 - self.check_every), bad=bad)


def _train_epoch(loader: DataLoader, step_fn: _StepRunner, epoch: int, step: int, config: TrainConfig,
                 optimizer: torch.optim.Optimizer, log: Any, *, progress: bool, main: bool,
                 max_steps: int | None) -> tuple[dict[str, float], int, int, int]:
    """One pass over the loader: returns the summed logged values, the batches, the global step after it and
    the images seen (this process)."""
    sums: dict[str, torch.Tensor] = {}     # float64 on the device: read once an epoch, not every step
    n_batches = images = 0
    losses: Mapping[str, torch.Tensor] = {}
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False,
               dynamic_ncols=True, mininterval=2.0)
    for inputs, targets in bar:
        losses, loss = step_fn(inputs, targets, epoch, step)
        step += 1
        n_batches += 1
        images += _count_images(inputs)
        values = {k: v.detach().double() for k, v in losses.items()}
        values["loss"] = loss.detach().double()
        for k, v in values.items():
            sums[k] = sums[k] + v if k in sums else v
        if main and (step % config.log_every == 0 or n_batches == 1):
            line = {k: float(v) for k, v in values.items()}
            lr = optimizer.param_groups[0]["lr"]
            log.write({"kind": "train", "epoch": epoch + 1, "step": step, "lr": lr, **line})
            bar.set_postfix(loss=f"{line['loss']:.3f}")
        if max_steps is not None and step >= max_steps:
            break
    if n_batches and hasattr(step_fn, "flush_check"):
        step_fn.flush_check(losses, epoch, step - 1)
    return {k: float(v) for k, v in sums.items()}, n_batches, step, images


def _epoch_record(epoch: int, step: int, seconds: float, sums: Mapping[str, float], n_batches: int) -> dict[str, Any]:
    """The epoch line of ``metrics.jsonl``: step, seconds, seconds a step and the mean of every logged value."""
    record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": step, "seconds": round(seconds, 3),
                              "s_per_step": round(seconds / max(n_batches, 1), 4)}
    record.update({k: v / max(n_batches, 1) for k, v in sums.items()})
    return record


def _save_checkpoint(ckpt_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, scheduler: Any,
                     scaler: torch.amp.GradScaler | None, epoch: int, step: int, history: list,
                     config: TrainConfig) -> None:
    """The state after ``epoch`` (written atomically: a failed write keeps the previous one): resumable with
    an ``optimizer`` (and ``scaler``), else weights and progress only (a finished run, ``resumable=False``)."""
    state: dict[str, Any] = {"model": model.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                             "step": step, "history": history, "config": asdict(config)}
    if optimizer is not None:
        state.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict() if scaler is not None else {},
                     rng=_rng_state())
    atomic_save(state, ckpt_path)


def _release(step_fn: Any, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Free what a finished run no longer needs (optimizer moments, cached CUDA blocks) before the next run
    of a chapter starts: the model itself stays with the caller."""
    optimizer.state.clear()
    if step_fn is not None:
        step_fn._bad = None
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    shown = " ".join(f"{k[4:]} {v:.3f}" for k, v in record.items() if k.startswith("val_"))
    return (f"epoch {record['epoch']}/{epochs}  loss {record.get('loss', float('nan')):.4f}  "
            f"{shown}  ({record['seconds']:.1f} s, {record['s_per_step']:.2f} s/step)").rstrip()


def _check_finite(losses: Mapping[str, torch.Tensor], loss: torch.Tensor, epoch: int, step: int,
                  ckpt_path: Path, distributed: bool, since: int | None = None,
                  bad: torch.Tensor | None = None) -> None:
    """Raise :class:`NonFiniteLossError` if ``loss`` is not finite (on any rank). A deferred check (CUDA)
    passes ``bad``, the count of non-finite losses of the steps ``since + 1 .. step + 1``."""
    bad = (~torch.isfinite(loss.detach())).float() if bad is None else bad.clone()
    if distributed:
        dist.all_reduce(bad)
    if bad.item() == 0:
        return
    culprits = [f"{k}={float(v.detach()):g}" for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
    kept = f"the last good checkpoint {ckpt_path} is intact" if ckpt_path.exists() else "no checkpoint was written yet"
    where = f"step {step + 1}" if since is None or since >= step else f"steps {since + 1}-{step + 1}"
    raise NonFiniteLossError(
        f"non-finite loss at epoch {epoch + 1}, {where}: "
        f"{', '.join(culprits) or 'on another rank'}; training stopped, {kept}"
    )
