"""Tutorial scale of chapter 4: the RGB teacher (shipped in ``cpu``), one table row (stage A + B) and
the study, sized by ``profile.crossmodal`` and cached.

Every row's stage-B detector is evaluated on the IR test pairs (what the tables report) and on the
IR validation pairs (``val_AP50`` ...: what the cutoff x high-band-weight grid is chosen on)."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from rskd_tutorial.engine import cache_dir, evaluate_detection, read_metrics, run_key, seed_everything, train_or_load
from rskd_tutorial.engine.train import TrainConfig
from rskd_tutorial.recipes.detection import data_signature, detection_collate, synthetic_root
from rskd_tutorial.recipes.freqkd.config import BackboneSpec, HeadSpec, LossSpec, PairedData
from rskd_tutorial.recipes.freqkd.data import ModalityView, collate_pairs, ir_splits, paired_splits
from rskd_tutorial.recipes.freqkd.models import build_trunk, copy_head, detector_from_trunk, detector_trunk, make_loss
from rskd_tutorial.recipes.freqkd.stages import stage_a_distiller, stage_b_params
from rskd_tutorial.recipes.freqkd.study import divergence_study
from rskd_tutorial.recipes.results import VAL_PREFIX, chosen_on_val, val_prefixed  # noqa: F401  (re-exported)
from rskd_tutorial.recipes.runs import TutorialRun, TutorialSetup, finish_run, fit_closure, run_seconds


def tutorial_roots(profile: Any, seed: int = 0) -> tuple[Path, Path]:
    """(training / validation / test pairs, separate study pairs) of the chapter, written under the cache
    folder (idempotent). The study pairs are scenes no model trains or is chosen on (``n_train = 0``)."""
    from rskd_tutorial.data.synthetic import write_scenes

    root = synthetic_root("rgbir", profile, seed=seed, progress=False)
    c = profile.crossmodal
    study = cache_dir() / "data" / f"rgbir-study-{profile.name}-s{seed}"
    write_scenes("rgbir", study, n_train=0, n_val=c.study_pairs, size=c.image_size, seed=seed + 7919, progress=False)
    return root, study


def tutorial_backbone(profile: Any, role: str) -> BackboneSpec:
    """The teacher's or the student's trunk at the profile's scale (a CNN tapped at strides 4-32, or a ViT
    tapping its last block)."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    c = profile.crossmodal
    arch = c.teacher_backbone if role == "teacher" else c.student_backbone
    return BackboneSpec(arch=arch, img_size=(c.image_size, c.image_size), depth=c.vit_depth)


def tutorial_head(profile: Any) -> HeadSpec:
    c = profile.crossmodal
    return HeadSpec(arch="retinanet", out_channels=c.pyramid_channels, anchor_factor=c.anchor_factor,
                    head_convs=c.head_convs)


def paired_data(profile: Any) -> PairedData:
    """The chapter's pairs, held in memory."""
    root, _ = tutorial_roots(profile)
    return PairedData(root=str(root), in_memory=True, name="synthetic rgbir")


def eval_splits(profile: Any) -> tuple[str, str]:
    """(split the tables report, split anything tunable is chosen on): ``("test", "val")``, or
    ``("val", "val")`` in a profile without test pairs."""
    return ("test" if profile.crossmodal.test_pairs else "val"), "val"


def _ir_evaluation(profile: Any) -> Any:
    """``evaluate(model)``: COCO metrics on the IR report split plus ``val_*`` metrics on the IR validation split."""
    from rskd_tutorial.data import CocoDetection

    data = paired_data(profile)
    report, choose = eval_splits(profile)
    sets = {name: CocoDetection(data.root, name, in_memory=True, name=data.name) for name in {report, choose}}
    bs = profile.crossmodal.batch_size

    def evaluate(model: nn.Module) -> dict[str, Any]:
        out = dict(evaluate_detection(model, sets[report], batch_size=bs))
        val = out if choose == report else evaluate_detection(model, sets[choose], batch_size=bs)
        out.update(val_prefixed(val))
        return out

    return evaluate


def stage_train_config(profile: Any, stage: str, seed: int = 0, **overrides: Any) -> TrainConfig:
    """AdamW with linear warm-up (at most a quarter of the run) and cosine decay for ``stage`` =
    ``teacher`` (RGB detector), ``distill`` (stage A) or ``finetune`` (stage B)."""
    c = profile.crossmodal
    epochs = {"teacher": c.teacher_epochs, "distill": c.distill_epochs, "finetune": c.finetune_epochs}
    if stage not in epochs:
        raise ValueError(f"stage must be one of {tuple(epochs)}, got {stage!r}")
    steps = epochs[stage] * max(1, c.train_pairs // c.batch_size)
    kwargs: dict[str, Any] = dict(
        epochs=epochs[stage], lr={"teacher": c.lr, "distill": c.distill_lr, "finetune": c.finetune_lr}[stage],
        batch_size=c.batch_size, optimizer="adamw", weight_decay=0.05, schedule="cosine",
        warmup_iters=max(1, min(c.warmup_iters, steps // 4)),
        warmup_factor=0.01, grad_clip=10.0, num_workers=profile.num_workers, seed=seed, eval_every=epochs[stage],
    )
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def rgb_teacher_setup(profile: Any, seed: int = 0, *, progress: bool = False, verbose: bool = True) -> TutorialSetup:
    """The untrained RGB teacher detector, its key, its training closure and its evaluation set (RGB
    frames of the report split): what :func:`rgb_teacher` and the teacher store (``rskd teachers``) share."""
    from rskd_tutorial.data import CocoDetection

    data = paired_data(profile)
    train_pairs, _ = paired_splits(data, drop_empty=True)
    report, _ = eval_splits(profile)
    train_set = ModalityView(train_pairs, "rgb")
    eval_set = ModalityView(CocoDetection(data.root, report, return_paired=True, in_memory=True, name=data.name), "rgb")
    spec, head = tutorial_backbone(profile, "teacher"), tutorial_head(profile)
    cfg = stage_train_config(profile, "teacher", seed)
    device = profile.device
    seed_everything(seed)   # the initial weights depend on the seed only
    det = detector_from_trunk(build_trunk(spec), train_set.num_classes, head, spec.img_size).to(device)
    key = run_key(f"rgbir-{spec.arch}-teacher", profile=profile.name, seed=seed,
                  config={"spec": asdict(spec), "head": asdict(head), "train": asdict(cfg),
                          "data": data_signature(data.root)})
    train = fit_closure(det, train_set, cfg, collate_fn=detection_collate(), device=device, progress=progress,
                        verbose=verbose, keep_checkpoint=False)
    return TutorialSetup(det, key, train, eval_set, cfg.batch_size, device)


def rgb_teacher(profile: Any, seed: int = 0, *, progress: bool = False, verbose: bool = True) -> TutorialRun:
    """The chapter's RGB "foundation model": a detector trained from scratch on the synthetic RGB frames
    (shipped with the package in ``cpu``; else from the run cache, else trained), evaluated on the RGB
    frames of the report split. Its trunk is ``detector_trunk(run.model)``; ``run.extra["key"]`` is its
    cache key."""
    s = rgb_teacher_setup(profile, seed, progress=progress, verbose=verbose)
    spec = tutorial_backbone(profile, "teacher")
    return finish_run(s.model, s.key, s.train, lambda m: evaluate_detection(m, s.eval_set, batch_size=s.batch_size),
                      s.device, verbose=verbose, extra={"key": s.key, "spec": spec})


def tutorial_student(profile: Any, teacher: TutorialRun, name: str, loss: LossSpec | None, *, seed: int = 0,
                     init: str = "auto", head: str = "teacher", progress: bool = False,
                     verbose: bool = False) -> TutorialRun:
    """One row of the chapter's table: stage A with ``loss`` (``None``: no distillation, the
    baseline) and stage B on IR, both cached.

    ``init``: ``"teacher"`` starts the student from the teacher's trunk weights (the paper's setting:
    DINOv2 student from DINOv2 weights), ``"scratch"`` from random weights; ``"auto"`` = teacher when
    the profile's student and teacher architectures match. ``head``: ``"teacher"`` starts stage B's
    pyramid and head from the teacher detector's (our tutorial-scale choice: our "foundation model"
    is itself a detector, so stage B starts from a working head instead of learning one from scratch
    in a few CPU epochs), ``"fresh"`` from random weights (the full-scale recipe: DINOv2 has no
    detection head). Stage B is identical for every row either way. Returns the IR detector with its
    IR test metrics and ``val_*`` IR validation metrics; ``extra`` holds ``trunk`` (the stage-A student), ``stage_a_dir``,
    ``stage_a_seconds`` and ``stage_a_loss`` (the last epoch's mean low/high terms).
    """
    data = paired_data(profile)
    device = profile.device
    t_trunk = detector_trunk(teacher.model)
    t_spec, s_spec = tutorial_backbone(profile, "teacher"), tutorial_backbone(profile, "student")
    if init == "auto":
        init = "teacher" if (t_spec.arch, t_spec.depth) == (s_spec.arch, s_spec.depth) else "scratch"
    if init not in ("teacher", "scratch"):
        raise ValueError(f"init must be 'auto', 'teacher' or 'scratch', got {init!r}")
    if head not in ("teacher", "fresh"):
        raise ValueError(f"head must be 'teacher' or 'fresh', got {head!r}")
    seed_everything(seed)
    student = copy.deepcopy(t_trunk) if init == "teacher" else build_trunk(s_spec)
    for p in student.parameters():
        p.requires_grad_(True)
    student.to(device)
    extra: dict[str, Any] = {"trunk": student, "stage_a_dir": None, "stage_a_seconds": 0.0, "stage_a_loss": {}}
    key_a = "none"
    if loss is not None:
        teacher_trunk = copy.deepcopy(t_trunk).to(device)
        cfg_a = stage_train_config(profile, "distill", seed)
        train_pairs, _ = paired_splits(data)
        distiller = stage_a_distiller(student, teacher_trunk, make_loss(loss, student, teacher_trunk)).to(device)
        key_a = run_key(f"rgbir-freqkd-stageA-{name}", profile=profile.name, seed=seed,
                        config={"teacher": teacher.extra["key"], "init": init, "student": asdict(s_spec),
                                "loss": asdict(loss), "train": asdict(cfg_a)})

        train_a = fit_closure(distiller, train_pairs, cfg_a, collate_fn=collate_pairs, device=device,
                              progress=progress, verbose=verbose, keep_checkpoint=False)
        _, a_dir, _ = train_or_load(distiller, key_a, train_a, verbose=verbose)
        last = [r for r in read_metrics(a_dir) if r.get("kind") == "epoch"][-1:]
        extra.update(stage_a_dir=a_dir, stage_a_seconds=run_seconds(a_dir),
                     stage_a_loss={k.split(".")[-1]: v for k, v in (last[0] if last else {}).items()
                                   if k.startswith("kd_freqkd.")})
    train_set, _ = ir_splits(data)
    head_spec, cfg_b = tutorial_head(profile), stage_train_config(profile, "finetune", seed)
    det = detector_from_trunk(student, train_set.num_classes, head_spec, s_spec.img_size)
    if head == "teacher":
        copy_head(teacher.model, det)
    det.to(device)
    key_b = run_key(f"rgbir-freqkd-stageB-{name}", profile=profile.name, seed=seed,
                    config={"stage_a": key_a, "teacher": teacher.extra["key"], "init": init, "head": head,
                            "head_spec": asdict(head_spec), "train": asdict(cfg_b)})

    train_b = fit_closure(det, train_set, cfg_b, collate_fn=detection_collate(), device=device, progress=progress,
                          verbose=verbose, params=stage_b_params(det, 1.0, cfg_b.lr), keep_checkpoint=False)
    run = finish_run(det, key_b, train_b, _ir_evaluation(profile), device, verbose=verbose, extra=extra)
    run.seconds += extra["stage_a_seconds"]
    return run


def tutorial_divergence(profile: Any, trunk: nn.Module, **kwargs: Any) -> dict[str, Any]:
    """:func:`divergence_study` of ``trunk`` on the chapter's study pairs (``profile.crossmodal.study_pairs``)."""
    from rskd_tutorial.data import CocoDetection

    _, study = tutorial_roots(profile)
    pairs = CocoDetection(study, "val", return_paired=True)
    kwargs.setdefault("n_pairs", profile.crossmodal.study_pairs)
    kwargs.setdefault("batch_size", profile.crossmodal.batch_size)
    return divergence_study(trunk, pairs, **kwargs)


# The rows of the chapter's stage-B table: the student alone, the full-band control, FreqKD and its two
# single-band ablations (each band's term alone, with the weight it has in FreqKD).
COMPARISON: dict[str, LossSpec | None] = {
    "nokd": None,
    "mse": LossSpec(split="none"),
    "freqkd": LossSpec(),
    "low_only": LossSpec(high_weight=0.0),
    "high_only": LossSpec(low_weight=0.0),
}


def grid_specs(profile: Any) -> dict[tuple[float, float], LossSpec]:
    """The cutoff x high-band-weight grid of ``profile.crossmodal`` (chosen on the validation pairs)."""
    c = profile.crossmodal
    return {(rc, wh): LossSpec(cutoff=rc, high_weight=wh) for rc in c.sweep_cutoffs for wh in c.sweep_weights}


def run_name(loss: LossSpec | None) -> str:
    """The cache name of a stage-A loss: one name per distinct spec, so the table row ``freqkd`` and the
    grid point (0.25, 0.1) share their runs."""
    if loss is None:
        return "nokd"
    if loss.split == "none":
        return "mse"
    if loss == LossSpec():
        return "freqkd"
    return f"freqkd-rc{loss.cutoff:g}-wh{loss.high_weight:g}-wl{loss.low_weight:g}"


def tutorial_rows(profile: Any, teacher: TutorialRun, losses: dict[str, LossSpec | None], seeds: Any, *,
                  progress: bool = True, verbose: bool = False) -> dict[str, list[TutorialRun]]:
    """``{row: [run for each seed]}``: :func:`tutorial_student` for every loss and seed, with one progress
    line per run (cached runs load)."""
    from tqdm.auto import tqdm

    out: dict[str, list[TutorialRun]] = {}
    jobs = [(row, loss, seed) for row, loss in losses.items() for seed in seeds]
    bar = tqdm(jobs, desc="students", disable=not progress)
    for row, loss, seed in bar:
        bar.set_postfix_str(f"{row} s{seed}")
        out.setdefault(row, []).append(
            tutorial_student(profile, teacher, run_name(loss), loss, seed=seed, verbose=verbose))
    return out


def stage_a_trunk(run: TutorialRun, teacher: TutorialRun) -> nn.Module:
    """The IR trunk a row had after stage A, before stage B fine-tuned it: the stage-A student's weights
    (``run.extra["stage_a_dir"]/final.pt``), or the teacher's trunk for a row without stage A."""
    from rskd_tutorial.recipes.freqkd.models import student_trunk_state

    trunk = copy.deepcopy(detector_trunk(teacher.model))
    if run.extra.get("stage_a_dir") is not None:
        trunk.load_state_dict(student_trunk_state(Path(run.extra["stage_a_dir"]) / "final.pt"), strict=True)
    return trunk.eval()
