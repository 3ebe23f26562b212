"""``rskd plan``: each chapter's runs and estimated time per profile; the profiles' sizes and RSKD_FULL.

The plan's numbers are estimates; what is checked here is the counting (rows x seeds, shipped teachers
cost nothing), that the ``gpu`` and ``t4`` profiles fit their budgets by the FLOP model, and that the
``ci`` / ``cpu`` fields that enter the run-cache keys did not move.
"""

from __future__ import annotations

import json

import pytest

from cli_helpers import rskd

CHAPTERS = ("00", "01", "02", "03", "04", "05", "06")


@pytest.fixture(scope="module")
def ci_plan(tmp_path_factory) -> dict:
    proc = rskd("plan", "--profile", "ci", "--json", cwd=tmp_path_factory.mktemp("plan"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _chapter(plan: dict, chapter: str) -> dict:
    return next(c for c in plan["chapters"] if c["chapter"] == chapter)


def test_ci_plan_through_the_entry_point_lists_every_chapter(ci_plan):
    from rskd_tutorial.profile import get_profile

    P = get_profile("ci")
    assert [c["chapter"] for c in ci_plan["chapters"]] == list(CHAPTERS)
    assert ci_plan["profile"] == "ci" and ci_plan["device_kind"] == "cpu" and ci_plan["budget_s"] == 90.0
    for ch in ci_plan["chapters"]:
        assert ch["runs"] and all(r["image_steps"] > 0 for r in ch["runs"]), ch["chapter"]
        assert not ch["over_budget"] and 0 < ch["seconds"] <= 90.0
    # chapter 0 in ci, by hand: 2 teachers; RetinaNet: student alone + 6 baselines; Faster R-CNN: student alone
    # + FitNet + FGD (the notebook's FRCNN_BASELINES["ci"]); one run per seed each
    ch0 = _chapter(ci_plan, "00")
    seeds = len(P.seeds)
    assert sum(r["role"] == "teacher" for r in ch0["runs"]) == 2
    assert sum(r["role"] in ("student", "kd") for r in ch0["runs"]) == (1 + 6 + 1 + 2) * seeds
    d = P.detection
    student = next(r for r in ch0["runs"] if r["id"] == "optical-retinanet-student-s0")
    assert student["image_steps"] == d.train_images * d.student_epochs
    # chapter 5: student alone + 8 rows per seed; the cascade's two stages are summed
    ch5 = _chapter(ci_plan, "05")
    assert sum(r["role"] in ("student", "kd") for r in ch5["runs"]) == 9 * seeds
    cascade = next(r for r in ch5["runs"] if r["id"] == "05:saliency-cascade-s0")
    assert len(cascade["stages"]) == 2
    assert cascade["image_steps"] == 2 * P.saliency.train_images * P.saliency.student_epochs
    # the book total counts a run shared by chapters (the optical RetinaNet teacher of 0, 1, 2) once
    per_chapter = sum(r["seconds"] for c in ci_plan["chapters"] for r in c["runs"])
    assert ci_plan["total_seconds"] < per_chapter


def test_cpu_plan_loads_the_shipped_teachers():
    from rskd_tutorial.engine.store import shipped_records
    from rskd_tutorial.profile import get_profile
    from rskd_tutorial.recipes.plan import plan

    if not shipped_records("cpu"):
        pytest.skip("no cpu teachers in this checkout")
    result = plan(get_profile("cpu"))
    ch0 = _chapter(result, "00")
    teachers = {r["id"]: r for r in ch0["runs"] if r["role"] == "teacher"}
    assert set(teachers) == {"optical-retinanet-teacher", "optical-faster_rcnn-teacher"}
    assert all(r["shipped"] and r["seconds"] == 0.0 for r in teachers.values())
    assert sum(r["role"] in ("student", "kd") for r in ch0["runs"]) == (1 + 6 + 1) * 3   # no Faster R-CNN KD rows


def test_gpu_and_t4_chapters_fit_their_budgets_by_the_flop_model(monkeypatch):
    monkeypatch.delenv("RSKD_FULL", raising=False)
    monkeypatch.delenv("RSKD_SEEDS", raising=False)
    from rskd_tutorial.profile import get_profile
    from rskd_tutorial.recipes.plan import format_plan, plan

    gpu = plan(get_profile("gpu"))
    assert gpu["device_kind"] == "h100" and "FLOP model" in gpu["cost_source"]
    seconds = {c["chapter"]: c["seconds"] for c in gpu["chapters"]}
    assert all(0 < v <= 600.0 for v in seconds.values()), seconds
    assert not any(r["shipped"] for c in gpu["chapters"] for r in c["runs"])   # no gpu teacher is shipped
    assert any(k.startswith("retinanet@192px") for k in gpu["measured"])
    t4 = plan(get_profile("t4"))
    assert t4["device_kind"] == "t4" and t4["budget_s"] == 2700.0 and not t4["over_budget"]
    assert all(c["seconds"] <= 2700.0 for c in t4["chapters"])
    assert "OVER BUDGET" not in format_plan(gpu)


def test_a_chapter_over_its_budget_is_flagged():
    from rskd_tutorial.profile import get_profile
    from rskd_tutorial.recipes.plan import BUDGET_S, format_plan, plan

    result = plan(get_profile("ci"), chapters=["00"])
    BUDGET = dict(BUDGET_S)
    try:
        BUDGET_S["ci"] = 0.01
        flagged = plan(get_profile("ci"), chapters=["00"])
    finally:
        BUDGET_S.update(BUDGET)
    assert not result["over_budget"] and flagged["over_budget"] == ["00"]
    assert "OVER BUDGET" in format_plan(flagged)


def test_rskd_full_widens_the_gpu_seeds_and_sweeps(monkeypatch):
    from rskd_tutorial.profile import FULL_SEEDS, FULL_SWEEP, get_profile
    from rskd_tutorial.recipes.plan import chapter_runs

    monkeypatch.delenv("RSKD_SEEDS", raising=False)
    monkeypatch.delenv("RSKD_FULL", raising=False)
    quick = get_profile("gpu")
    assert quick.seeds == (0, 1, 2) and quick.crossmodal.sweep_cutoffs == (0.25,)
    assert quick.crossmodal.sweep_weights == (0.1,)
    n_quick = len(chapter_runs(quick, "04"))
    monkeypatch.setenv("RSKD_FULL", "1")
    for name in ("gpu", "t4"):
        full = get_profile(name)
        assert full.seeds == FULL_SEEDS
        assert (full.crossmodal.sweep_cutoffs, full.crossmodal.sweep_weights) == FULL_SWEEP
    assert len(chapter_runs(get_profile("gpu"), "04")) == n_quick + 5       # the 3 x 2 grid less the default row
    monkeypatch.setenv("RSKD_SEEDS", "1")
    assert get_profile("gpu").seeds == (0,)                               # RSKD_SEEDS applies after RSKD_FULL


def test_t4_profile_and_names():
    from rskd_tutorial.profile import PROFILE_NAMES, get_profile

    assert PROFILE_NAMES == ("ci", "cpu", "gpu", "t4")
    t4 = get_profile("t4")
    assert t4.name == "t4" and t4.detection.teacher_backbone == "regnetx_002"
    assert get_profile("T4").name == "t4"
    with pytest.raises(ValueError, match="t4"):
        get_profile("h100")


# What enters the run-cache keys of the ci and cpu profiles (the shipped cpu teachers are found by key):
# written down from the profiles before the gpu / t4 resizing; a change here retrains everything.
KEY_FIELDS = {
    "ci": {"seeds": [0], "num_workers": 0,
           "detection": {"image_size": 96, "train_images": 16, "val_images": 8, "test_images": 8,
                         "teacher_backbone": "regnetx_002", "student_backbone": "regnetx_002", "fpn_channels": 32,
                         "anchor_factor": 0.35, "anchor_factor_faster_rcnn": 0.25, "head_convs": 1,
                         "box_head_dim": 64, "teacher_epochs": 1, "student_epochs": 1, "batch_size": 4,
                         "lr_retinanet": 2e-3, "lr_faster_rcnn": 2e-3, "warmup_iters": 2, "optimizer": "adamw",
                         "weight_decay": 0.05, "rois_per_image": 64, "rpn_proposals": 100, "amplifier_epochs": 1,
                         "teacher_epochs_retinanet": None},
           "saliency": {"resolutions": [64, 32, 16], "eval_size": 64, "train_images": 8, "test_images": 4,
                        "val_images": 4, "backbone": "regnetx_002", "teacher_epochs": 1, "student_epochs": 1,
                        "batch_size": 4, "lr": 1e-3, "channels": 16, "transformer_backbone": "pvt_v2_b0",
                        "warmup_iters": 0},
           "crossmodal": {"image_size": 64, "train_pairs": 8, "val_pairs": 4, "test_pairs": 4, "study_pairs": 8,
                          "teacher_backbone": "regnetx_002", "student_backbone": "regnetx_002", "vit_depth": None,
                          "pyramid_channels": 16, "anchor_factor": 0.35, "head_convs": 1, "teacher_epochs": 1,
                          "distill_epochs": 1, "finetune_epochs": 1, "batch_size": 4, "lr": 1e-3,
                          "distill_lr": 1e-4, "finetune_lr": 3e-4, "warmup_iters": 1, "sweep_cutoffs": [0.25],
                          "sweep_weights": [0.1, 1.0]}},
    "cpu": {"seeds": [0, 1, 2], "num_workers": 0,
            "detection": {"image_size": 192, "train_images": 1000, "val_images": 100, "test_images": 100,
                          "teacher_backbone": "regnetx_002", "student_backbone": "regnetx_002", "fpn_channels": 64,
                          "anchor_factor": 0.35, "anchor_factor_faster_rcnn": 0.25, "head_convs": 1,
                          "box_head_dim": 256, "teacher_epochs": 18, "teacher_epochs_retinanet": 30,
                          "student_epochs": 2, "batch_size": 8, "lr_retinanet": 2e-3, "lr_faster_rcnn": 2e-3,
                          "warmup_iters": 50, "optimizer": "adamw", "weight_decay": 0.05, "rois_per_image": 128,
                          "rpn_proposals": 300, "amplifier_epochs": 2},
            "saliency": {"resolutions": [96, 48, 24], "eval_size": 96, "train_images": 600, "test_images": 100,
                         "val_images": 100, "backbone": "regnetx_002", "teacher_epochs": 40, "student_epochs": 8,
                         "batch_size": 16, "lr": 2e-3, "channels": 32, "transformer_backbone": "pvt_v2_b0",
                         "warmup_iters": 20},
            "crossmodal": {"image_size": 160, "train_pairs": 1000, "val_pairs": 100, "test_pairs": 100,
                           "study_pairs": 200, "teacher_backbone": "regnetx_002", "student_backbone": "regnetx_002",
                           "vit_depth": None, "pyramid_channels": 64, "anchor_factor": 0.35, "head_convs": 1,
                           "teacher_epochs": 20, "distill_epochs": 1, "finetune_epochs": 1, "batch_size": 8,
                           "lr": 2e-3, "distill_lr": 5e-4, "finetune_lr": 5e-4, "warmup_iters": 50,
                           "sweep_cutoffs": [0.125, 0.25, 0.375], "sweep_weights": [0.1, 1.0]}},
}

# TrainConfig's fields and defaults go into every key (asdict(cfg)): none may be added or changed
TRAIN_CONFIG_DEFAULTS = {
    "batch_size": 8, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "schedule": "multistep",
    "milestones": (), "gamma": 0.1, "warmup_iters": 500, "warmup_factor": 0.001, "grad_clip": None, "amp": "auto",
    "num_workers": 0, "seed": 0, "eval_every": 1, "log_every": 10, "find_unused_parameters": True,
    "channels_last": False,
}


@pytest.mark.parametrize("name", ["ci", "cpu"])
def test_the_key_fields_of_ci_and_cpu_are_unchanged(name, monkeypatch):
    monkeypatch.setenv("RSKD_FULL", "1")          # has no effect on ci / cpu
    monkeypatch.delenv("RSKD_SEEDS", raising=False)
    from rskd_tutorial.profile import get_profile

    got = json.loads(json.dumps(get_profile(name).to_dict()))
    want = KEY_FIELDS[name]
    assert got["name"] == name
    for section, fields in want.items():
        if isinstance(fields, dict):
            assert {k: got[section][k] for k in fields} == fields, section
            assert set(got[section]) == set(fields), f"a new {section} field would enter the cache keys"
        else:
            assert got[section] == fields, section


def test_train_config_fields_are_unchanged():
    from dataclasses import MISSING, fields

    from rskd_tutorial.engine.train import TrainConfig

    got = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    assert got == TRAIN_CONFIG_DEFAULTS
    assert [f.name for f in fields(TrainConfig) if f.default is MISSING] == ["epochs", "lr"]


def _notebook_tables(name: str, start: str, stop: str, profile: str) -> dict:
    """The names a notebook's setup cell defines between ``start`` and ``stop``, run for ``profile``."""
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parent.parent / "book" / name).read_text(encoding="utf-8"))
    src = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and start in "".join(c["source"]))
    ns: dict = {"P": type("P", (), {"name": profile})}
    exec(src[src.index(start):src.index(stop)], ns)
    return ns


@pytest.mark.parametrize("profile", ["ci", "cpu", "gpu", "t4"])
def test_the_plans_row_tables_are_the_chapters(profile):
    """The plan counts rows from copies of the notebooks' tables: they must agree (and a t4 lookup works)."""
    from rskd_tutorial.recipes import plan as planning

    ns = _notebook_tables("00_distilling_a_detector.ipynb", "BASELINES = ", "print(f\"scenes", profile)
    assert ns["BASELINES"] == planning.BASELINES_00
    assert ns["FRCNN_BASELINES"] == planning.FRCNN_BASELINES_00.get(profile, ())
    ns = _notebook_tables("02_ds2d2.ipynb", "ALL_ROWS = ", "AMP_EPOCHS", profile)
    assert ns["ROWS"] == planning.ROWS_02.get(profile, planning.ROWS_02["gpu"])
    ns = _notebook_tables("03_dipkd.ipynb", "ABLATION = ", "ALL_ARCHS", profile)
    grid = {k: v for k, v in ns["GRID"].items() if k != "n_feat"}
    assert grid == planning.GRIDS_03.get(profile, planning.GRIDS_03["gpu"])
    from rskd_tutorial.recipes.scrkd import COMPARISON

    assert planning.SCRKD_ROWS_05 == COMPARISON
    from rskd_tutorial.bench import DETECTION_METHODS

    assert planning.BENCH_METHODS_06 == DETECTION_METHODS


def test_calibrate_times_real_steps_of_a_family(monkeypatch):
    """--calibrate's cost model: a real (timed) training step and forward of a family at the profile's size."""
    monkeypatch.setenv("RSKD_CACHE", "/nonexistent-unused")
    from rskd_tutorial.profile import get_profile
    from rskd_tutorial.recipes.costs import calibrate
    from rskd_tutorial.recipes.plan import PlannedRun, Stage, estimate

    P = get_profile("ci")
    costs = calibrate(P, {"sod": 2}, "cpu", steps=1, warmup=1)
    train, forward = costs.train("sod", 16), costs.forward("sod", 16)
    assert costs.kind == "cpu" and "calibrated" in costs.source
    assert 0 < forward and 0 < train and set(costs.measured) == {"sod@16px s/image (train step)",
                                                                  "sod@16px s/image (forward)"}
    run = PlannedRun("r", "kd", (Stage("sod", 16, 8, 2, 2, (("sod", 16),)),))
    assert estimate(run, costs) == pytest.approx(16 * (train + forward))
    assert estimate(PlannedRun("t", "teacher", run.stages, shipped=True), costs) == 0.0
