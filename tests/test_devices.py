"""Devices and precision of the gpu profile, tested on the CPU: indexed CUDA devices, KD modules on the
student's device, the device check (a parameter on ``meta``), float32 anchors and box coding under
bf16 autocast, the AMP dtype by compute capability, the grad scaler, and the Makefile's profile."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator

from helpers_detection import TinyBoxes, collate, tiny_detector
from rskd_tutorial.devices import (
    DeviceMismatchError,
    amp_dtype,
    check_devices,
    default_device,
    misplaced_tensors,
    resolve_device,
)
from rskd_tutorial.distill import DistillationCheckError, Distiller, FitNetLoss
from rskd_tutorial.distill.ds2d2 import DS2D2Weights, ds2d2_losses
from rskd_tutorial.engine import TrainConfig, fit
from rskd_tutorial.engine.train import load_scaler_state, optimizer_step, training_device
from rskd_tutorial.models.anchors import _anchor_generator
from rskd_tutorial.models.detectors import Float32AnchorGenerator, Float32BoxCoder, build_detector
from rskd_tutorial.models.saliency import SaliencyPSPNet
from rskd_tutorial.recipes.scrkd import scrkd_distiller

ROOT = Path(__file__).resolve().parents[1]
META = torch.device("meta")


def _fake_cuda(monkeypatch, current: int = 0, capability: tuple[int, int] = (9, 0)) -> None:
    """Make this CPU machine look like one with a CUDA GPU to the code under test (nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)   # a T4 says True too


# ---------------------------------------------------------------- 1. one helper, indexed CUDA devices

def test_default_device_is_an_indexed_cuda_device(monkeypatch):
    from rskd_tutorial.profile import default_device as from_profile
    from rskd_tutorial.profile import get_profile

    assert from_profile is default_device
    _fake_cuda(monkeypatch)
    assert default_device() == torch.device("cuda", 0) and default_device().index == 0
    assert get_profile("ci").device == torch.device("cuda:0")
    _fake_cuda(monkeypatch, current=1)
    assert default_device() == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")


def test_resolve_device_gives_every_cuda_device_an_index(monkeypatch):
    _fake_cuda(monkeypatch, current=2)
    assert resolve_device("cuda") == torch.device("cuda:2")
    assert resolve_device(torch.device("cuda")) == torch.device("cuda:2")
    assert resolve_device("cuda", index=1) == torch.device("cuda:1")
    assert resolve_device("cuda:3") == torch.device("cuda:3")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cuda:2")
    # torchrun: a bare "cuda" is the rank's own GPU; no device at all is cuda:LOCAL_RANK
    assert training_device("cuda", local_rank=1, world=2) == torch.device("cuda:1")
    assert training_device(None, local_rank=1, world=2) == torch.device("cuda:1")
    assert training_device("cuda", local_rank=0, world=1) == torch.device("cuda:2")


class _Stop(Exception):
    pass


def test_fit_accepts_a_bare_cuda_device(monkeypatch, tmp_path):
    """fit() hands torch.cuda.set_device an indexed device (a bare one raised "Expected a torch.device
    with a specified index")."""
    _fake_cuda(monkeypatch)
    seen = []

    def set_device(device):
        seen.append(torch.device(device))
        raise _Stop                                      # nothing past this point can run without a GPU

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    with pytest.raises(_Stop):
        fit(nn.Linear(2, 1), _Pairs(), TrainConfig(epochs=1, lr=0.1), tmp_path, device="cuda", progress=False)
    assert seen == [torch.device("cuda:0")] and seen[0].index == 0


def test_no_private_device_helpers_remain():
    """Every device is chosen by ``rskd_tutorial.devices`` (no bare ``torch.device("cuda")`` copies)."""
    offenders = []
    for path in (ROOT / "rskd_tutorial").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"def _device\(|torch\.device\(\s*\"cuda\"\s*(if|\))|\.to\(\s*\"cuda\"", text):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []


# ---------------------------------------------------------------- 2-3. KD modules on the student's device

def _stray(module: nn.Module, inside: set[int]) -> list[str]:
    """Tensors held as plain attributes, and modules held in plain containers that are not part of the
    model (``inside``: ids of its modules) -- what ``.to(device)`` would leave behind."""
    found = []
    for m_name, m in module.named_modules():
        for attr, value in vars(m).items():
            if attr in ("_parameters", "_buffers", "_modules") or attr.startswith("__"):
                continue
            items = value if isinstance(value, (list, tuple)) else [value]
            for v in items:
                if torch.is_tensor(v):
                    found.append(f"{m_name}.{attr} (tensor)")
                elif isinstance(v, nn.Module) and id(v) not in inside:
                    found.append(f"{m_name}.{attr} (module)")
    return found


@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_ds2d2_terms_are_built_on_the_students_device(arch):
    student, teacher = tiny_detector(arch, seed=0).to(META), tiny_detector(arch, seed=1)
    losses = ds2d2_losses(student, teacher, None, DS2D2Weights(1.0, 1.0, 1.0, 0.0))
    adapter = losses["explicit_low"].adapter
    assert adapter is losses["explicit_high"].adapter and adapter.weight.device == META
    if arch == "faster_rcnn":
        assert losses["implicit_full"].sampler.calls.device == META
    # the frozen head is the teacher's: it stays with the teacher until the Distiller is moved
    assert all(p.device.type == "cpu" for p in teacher.parameters())


def test_ds2d2_adapter_is_initialised_on_the_cpu_whatever_the_students_device():
    """Built on the CPU and moved: the adapter draws its initial weights from the CPU generator exactly
    as for a CPU student (the same weights on any device; a run's later random draws unchanged)."""
    teacher, weights = tiny_detector("retinanet", seed=1), DS2D2Weights(1.0, 0.0, 0.0, 0.0)
    states = []
    for student in (tiny_detector("retinanet", seed=0), tiny_detector("retinanet", seed=0).to(META)):
        torch.manual_seed(7)
        loss = ds2d2_losses(student, teacher, None, weights)["explicit_low"]
        states.append(torch.get_rng_state())
    assert loss.adapter.weight.device == META and torch.equal(states[0], states[1])


def test_scrkd_distiller_puts_msfd_on_the_students_device():
    torch.manual_seed(0)
    student = SaliencyPSPNet("resnet18", 8, disentangle=True).to(META)
    teacher = SaliencyPSPNet("resnet18", 8)
    d = scrkd_distiller(student, teacher, 64, 32)
    refine = d.kd_losses["msfd"].refine
    assert len(list(refine.parameters())) > 0
    assert misplaced_tensors(d.kd_losses, META) == []                   # MSFD's refine blocks included
    assert all(p.device.type == "cpu" for p in teacher.parameters())   # the teacher is left where it is


def _distillers() -> dict[str, Distiller]:
    torch.manual_seed(0)
    out = {"scrkd": scrkd_distiller(SaliencyPSPNet("resnet18", 8, disentangle=True), SaliencyPSPNet("resnet18", 8),
                                    64, 32)}
    for arch in ("retinanet", "faster_rcnn"):
        s, t = tiny_detector(arch, seed=0), tiny_detector(arch, seed=1)
        losses = ds2d2_losses(s, t, t, DS2D2Weights(1.0, 1.0, 1.0, 1.0))
        out[f"ds2d2-{arch}"] = Distiller(s, t, losses, {k: 1.0 for k in losses})
    return out


@pytest.mark.parametrize("name", ["scrkd", "ds2d2-retinanet", "ds2d2-faster_rcnn"])
def test_a_moved_distiller_carries_every_kd_module(name):
    d = _distillers()[name].to(META)
    assert misplaced_tensors(d, META) == []
    inside = {id(m) for m in d.modules()}
    assert _stray(d.kd_losses, inside) == []     # every KD tensor / module is registered (or the student's)


# ---------------------------------------------------------------- 4. the device check

def test_check_devices_names_the_tensor_and_both_devices():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    check_devices(model, "cpu")                                          # all on the CPU: passes
    model[0].weight = nn.Parameter(torch.empty(2, 2, device=META))
    with pytest.raises(DeviceMismatchError) as err:
        check_devices(model, "cpu", where="fit()")
    assert "parameter '0.weight' is on meta" in str(err.value) and "training device cpu" in str(err.value)
    with pytest.raises(ValueError, match="meta"):
        check_devices(model, "cpu", movable=True)                        # meta cannot be moved by .to()
    model[1].to(META)                                                    # parameters and buffers alike
    names = [n for _, n, _ in misplaced_tensors(model, "cpu")]
    assert names == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    check_devices(nn.Linear(2, 2).to(META), META)
    check_devices(nn.Linear(2, 2), "cpu", movable=True)                  # CPU tensors can be moved


def test_distiller_first_step_names_a_kd_parameter_on_the_wrong_device():
    student, teacher = tiny_detector("retinanet", seed=1), tiny_detector("retinanet", seed=2)
    loss = FitNetLoss(list(student.levels), 16, 16)
    loss.adapters["p4"].to(META)
    d = Distiller(student, teacher, {"fitnet": loss}, {"fitnet": 1.0}).train()
    images, targets = collate([TinyBoxes()[0]])
    with pytest.raises(DistillationCheckError) as err:
        d(images, targets)
    message = str(err.value)
    assert "kd_losses.fitnet.adapters.p4.weight" in message and "meta" in message and "cpu" in message


def test_distiller_first_step_names_a_teacher_buffer_on_the_wrong_device():
    student, teacher = tiny_detector("retinanet", seed=1), tiny_detector("retinanet", seed=2)
    bn = next(m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d))
    bn.running_mean = torch.zeros_like(bn.running_mean, device=META)
    d = Distiller(student, teacher, {"fitnet": FitNetLoss(list(student.levels), 16, 16)}, {"fitnet": 1.0}).train()
    with pytest.raises(DistillationCheckError, match=r"buffer 'teacher\..*running_mean' is on meta"):
        d(*collate([TinyBoxes()[0]]))


class _Pairs(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return torch.full((2,), float(i)), torch.ones(1)


class _Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def forward(self, x, y):
        return {"loss_mse": F.mse_loss(self.net(x), y)}


def _stack(batch):
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.stack(ys)


def test_fit_names_a_parameter_that_is_not_on_the_training_device(tmp_path):
    model = _Regressor()
    model.net.bias = nn.Parameter(torch.zeros(1, device=META))
    with pytest.raises(DeviceMismatchError) as err:
        fit(model, _Pairs(), TrainConfig(epochs=1, lr=0.1, batch_size=2), tmp_path, collate_fn=_stack,
            device="cpu", progress=False, verbose=False)
    assert "net.bias" in str(err.value) and "meta" in str(err.value) and "cpu" in str(err.value)


# ---------------------------------------------------------------- 5. float32 anchors and box coding

class _Pyramid(nn.Module):
    """A one-conv stand-in for an FPN (custom backbone of build_detector): a map at every stride."""

    def __init__(self, strides, channels: int = 8):
        super().__init__()
        self.strides, self.out_channels = tuple(strides), channels
        self.conv = nn.Conv2d(3, channels, 1)

    def forward(self, x):
        return OrderedDict((str(i), self.conv(F.avg_pool2d(x, s))) for i, s in enumerate(self.strides))


SIZE = 512      # bf16 holds integers exactly up to 256 only: anchors of a 512 px image are rounded


def _detector(arch: str):
    torch.manual_seed(0)
    strides = (8, 16, 32, 64, 128) if arch == "retinanet" else (4, 8, 16, 32, 64)
    return build_detector(arch, _Pyramid(strides), 2, min_size=SIZE, max_size=SIZE, box_head_dim=16,
                          rois_per_image=32, rpn_proposals=50)


def _scene():
    image = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    target = {"boxes": torch.tensor([[100.0, 120.0, 180.0, 190.0], [301.0, 333.0, 411.0, 497.0]]),
              "labels": torch.tensor([1, 2])}
    return [image], [target]


def test_retinanet_anchors_under_bf16_autocast_equal_the_fp32_ones_exactly():
    det = _detector("retinanet").train()
    images, targets = _scene()
    reference = det(images, targets).taps["anchors"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = det(images, targets)
    assert out.taps["features"]["p3"].dtype == torch.bfloat16                    # autocast was on
    for a, ref in zip(out.taps["anchors"], reference):
        assert torch.equal(a.float(), ref) and a.dtype == torch.float32      # bf16 moved corners by 2-4 px
    again = det(images, targets).taps["anchors"]                                   # nothing stayed in bf16
    assert all(torch.equal(a, ref) for a, ref in zip(again, reference))


def test_faster_rcnn_anchors_and_proposals_are_float32_under_bf16_autocast():
    det = _detector("faster_rcnn").train()
    images, targets = _scene()
    generator = _anchor_generator(det)
    image_list, _ = det.net.transform(images, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = det(images, targets)
        feats = list(out.taps["features"].values())
        anchors = generator(image_list, feats)[0]
    assert feats[0].dtype == torch.bfloat16
    reference = generator(image_list, [f.float() for f in feats])[0]
    assert anchors.dtype == torch.float32 and torch.equal(anchors, reference)
    assert all(p.dtype == torch.float32 for p in out.taps["proposals"])          # RPN decoding in fp32
    assert all(torch.isfinite(v) for k, v in out.losses.items())


@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_detections_are_decoded_in_float32_under_bf16_autocast(arch):
    det = _detector(arch).eval()
    images, _ = _scene()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        preds = det(images).predictions
    assert preds[0]["boxes"].dtype == torch.float32


def test_float32_anchor_generator_and_box_coder_leave_fp32_untouched():
    sizes, ratios = ((23.0, 29.0, 36.5), (46.0, 58.0, 73.0)), ((0.5, 1.0, 2.0),) * 2
    ours, theirs = Float32AnchorGenerator(sizes, ratios), AnchorGenerator(sizes, ratios)
    image_list, _ = _detector("retinanet").net.transform(*_scene())
    maps = [torch.zeros(1, 4, 64, 64), torch.zeros(1, 4, 32, 32)]
    assert torch.equal(ours(image_list, maps)[0], theirs(image_list, maps)[0])
    half = [m.to(torch.bfloat16) for m in maps]
    assert ours(image_list, half)[0].dtype == torch.float32
    assert not torch.equal(theirs(image_list, half)[0].float(), ours(image_list, maps)[0])   # what bf16 did

    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(50, 2, generator=g) * 400
    boxes = torch.cat([boxes, boxes + 10 + torch.rand(50, 2, generator=g) * 100], dim=1)
    codes = torch.randn(50, 4, generator=g) * 0.2
    coder, plain = Float32BoxCoder.like(BoxCoder((10.0, 10.0, 5.0, 5.0))), BoxCoder((10.0, 10.0, 5.0, 5.0))
    assert torch.equal(coder.decode_single(codes, boxes), plain.decode_single(codes, boxes))
    decoded = coder.decode_single(codes.to(torch.bfloat16), boxes)
    assert decoded.dtype == torch.float32
    assert torch.equal(decoded, plain.decode_single(codes.to(torch.bfloat16).float(), boxes))
    assert torch.equal(coder.encode_single(boxes, boxes + 3), plain.encode_single(boxes, boxes + 3))
    assert coder.encode_single(boxes.to(torch.bfloat16), boxes.to(torch.bfloat16)).dtype == torch.float32


@pytest.mark.parametrize("arch", ["retinanet", "faster_rcnn"])
def test_every_box_coder_of_a_detector_is_float32(arch):
    net = tiny_detector(arch).net
    coders = [m.box_coder for m in net.modules() if isinstance(getattr(m, "box_coder", None), BoxCoder)]
    assert len(coders) == 2 and all(isinstance(c, Float32BoxCoder) for c in coders)


# ---------------------------------------------------------------- 6. AMP dtype and the grad scaler

@pytest.mark.parametrize("capability, expected", [
    ((7, 0), torch.float16),    # V100
    ((7, 5), torch.float16),    # T4: is_bf16_supported() is True, but bf16 is emulated
    ((8, 0), torch.bfloat16),   # A100
    ((8, 6), torch.bfloat16),
    ((9, 0), torch.bfloat16),   # H100 / H200
])
def test_amp_dtype_follows_the_compute_capability(monkeypatch, capability, expected):
    _fake_cuda(monkeypatch, capability=capability)
    assert amp_dtype(torch.device("cuda:0")) is expected
    assert amp_dtype("cuda:0", "auto") is expected


def test_amp_dtype_explicit_modes_and_cpu(monkeypatch):
    _fake_cuda(monkeypatch, capability=(7, 5))
    assert amp_dtype("cuda:0", "bf16") is torch.bfloat16       # asked for: given, even if slow
    assert amp_dtype("cuda:0", "fp16") is torch.float16
    assert amp_dtype("cuda:0", "off") is None
    assert amp_dtype("cpu", "auto") is None and amp_dtype("cpu", "bf16") is None   # the CPU trains in fp32
    with pytest.raises(ValueError):
        amp_dtype("cuda:0", "fp8")


def test_fit_picks_the_amp_dtype_through_amp_dtype():
    source = (ROOT / "rskd_tutorial" / "engine" / "train.py").read_text(encoding="utf-8")
    assert "is_bf16_supported" not in source and "amp_dtype(device, config.amp)" in source


def _clipped_sgd_reference(model: nn.Module, x, y, lr: float, max_norm: float) -> list[torch.Tensor]:
    ref = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    loss = F.mse_loss(x @ ref[0].T + ref[1], y)
    grads = torch.autograd.grad(loss, ref)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    scale = min(1.0, max_norm / (float(norm) + 1e-6))
    return [p.detach() - lr * g * scale for p, g in zip(ref, grads)]


def test_optimizer_step_unscales_before_clipping():
    torch.manual_seed(0)
    model, x, y = nn.Linear(3, 2), torch.randn(8, 3), torch.randn(8, 2)
    expected = _clipped_sgd_reference(model, x, y, lr=0.1, max_norm=0.05)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    optimizer_step(F.mse_loss(model(x), y), optimizer, scaler, model.parameters(), 0.05)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)   # clipped on the true gradient
    assert scaler.get_scale() == 2.0 ** 12


def test_optimizer_step_skips_non_finite_gradients_and_lowers_the_scale():
    model = nn.Linear(2, 1)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    loss = model(torch.full((1, 2), float("inf"))).sum()
    optimizer_step(loss, optimizer, scaler, model.parameters(), 1.0)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert scaler.get_scale() == 2.0 ** 9


def test_resume_restores_the_grad_scaler_state():
    saved = torch.amp.GradScaler("cpu", init_scale=256.0)
    saved.scale(torch.ones(()))                       # the scale tensor exists once used
    state = saved.state_dict()
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    load_scaler_state(fresh, state)
    assert fresh.get_scale() == 256.0 and fresh.state_dict()["_growth_tracker"] == state["_growth_tracker"]
    # a checkpoint written without an active scaler (fp32 / bf16 run) holds {}: a fresh scaler stays
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    load_scaler_state(fresh, torch.amp.GradScaler("cpu", enabled=False).state_dict())
    assert fresh.get_scale() == 2.0 ** 16
    load_scaler_state(torch.amp.GradScaler("cpu", enabled=False), state)   # a disabled scaler ignores it


# ---------------------------------------------------------------- 7. the Makefile keeps RSKD_PROFILE

def _dry_run(*args: str, env_profile: str | None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RSKD_PROFILE", "PROFILE", "MAKEFLAGS", "MFLAGS")}
    if env_profile is not None:
        env["RSKD_PROFILE"] = env_profile
    run = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), "execute",
                          "CHAPTERS=book/99_example.ipynb", *args], env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    return next(line for line in run.stdout.splitlines() if "jupyter execute" in line)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_execute_sets_rskd_profile_only_when_profile_is_given():
    assert "RSKD_PROFILE" not in _dry_run(env_profile="gpu")       # the exported value is left alone
    assert "RSKD_PROFILE" not in _dry_run("PROFILE=", env_profile="gpu")
    assert "RSKD_PROFILE=ci " in _dry_run("PROFILE=ci", env_profile="gpu")
