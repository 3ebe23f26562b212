"""Seconds per training image of each model family: what ``rskd plan`` multiplies image-steps by.

Four families train in the book: ``retinanet`` and ``faster_rcnn`` (the detection chapters 0-3 and 6, at
``profile.detection`` sizes), ``rgbir`` (chapter 4's RetinaNet on a timm trunk, ``profile.crossmodal``) and
``sod`` (chapter 5's PSPNet-style saliency net, one of ``profile.saliency.resolutions``). A stage of a run
costs, per image, one training step of its model plus one forward of each frozen model it distils from;
on a GPU every optimisation step also pays a fixed overhead (launches, data, optimizer).

Three sources of seconds per image, by device kind:

* ``cpu`` -- :data:`CPU_SECONDS`, measured on the 2-core machine the ``cpu`` teachers were trained on;
  each number's origin is written beside it. Other sizes scale with the pixel count.
* ``h100`` / ``t4`` -- a FLOP model: the FLOPs of one training step (forward + backward) and of one
  forward, measured once per family and size with ``torch.utils.flop_counter.FlopCounterMode`` on two
  images of the profile's size, divided by an *effective* throughput of :data:`EFFECTIVE_FLOPS` (60
  TFLOP/s bf16 on an H100, 8 TFLOP/s fp16 on a T4: small convolutions reach a fraction of the peak), plus
  :data:`STEP_OVERHEAD_S` (15 ms) every optimisation step. An estimate, not a measurement: small models
  are overhead-bound, so the step count matters more than the FLOPs.
* ``--calibrate`` -- :func:`calibrate`: 5 real training steps (after 2 warm-up steps) of each family at the
  profile's sizes and batch on the current device, and 5 forwards; the measured seconds replace the above.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["CPU_SECONDS", "EFFECTIVE_FLOPS", "EVAL_FIXED_S", "STEP_OVERHEAD_S", "FAMILIES", "CostModel", "calibrate",
           "device_kind_of", "flop_cost_model", "table_cost_model"]

FAMILIES = ("retinanet", "faster_rcnn", "rgbir", "sod")

# (seconds per image of a training step, reference size in px) on 2 CPU cores (torch 2 threads, x86_64). From
# the shipped cpu teachers' records (rskd_tutorial/shipped/cpu/*.json: train_seconds / steps / batch size; each
# run's one evaluation included, so slightly high):
CPU_SECONDS: dict[str, tuple[float, int]] = {
    "retinanet": (0.0366, 192),    # optical-retinanet: 3420 steps of 8 in 1000 s = 0.29 s a step at 192 px (the
                                   # students' logs agree: 116 steps of 8 in ~37 s, 0.3 s a step; the backbone
                                   # alone, fwd+bwd on one thread, ~0.56 s a batch of 8)
    "faster_rcnn": (0.0676, 192),  # optical-faster_rcnn: 2052 steps of 8 in 1110 s = 0.54 s a step at 192 px
    "rgbir": (0.0571, 160),        # rgb-retinanet: 2320 steps of 8 in 1060 s = 0.46 s a step at 160 px
    "sod": (0.0094, 96),           # saliency-teacher: 1480 steps of 16 in 222 s = 0.15 s a step at 96 px
}
CPU_FORWARD_SHARE = 1 / 3          # a frozen model's forward ~ a third of its training step (backward ~ 2 forwards)

EFFECTIVE_FLOPS = {"h100": 60e12, "t4": 8e12}   # effective mixed-precision throughput (not the datasheet peak)
STEP_OVERHEAD_S = 0.015                         # per optimisation step on a GPU (launches, loader, optimizer)
EVAL_FIXED_S = 1.0       # an evaluation's metric on the CPU (COCO mAP / SOD measures of a few hundred images;
                         # an assumption of the same order as pycocotools on 300 synthetic scenes)
DEVICE_KINDS = ("cpu", "h100", "t4")


def device_kind_of(device: torch.device) -> str:
    """``cpu``, ``t4`` (a CUDA device named T4) or ``h100`` (any other CUDA device: the FLOP model's default)."""
    if device.type != "cuda":
        return "cpu"
    return "t4" if "T4" in torch.cuda.get_device_name(device) else "h100"


@dataclass
class CostModel:
    """Seconds per image of a training step and of a frozen forward, per ``(family, size)``, and the fixed
    seconds an optimisation step. ``source`` says where the numbers come from (printed by ``rskd plan``)."""

    kind: str
    source: str
    train: Callable[[str, int], float]
    forward: Callable[[str, int], float]
    step_overhead_s: float = 0.0
    measured: dict[str, float] = field(default_factory=dict)   # what was measured: "family@size" -> value


def table_cost_model(kind: str = "cpu") -> CostModel:
    """The built-in CPU table (:data:`CPU_SECONDS`), scaled by pixel count to other sizes."""
    def train(family: str, size: int) -> float:
        seconds, ref = CPU_SECONDS[family]
        return seconds * (size / ref) ** 2

    return CostModel(kind, "built-in table (2 CPU cores, the shipped cpu teachers' records)", train,
                     lambda f, s: CPU_FORWARD_SHARE * train(f, s))


# ----------------------------------------------------------------------------------------------------------
# one training step of a family at the profile's scale (random weights: the cost does not depend on them)
# ----------------------------------------------------------------------------------------------------------

def _scenes(size: int, n: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    from rskd_tutorial.data.synthetic import optical_scene

    images, targets = [], []
    for i in range(n):
        s = optical_scene(size, seed=i)
        images.append(torch.from_numpy(s["image"]).permute(2, 0, 1).float().div(255))
        targets.append({"boxes": torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.as_tensor(s["labels"]).long()})
    return images, targets


def family_batch(profile: Any, family: str, size: int, n: int) -> tuple[nn.Module, Any, Any]:
    """(model in train mode, inputs, targets) of one training step of ``family`` at ``size`` px, ``n`` images."""
    if family in ("retinanet", "faster_rcnn"):
        from rskd_tutorial.recipes.detection import build_from_spec, tutorial_spec

        spec = tutorial_spec(profile, family, "student")
        spec.min_size = spec.max_size = size
        return build_from_spec(spec, 5).train(), *_scenes(size, n)
    if family == "rgbir":
        from rskd_tutorial.recipes.freqkd import build_trunk, detector_from_trunk, tutorial_backbone, tutorial_head

        spec = tutorial_backbone(profile, "student")
        det = detector_from_trunk(build_trunk(spec), 5, tutorial_head(profile), (size, size))
        return det.train(), *_scenes(size, n)
    if family == "sod":
        from rskd_tutorial.recipes.scrkd import build_model, saliency_spec

        g = torch.Generator().manual_seed(0)
        masks = (torch.rand(n, 1, size, size, generator=g) > 0.7).float()
        return build_model(saliency_spec(profile)).train(), torch.rand(n, 3, size, size, generator=g), masks
    raise ValueError(f"unknown model family {family!r}; choose from {FAMILIES}")


def _losses(model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
    from rskd_tutorial.engine.train import losses_of, total_loss

    return total_loss(losses_of(model(inputs, targets)))


_FLOPS: dict[tuple[str, int, int, str], tuple[float, float]] = {}   # (family, size, n, scale) -> FLOPs


def _scale_of(profile: Any, family: str) -> str:
    """The spec of ``family``'s model in ``profile`` (two profiles with equal models share their FLOPs)."""
    if family in ("retinanet", "faster_rcnn"):
        from rskd_tutorial.recipes.detection import tutorial_spec

        return repr(tutorial_spec(profile, family, "student"))
    if family == "rgbir":
        from rskd_tutorial.recipes.freqkd import tutorial_backbone, tutorial_head

        return repr((tutorial_backbone(profile, "student").arch, tutorial_head(profile)))
    from rskd_tutorial.recipes.scrkd import saliency_spec

    return repr(saliency_spec(profile))


def step_flops(profile: Any, family: str, size: int, n: int = 2) -> tuple[float, float]:
    """(FLOPs of a training step, FLOPs of a forward) per image of ``family`` at ``size`` px, counted on the
    CPU on ``n`` synthetic images (2: batch norm needs two in training; counted once per family, size and
    profile scale, then kept)."""
    key = (family, size, n, _scale_of(profile, family))
    if key not in _FLOPS:
        _FLOPS[key] = _count_flops(profile, family, size, n)
    return _FLOPS[key]


def _count_flops(profile: Any, family: str, size: int, n: int) -> tuple[float, float]:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model, inputs, targets = family_batch(profile, family, size, n)
    with FlopCounterMode(display=False) as fwd:
        loss = _losses(model, inputs, targets)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    forward = float(fwd.get_total_flops())
    return (forward + float(bwd.get_total_flops())) / n, forward / n


def flop_cost_model(profile: Any, kind: str) -> CostModel:
    """The FLOP model of a GPU ``kind`` (``h100`` | ``t4``): FLOPs measured once per (family, size)."""
    rate = EFFECTIVE_FLOPS[kind]
    cache: dict[tuple[str, int], tuple[float, float]] = {}
    measured: dict[str, float] = {}

    def flops(family: str, size: int) -> tuple[float, float]:
        if (family, size) not in cache:
            cache[(family, size)] = step_flops(profile, family, size)
            measured[f"{family}@{size}px GFLOP/image (train step)"] = round(cache[(family, size)][0] / 1e9, 3)
        return cache[(family, size)]

    return CostModel(kind, f"FLOP model: {rate / 1e12:g} TFLOP/s effective + {1000 * STEP_OVERHEAD_S:g} ms a step",
                     lambda f, s: flops(f, s)[0] / rate, lambda f, s: flops(f, s)[1] / rate, STEP_OVERHEAD_S,
                     measured)


def _timed(fn: Callable[[], Any], device: torch.device, steps: int, warmup: int) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps


def calibrate(profile: Any, batch_sizes: dict[str, int], device: torch.device | None = None, *, steps: int = 5,
              warmup: int = 2) -> CostModel:
    """Time ``steps`` real training steps (AdamW, the device's autocast) after ``warmup`` of each family and
    size asked for, at its batch size (``batch_sizes``), on ``device`` (default: the profile's); the seconds
    per image (the step overhead included) replace the table or the FLOP model."""
    from rskd_tutorial.devices import amp_dtype, resolve_device
    from rskd_tutorial.engine.train import to_device

    device = resolve_device(device or profile.device)
    dtype = amp_dtype(device, "auto")
    cache: dict[tuple[str, int, bool], float] = {}
    measured: dict[str, float] = {}

    def measure(family: str, size: int, train: bool) -> float:
        if (family, size, train) in cache:
            return cache[(family, size, train)]
        n = batch_sizes.get(family, 8)
        torch.manual_seed(0)
        model, inputs, targets = family_batch(profile, family, size, n)
        model.to(device)
        inputs, targets = to_device(inputs, device), to_device(targets, device)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

        def step() -> None:
            with autocast:
                loss = _losses(model, inputs, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def forward() -> None:
            with torch.no_grad(), autocast:
                _losses(model, inputs, targets)

        seconds = _timed(step if train else forward, device, steps, warmup) / n
        cache[(family, size, train)] = seconds
        measured[f"{family}@{size}px s/image ({'train step' if train else 'forward'})"] = round(seconds, 5)
        del model, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return seconds

    return CostModel(device_kind_of(device), f"calibrated: {steps} timed steps after {warmup} on {device}",
                     lambda f, s: measure(f, s, True), lambda f, s: measure(f, s, False), 0.0, measured)
