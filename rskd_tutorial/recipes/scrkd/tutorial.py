"""Tutorial scale of chapter 5: every row of its table trained (or reloaded) in a line, sized by
``profile.saliency`` and cached."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from rskd_tutorial.distill.base import Distiller
from rskd_tutorial.distill.scrkd import COMPONENTS, SCRKD_COEFFICIENTS, SCRKDCoefficients
from rskd_tutorial.engine import cache_dir, run_key, seed_everything
from rskd_tutorial.engine.train import FINAL_WEIGHTS, TrainConfig
from rskd_tutorial.recipes.detection import data_signature
from rskd_tutorial.recipes.runs import TutorialRun, TutorialSetup, finish_run, fit_closure, run_seconds
from rskd_tutorial.recipes.scrkd.config import SaliencyData, SaliencyModelSpec
from rskd_tutorial.recipes.scrkd.stages import (build_model, cached_sod_metrics, cascade, saliency_collate, saliency_splits,
                                           scrkd_distiller, sod_evaluation)


def saliency_root(profile: Any, seed: int = 0) -> Path:
    """Write (or reuse) the profile's synthetic saliency scenes (at the teacher resolution) under the
    cache folder; return the root."""
    from rskd_tutorial.data.synthetic import write_scenes

    s = profile.saliency
    root = cache_dir() / "data" / f"saliency-{profile.name}-s{seed}"
    return Path(write_scenes("saliency", root, n_train=s.train_images, n_val=s.test_images, n_test=s.val_images,
                             size=max(s.resolutions), seed=seed, progress=False))


def saliency_spec(profile: Any, arch: str = "pspnet") -> SaliencyModelSpec:
    """The SOD net of chapter 5 at the profile's scale (``arch``: ``pspnet`` or ``transformer``)."""
    s = profile.saliency
    backbone = s.backbone if arch == "pspnet" else s.transformer_backbone
    return SaliencyModelSpec(arch=arch, backbone=backbone, channels=s.channels)


def saliency_train_config(profile: Any, role: str = "teacher", seed: int = 0, **overrides: Any) -> TrainConfig:
    """AdamW with a short warm-up and cosine decay (from scratch; the paper's constant 2e-5 assumes
    ImageNet weights and 100 epochs)."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    s = profile.saliency
    epochs = s.teacher_epochs if role == "teacher" else s.student_epochs
    kwargs: dict[str, Any] = dict(epochs=epochs, lr=s.lr, batch_size=s.batch_size, optimizer="adamw",
                                  weight_decay=1e-4, schedule="cosine", warmup_iters=s.warmup_iters,
                                  warmup_factor=0.01, num_workers=profile.num_workers, seed=seed,
                                  eval_every=epochs)
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def _data(profile: Any, seed: int = 0) -> SaliencyData:
    return SaliencyData(root=str(saliency_root(profile, seed)), eval_size=profile.saliency.eval_size, name="synthetic")


def sod_setup(profile: Any, resolution: int, *, arch: str = "pspnet", seed: int = 0, role: str = "teacher",
              progress: bool = False, verbose: bool = False, **train_overrides: Any) -> TutorialSetup:
    """The untrained SOD net of :func:`tutorial_sod_model`, its key, training closure and test set."""
    data = _data(profile)
    train_set, test_set = saliency_splits(data, resolution, resolution)
    spec, cfg = saliency_spec(profile, arch), saliency_train_config(profile, role, seed, **train_overrides)
    device = profile.device
    seed_everything(seed)
    model = build_model(spec).to(device)
    key = run_key(f"saliency-{arch}-{spec.backbone}-{resolution}px-{role}", profile=profile.name, seed=seed,
                  config={"spec": asdict(spec), "train": asdict(cfg), "data": data_signature(data.root)})

    train = fit_closure(model, train_set, cfg, collate_fn=saliency_collate(), device=device, progress=progress,
                        verbose=verbose, keep_checkpoint=False)
    return TutorialSetup(model, key, train, test_set, cfg.batch_size, device, eval_size=data.eval_size)


def tutorial_sod_model(profile: Any, resolution: int, *, arch: str = "pspnet", seed: int = 0,
                       role: str = "teacher", progress: bool = False, verbose: bool = False, shipped: bool = True,
                       **train_overrides: Any) -> TutorialRun:
    """Train (or load from the cache or the teacher store) a plain SOD net at ``resolution`` on the chapter's
    synthetic scenes, evaluated on the test images at that resolution, metrics at the profile's ``eval_size``."""
    s = sod_setup(profile, resolution, arch=arch, seed=seed, role=role, progress=progress, verbose=verbose,
                  **train_overrides)
    return finish_run(s.model, s.key, s.train, sod_evaluation(s.eval_set, s.eval_size, s.batch_size), s.device,
                      verbose=verbose, shipped=shipped, extra={"resolution": resolution})


def tutorial_distill(profile: Any, teacher: nn.Module, teacher_res: int, student_res: int, name: str, *,
                     losses: Callable[[nn.Module], tuple[Mapping[str, nn.Module], Mapping[str, float]]] | None = None,
                     components: Sequence[str] = COMPONENTS, coefficients: SCRKDCoefficients | None = None,
                     matching: str | None = None, arch: str = "pspnet", seed: int = 0, progress: bool = False,
                     verbose: bool = False, **train_overrides: Any) -> TutorialRun:
    """Distil ``teacher`` into a student at ``student_res`` (cached by ``name`` and the settings).

    Default: SCRKD (or the ablation ``components``) on a disentangled student; with ``losses``
    (``student -> (terms, weights)``, e.g. FitNet or AT) a plain student is distilled with those terms.
    Returns the trained student; ``extra["distiller"]`` holds the Distiller (MSFD weights etc.)."""
    data = _data(profile)
    train_set, test_set = saliency_splits(data, (teacher_res, student_res), student_res)
    spec, cfg = saliency_spec(profile, arch), saliency_train_config(profile, "student", seed, **train_overrides)
    coefficients = coefficients or SCRKD_COEFFICIENTS["pspnet"]
    device = profile.device
    teacher = teacher.to(device)
    seed_everything(seed)     # the student's (and any adapter's) initial weights follow the seed
    if losses is None:
        student = build_model(spec, disentangle=True)
        distiller = scrkd_distiller(student, teacher, teacher_res, student_res, coefficients=coefficients,
                                    components=components, matching=matching, arch=arch)
        described = {"scrkd": list(components), "coefficients": asdict(coefficients), "matching": matching}
    else:
        student = build_model(spec)
        terms, weights = losses(student)
        distiller = Distiller(student, teacher, terms, weights, student_input=student_res, teacher_input=teacher_res)
        described = {"terms": sorted(terms), "weights": dict(weights)}
    distiller.to(device)
    key = run_key(f"saliency-{arch}-{spec.backbone}-{name}-{teacher_res}to{student_res}", profile=profile.name,
                  seed=seed, config={"spec": asdict(spec), "train": asdict(cfg), "kd": described,
                                     "data": data_signature(data.root)})

    train = fit_closure(distiller, train_set, cfg, collate_fn=saliency_collate(), device=device, progress=progress,
                        verbose=verbose, keep_checkpoint=False)
    return finish_run(distiller, key, train, sod_evaluation(test_set, data.eval_size, cfg.batch_size), device,
                      evaluated=student, verbose=verbose, extra={"distiller": distiller})


def tutorial_cascade(profile: Any, teacher: nn.Module, *, arch: str = "pspnet", seed: int = 0,
                     coefficients: SCRKDCoefficients | None = None, progress: bool = False,
                     verbose: bool = False, **train_overrides: Any) -> tuple[TutorialRun, TutorialRun]:
    """:func:`cascade` at the profile's resolutions (cached); returns (assistant run, student run)."""
    t, a, s = profile.saliency.resolutions
    data = _data(profile)
    train_set, _ = saliency_splits(data, (t, a, s), s, mask_size=a)    # masks for the assistant's loss
    spec, cfg = saliency_spec(profile, arch), saliency_train_config(profile, "student", seed, **train_overrides)
    coefficients = coefficients or SCRKD_COEFFICIENTS["pspnet"]
    key = run_key(f"saliency-{arch}-{spec.backbone}-cascade-{t}to{a}to{s}", profile=profile.name, seed=seed,
                  config={"spec": asdict(spec), "train": asdict(cfg), "coefficients": asdict(coefficients),
                          "data": data_signature(data.root)})
    device = profile.device
    done = [(cache_dir() / key / stage / FINAL_WEIGHTS).is_file() for stage in ("stage1_assistant", "stage2_student")]
    seed_everything(seed)
    result = cascade(t, a, s, teacher=teacher.to(device), make_student=lambda: build_model(spec, disentangle=True).to(device),
                     train_set=train_set, config=cfg, out_dir=cache_dir() / key, coefficients=coefficients,
                     device=device, progress=progress, verbose=verbose, keep_checkpoint=False)
    runs = []
    for model, res, run_dir, d, loaded in zip((result.assistant, result.student), (a, s), result.stage_dirs,
                                              result.distillers, done):
        _, test_set = saliency_splits(data, res, res)
        metrics = cached_sod_metrics(run_dir, model, test_set, data.eval_size, cfg.batch_size)
        runs.append(TutorialRun(model, run_dir, metrics, loaded, run_seconds(run_dir),
                                extra={"distiller": d, "resolution": res}))
    return runs[0], runs[1]


COMPARISON = ("fitnet", "at", "mvcd", "msfd", "dsd", "scrkd", "scrkd_4x", "cascade")
"""The rows of chapter 5's table after the student alone: two feature baselines, each SCRKD component
alone (paper Table VI), SCRKD at the 2x gap (Table II), SCRKD from the 4x teacher and the cascade (Table V)."""


def baseline_terms(name: str, channels: int) -> Callable[[nn.Module], tuple[dict[str, nn.Module], dict[str, float]]]:
    """FitNet (a learned 1x1 adapter, MSE, weight 1) or AT (weight 100, Zagoruyko & Komodakis) on all five
    decoder stages, as the ``losses`` argument of :func:`tutorial_distill`."""
    from rskd_tutorial.distill import ATLoss, FitNetLoss

    levels = [f"stage{k}" for k in range(1, 6)]
    if name == "fitnet":
        return lambda student: ({"fitnet": FitNetLoss(levels, channels, channels)}, {"fitnet": 1.0})
    if name == "at":
        return lambda student: ({"at": ATLoss(levels)}, {"at": 100.0})
    raise ValueError(f"no saliency baseline {name!r}; choose 'fitnet' or 'at'")


def tutorial_comparison(profile: Any, teacher: nn.Module, big_teacher: nn.Module, seeds: Sequence[int], *,
                        rows: Sequence[str] = COMPARISON, progress: bool = False) -> dict[str, list[TutorialRun]]:
    """Chapter 5's table, one run per seed and row (each cached): ``student`` (alone, the student budget),
    then ``rows`` of :data:`COMPARISON`. ``teacher`` is the plain net at the middle resolution (the 2x
    gap), ``big_teacher`` the one at the highest (the 4x rows); ``assistant`` holds the cascade's stage 1."""
    t, a, s = profile.saliency.resolutions
    unknown = set(rows) - set(COMPARISON)
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; choose from {COMPARISON}")
    out: dict[str, list[TutorialRun]] = {"student": [tutorial_sod_model(profile, s, seed=k, role="student",
                                                                        progress=progress) for k in seeds]}
    for row in rows:
        for k in seeds:
            if row in ("fitnet", "at"):
                run = tutorial_distill(profile, teacher, a, s, row, losses=baseline_terms(row, profile.saliency.channels),
                                       seed=k, progress=progress)
            elif row in COMPONENTS:
                run = tutorial_distill(profile, teacher, a, s, f"scrkd-{row}", components=(row,), seed=k, progress=progress)
            elif row == "scrkd":
                run = tutorial_distill(profile, teacher, a, s, "scrkd", seed=k, progress=progress)
            elif row == "scrkd_4x":
                run = tutorial_distill(profile, big_teacher, t, s, "scrkd", seed=k, progress=progress)
            else:
                assistant, run = tutorial_cascade(profile, big_teacher, seed=k, progress=progress)
                out.setdefault("assistant", []).append(assistant)
            out.setdefault(row, []).append(run)
    return out
