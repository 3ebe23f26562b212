"""``rskd bench``: what distillation costs, measured.

For one detector at one profile's scale it times, after warm-up, the median of N steps of

* the student trained alone (forward + backward + optimiser step),
* the teacher's forward (``taps_only``, no grad),
* the full distillation step of each method (``Distiller``: student + teacher + KD terms),
* the forward time inside each KD term (hooks around the loss modules; DS2D2's implicit terms
  include their frozen-head passes, which the method needs by design),

and the KD overhead ``distill - student - teacher`` (KD forward *and* backward, adapters'
optimiser), its share of the distillation step, and the peak memory of the step (CUDA: allocator
peak; CPU: resident-set growth sampled during the step). On CUDA it also reports images/s in fp32,
bf16 autocast, and bf16 with channels_last. Results print as a table and go to a JSON file.

Everything runs on randomly initialised models and in-memory synthetic scenes: the cost does not
depend on training. Taught in chapter 6 (``book/06_which_distillation.ipynb``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

DETECTION_METHODS = ("student", "fitnet", "at", "cwd", "fgd", "mgd", "pkd", "logit", "ds2d2", "dipkd")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _RssSampler:
    """Peak resident-set size of this process during a block, sampled every millisecond (Linux)."""

    def __init__(self) -> None:
        self.page = 4096
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss_bytes() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        except OSError:  # not Linux: no sampling
            return 0

    def __enter__(self) -> _RssSampler:
        self.start = self.peak = self.rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss_bytes())


def _median_ms(fn: Callable[[], Any], device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def scene_batch(profile: Any, batch_size: int, device: torch.device, seed: int = 0) -> tuple[list, list]:
    """A batch of in-memory optical scenes at the profile's detection scale (images, targets)."""
    from rskd_tutorial.data.synthetic import optical_scene

    images, targets = [], []
    for i in range(batch_size):
        s = optical_scene(profile.detection.image_size, seed=seed + i)
        images.append(torch.from_numpy(s["image"]).permute(2, 0, 1).float().div(255).to(device))
        boxes = torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4)
        targets.append({"boxes": boxes.to(device), "labels": torch.as_tensor(s["labels"]).long().to(device)})
    return images, targets


def method_losses(method: str, arch: str, student: nn.Module, teacher: nn.Module, profile: Any
                  ) -> tuple[dict[str, nn.Module], dict[str, float]]:
    """KD terms and weights of ``method`` as the chapters build them (DS2D2 with an untrained
    high-frequency amplifier: its cost does not depend on its weights)."""
    from rskd_tutorial.recipes.methods import BASELINES, baseline_losses

    if method in BASELINES:
        return baseline_losses(method, student, teacher), {method: 1.0}
    if method == "ds2d2":
        from rskd_tutorial.distill.ds2d2 import OFFICIAL_WEIGHTS
        from rskd_tutorial.recipes.detection import tutorial_spec
        from rskd_tutorial.recipes.ds2d2 import build_amplifier, make_ds2d2_losses

        amplifier = build_amplifier(tutorial_spec(profile, arch, "teacher"), student.num_classes, teacher)
        weights = OFFICIAL_WEIGHTS[(arch, "dior")]
        losses = make_ds2d2_losses(amplifier, weights)(student, teacher)
        return losses, weights.terms()
    if method == "dipkd":
        from rskd_tutorial.recipes.dipkd import dipkd_losses

        losses = dipkd_losses()(student, teacher)
        return losses, {k: 1.0 for k in losses}
    raise ValueError(f"unknown method {method!r}; choose from {DETECTION_METHODS}")


def bench_detection(methods: Sequence[str] = DETECTION_METHODS, *, detector: str = "retinanet",
                    profile: Any = None, device: str | torch.device | None = None, amp: bool = False,
                    steps: int = 5, warmup: int = 2, batch_size: int | None = None,
                    channels_last: bool = False) -> list[dict[str, Any]]:
    """Time every method in ``methods`` (see the module docstring); one record per method."""
    from rskd_tutorial.devices import resolve_device
    from rskd_tutorial.distill import Distiller
    from rskd_tutorial.profile import get_profile
    from rskd_tutorial.recipes.detection import build_from_spec, tutorial_spec

    profile = profile if profile is not None and not isinstance(profile, str) else get_profile(profile)
    device = resolve_device(device or profile.device)   # a bare 'cuda' gets its index
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but CUDA is not available")
    if "logit" in methods and detector != "retinanet":
        methods = [m for m in methods if m != "logit"]
    bs = batch_size or profile.detection.batch_size
    images, targets = scene_batch(profile, bs, device)
    torch.manual_seed(0)
    teacher = build_from_spec(tutorial_spec(profile, detector, "teacher"), 5).to(device).eval()
    base_student = build_from_spec(tutorial_spec(profile, detector, "student"), 5).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    teacher.to(memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    with torch.no_grad(), autocast:
        teacher_ms = _median_ms(lambda: teacher(images, taps_only=True), device, steps, warmup)

    records = []
    for method in methods:
        student = copy.deepcopy(base_student).train().to(memory_format=memory_format)
        timings: dict[str, list[float]] = {}
        if method == "student":
            model: nn.Module = student
        else:
            losses, weights = method_losses(method, detector, student, teacher, profile)
            model = Distiller(student, teacher, losses, weights, check_first_step=False).to(device)
            for name, mod in model.kd_losses.items():
                mod.register_forward_pre_hook(_start_timer(device))
                mod.register_forward_hook(_stop_timer(device, timings.setdefault(name, [])))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

        def step() -> None:
            with autocast:
                out = model(images, targets)
            losses_ = out.losses if hasattr(out, "losses") else out
            loss = torch.stack([v.float() for k, v in losses_.items() if k.startswith("loss")]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with _RssSampler() as rss:
            step_ms = _median_ms(step, device, steps, warmup)
        peak_mb = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak - rss.start) / 2**20
        kd_terms = {k: statistics.median(v[-steps:]) for k, v in timings.items() if v}
        records.append({"method": method, "detector": detector, "profile": profile.name, "device": str(device),
                        "amp": amp, "channels_last": channels_last, "batch_size": bs, "step_ms": step_ms,
                        "teacher_forward_ms": teacher_ms, "kd_forward_ms": kd_terms, "peak_mb": peak_mb,
                        "images_per_s": bs / (step_ms / 1000)})
    student_ms = next((r["step_ms"] for r in records if r["method"] == "student"), None)
    for r in records:
        r["student_step_ms"] = student_ms
        if student_ms is not None and r["method"] != "student":
            r["kd_overhead_ms"] = r["step_ms"] - student_ms - teacher_ms
            r["kd_forward_total_ms"] = sum(r["kd_forward_ms"].values())
            r["kd_forward_share"] = r["kd_forward_total_ms"] / r["step_ms"]
            r["kd_overhead_share"] = r["kd_overhead_ms"] / r["step_ms"]
            r["slowdown"] = r["step_ms"] / student_ms
    return records


def _start_timer(device: torch.device) -> Callable:
    def hook(module: nn.Module, args: Any) -> None:
        _sync(device)
        module._bench_t0 = time.perf_counter()
    return hook


def _stop_timer(device: torch.device, sink: list[float]) -> Callable:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        _sync(device)
        sink.append((time.perf_counter() - module._bench_t0) * 1000)
    return hook


def cuda_throughput(methods: Sequence[str], **kwargs: Any) -> list[dict[str, Any]]:
    """images/s of the distillation step in fp32, bf16 autocast and bf16 + channels_last (CUDA)."""
    rows = []
    for label, amp, cl in (("fp32", False, False), ("bf16", True, False), ("bf16+channels_last", True, True)):
        for r in bench_detection(methods, amp=amp, channels_last=cl, **kwargs):
            rows.append({"method": r["method"], "mode": label, "images_per_s": r["images_per_s"]})
    return rows


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`bench_detection` records."""
    head = (f"{'method':<8} {'step ms':>9} {'x student':>9} {'teacher ms':>10} {'KD fwd ms':>9} "
            f"{'KD fwd %':>8} {'overhead %':>10} {'peak MB':>8} {'img/s':>7}")
    lines = [head, "-" * len(head)]
    for r in records:
        kd = r.get("kd_forward_total_ms")
        lines.append(
            f"{r['method']:<8} {r['step_ms']:9.1f} {r.get('slowdown', 1.0):9.2f} {r['teacher_forward_ms']:10.1f} "
            f"{(kd if kd is not None else 0.0):9.1f} {100 * r.get('kd_forward_share', 0.0):8.1f} "
            f"{100 * r.get('kd_overhead_share', 0.0):10.1f} {r['peak_mb']:8.0f} {r['images_per_s']:7.1f}")
    return "\n".join(lines)


def bench_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rskd bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", nargs="+", default=list(DETECTION_METHODS), choices=DETECTION_METHODS)
    parser.add_argument("--detector", default="retinanet", choices=("retinanet", "faster_rcnn"))
    parser.add_argument("--profile", default=None, help="ci | cpu | gpu | t4 (default: RSKD_PROFILE or auto)")
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"))
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", default=None, help="JSON file for the records")
    args = parser.parse_args(argv)
    records = bench_detection(args.method, detector=args.detector, profile=args.profile, device=args.device,
                              amp=args.amp, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                              channels_last=args.channels_last)
    print(format_table(records))
    result: dict[str, Any] = {"records": records}
    if (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda":
        result["throughput"] = cuda_throughput(args.method, detector=args.detector, profile=args.profile,
                                               device="cuda", steps=args.steps, warmup=args.warmup,
                                               batch_size=args.batch_size)
        for row in result["throughput"]:
            print(f"{row['method']:<8} {row['mode']:<20} {row['images_per_s']:8.1f} img/s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0
