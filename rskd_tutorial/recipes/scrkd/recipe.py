"""Full scale: the ``sod_model``, ``scrkd`` and ``scrkd_cascade`` recipes (``rskd train``)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from rskd_tutorial.devices import default_device
from rskd_tutorial.engine import evaluate_saliency, fit
from rskd_tutorial.engine.train import FINAL_WEIGHTS, RunExistsError, load_weights
from rskd_tutorial.models.utils import load_state_strict, weights_under
from rskd_tutorial.recipes.registry import Recipe, register
from rskd_tutorial.recipes.scrkd.config import CascadeRun, SaliencyModelSpec, SCRKDRun, SODRun
from rskd_tutorial.recipes.scrkd.stages import build_model, cascade, saliency_collate, saliency_splits, scalar_metrics, scrkd_distiller


def train_sod(cfg: SODRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``sod_model`` recipe: one SOD net at ``cfg.resolution``, evaluated at ``data.eval_size``."""
    train_set, test_set = saliency_splits(cfg.data, cfg.resolution, cfg.resolution)
    model = build_model(cfg.model)
    result = fit(model, train_set, cfg.train, out_dir, collate_fn=saliency_collate(), resume=resume, progress=progress,
                 evaluate=lambda m: scalar_metrics(evaluate_saliency(m, test_set, eval_size=cfg.data.eval_size,
                                                                batch_size=cfg.eval_batch_size)))
    return result.final_metrics


def evaluate_sod(cfg: SODRun, checkpoint: Path) -> dict[str, float]:
    _, test_set = saliency_splits(cfg.data, cfg.resolution, cfg.resolution)
    model = load_weights(build_model(cfg.model, pretrained=False), checkpoint).to(default_device())
    return scalar_metrics(evaluate_saliency(model, test_set, eval_size=cfg.data.eval_size, batch_size=cfg.eval_batch_size))


def _teacher(cfg: SCRKDRun | CascadeRun) -> nn.Module:
    return load_weights(build_model(cfg.model, pretrained=False), cfg.teacher_checkpoint)


def train_scrkd(cfg: SCRKDRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``scrkd`` recipe: teacher checkpoint -> SCRKD student; evaluated on the student's test images."""
    t, s = cfg.teacher_resolution, cfg.student_resolution
    train_set, test_set = saliency_splits(cfg.data, (t, s), s)
    student = build_model(cfg.model, disentangle=True)
    distiller = scrkd_distiller(student, _teacher(cfg), t, s, coefficients=cfg.coefficients,
                                components=cfg.components, matching=cfg.matching, arch=cfg.model.arch)
    result = fit(distiller, train_set, cfg.train, out_dir, collate_fn=saliency_collate(), resume=resume, progress=progress,
                 evaluate=lambda d: scalar_metrics(evaluate_saliency(d.student, test_set, eval_size=cfg.data.eval_size,
                                                                batch_size=cfg.eval_batch_size)))
    return result.final_metrics


def _student_of(checkpoint: Path, spec: SaliencyModelSpec) -> nn.Module:
    """A distilled student's weights from a Distiller checkpoint (keys ``student.*``) or a bare one."""
    return load_state_strict(build_model(spec, disentangle=True, pretrained=False), weights_under(checkpoint, "student."))


def evaluate_scrkd(cfg: SCRKDRun, checkpoint: Path) -> dict[str, float]:
    _, test_set = saliency_splits(cfg.data, (cfg.teacher_resolution, cfg.student_resolution), cfg.student_resolution)
    student = _student_of(checkpoint, cfg.model).to(default_device())
    return scalar_metrics(evaluate_saliency(student, test_set, eval_size=cfg.data.eval_size, batch_size=cfg.eval_batch_size))


def train_cascade(cfg: CascadeRun, out_dir: Path, resume: bool = False, *, progress: bool = True) -> dict[str, float]:
    """The ``scrkd_cascade`` recipe; the final student's metrics (the assistant's are logged too)."""
    t, a, s = cfg.resolutions
    train_set, test_set = saliency_splits(cfg.data, (t, a, s), s, mask_size=a)    # masks for the assistant's loss
    out_dir = Path(out_dir)
    if not resume and any((out_dir / d / "checkpoint.pt").exists() for d in ("stage1_assistant", "stage2_student")):
        raise RunExistsError(f"{out_dir} already holds a cascade run; pass --resume to continue it")
    result = cascade(t, a, s, teacher=_teacher(cfg), make_student=lambda: build_model(cfg.model, disentangle=True),
                     train_set=train_set, config=cfg.train, out_dir=out_dir, coefficients=cfg.coefficients,
                     components=cfg.components, matching=tuple(cfg.matching) if cfg.matching else (None, None),
                     device=default_device(), progress=progress)
    metrics = {}
    for name, model, res in (("assistant", result.assistant, a), ("student", result.student, s)):
        _, test = saliency_splits(cfg.data, res, res)
        scores = scalar_metrics(evaluate_saliency(model, test, eval_size=cfg.data.eval_size, batch_size=cfg.eval_batch_size))
        metrics.update({(k if name == "student" else f"assistant_{k}"): v for k, v in scores.items()})
    (out_dir / "eval.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def evaluate_cascade(cfg: CascadeRun, checkpoint: Path) -> dict[str, float]:
    """Metrics of the cascade's final student (``stage2_student/final.pt``, or the run folder)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "stage2_student" / FINAL_WEIGHTS
    s = cfg.resolutions[2]
    _, test_set = saliency_splits(cfg.data, s, s)
    student = _student_of(checkpoint, cfg.model).to(default_device())
    return scalar_metrics(evaluate_saliency(student, test_set, eval_size=cfg.data.eval_size, batch_size=cfg.eval_batch_size))


register(Recipe("sod_model", SODRun, train_sod, evaluate_sod,
                "train one salient-object-detection net at one resolution (SCRKD teacher or baseline)"))
register(Recipe("scrkd", SCRKDRun, train_scrkd, evaluate_scrkd,
                "SCRKD: distil a high-resolution SOD teacher into a low-resolution student"))
register(Recipe("scrkd_cascade", CascadeRun, train_cascade, evaluate_cascade,
                "cascaded SCRKD: teacher -> assistant -> student"))
