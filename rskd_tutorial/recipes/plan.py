"""``rskd plan``: what each chapter trains in a profile, and how long that takes.

For every chapter (00-06) :func:`chapter_runs` lists the runs the chapter trains or loads in a profile,
counted from the chapter's own code (the row tables below are copies of the notebooks' ``ROWS`` /
``GRIDS`` / ``FRCNN_BASELINES``, with the notebooks' fallback to the ``gpu`` table for a profile they do
not name) and sized from the profile alone (no data is generated: a training set holds
``train_images`` scenes). A teacher is loaded, not trained, when the teacher store
(:mod:`rskd_tutorial.engine.store`) holds a record of that name for the profile; a student is one run
per row and seed (``profile.seeds``). A run's *image-steps* are its images per epoch times its epochs,
summed over its stages (FreqKD's stage A + B, the SCRKD cascade's two stages); its estimate is, per
stage, image-steps x (seconds a training image + seconds a frozen forward of each model it distils
from) plus the steps x the per-step overhead, from :mod:`rskd_tutorial.recipes.costs`, plus its
evaluation (a forward of each held-out image and :data:`~rskd_tutorial.recipes.costs.EVAL_FIXED_S` for
the metric). Not counted: data generation (written once per profile), the chapters' figures and probes.

Each chapter runs on its own (``chapters never depend on each other having run``), so a chapter's
estimate counts every run it needs; the book total counts a run shared by chapters (a teacher, the
students trained alone) once. A chapter whose estimate exceeds :data:`BUDGET_S` of the profile is
flagged. ``--json`` prints the same as one JSON object.

The device the estimate is for: the one the profile is sized for (``ci`` / ``cpu``: 2 CPU cores,
``gpu``: one H100, ``t4``: Colab's T4), or ``--device-kind``; ``--calibrate`` times real steps on this
machine's device instead (:func:`rskd_tutorial.recipes.costs.calibrate`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rskd_tutorial.recipes.costs import (DEVICE_KINDS, EVAL_FIXED_S, CostModel, calibrate, flop_cost_model,
                                         table_cost_model)

__all__ = ["BUDGET_S", "CHAPTERS", "PlannedRun", "Stage", "chapter_runs", "estimate", "plan", "plan_main"]

BUDGET_S = {"ci": 90.0, "cpu": 1800.0, "gpu": 600.0, "t4": 2700.0}   # a chapter's budget (t4: a Colab session)
TARGET_DEVICE = {"ci": "cpu", "cpu": "cpu", "gpu": "h100", "t4": "t4"}
CHAPTERS = {"00": "distilling a detector", "01": "spectral analysis", "02": "DS2D2", "03": "DIPKD",
            "04": "FreqKD and the RGB-IR divergence", "05": "SCRKD cascade", "06": "which distillation"}

# --- the chapters' row tables (copies; a profile a notebook does not name gets its gpu table) ----------------
BASELINES_00 = ("fitnet", "cwd", "fgd", "mgd", "pkd", "logit")                  # chapter 0, RetinaNet
FRCNN_BASELINES_00 = {"gpu": ("fitnet", "cwd", "fgd", "mgd", "pkd"), "ci": ("fitnet", "fgd")}   # .get(name, ())
ALL_ROWS_02 = ("fitnet", "fgd", "explicit", "implicit", "full", "balanced")
ROWS_02 = {
    "ci": {"retinanet": ("fitnet", "full"), "faster_rcnn": ("balanced",)},
    "cpu": {"retinanet": ALL_ROWS_02, "faster_rcnn": ("fitnet", "fgd", "full", "balanced")},
    "gpu": {"retinanet": ALL_ROWS_02, "faster_rcnn": ALL_ROWS_02},
}
_ABLATION = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1)]
GRIDS_03 = {
    "ci": dict(compare={"faster_rcnn": ["dipkd", "dipkd_balanced"], "retinanet": ["mgd", "dipkd"]},
               ablation={"faster_rcnn": [(1, 0, 0)]}, taus={"faster_rcnn": [0.5]}, mask_rates={"faster_rcnn": [0.25]},
               init_arms=["faster_rcnn"]),
    "cpu": dict(compare={a: ["fgd", "dipkd", "dipkd_balanced"] for a in ("faster_rcnn", "retinanet")},
                ablation={"faster_rcnn": _ABLATION[:3]}, taus={"faster_rcnn": [0.25, 0.5, 1.0]},
                mask_rates={"faster_rcnn": [0.0, 0.25, 0.75]}, sweep_seeds=2, init_arms=["faster_rcnn"]),
    "gpu": dict(compare={a: ["fitnet", "fgd", "mgd", "dipkd", "dipkd_balanced"] for a in ("faster_rcnn", "retinanet")},
                ablation={a: _ABLATION for a in ("faster_rcnn", "retinanet")},
                taus={a: [0.25, 0.5, 0.75, 1.0, 1.25] for a in ("faster_rcnn", "retinanet")},
                mask_rates={a: [0.0, 0.25, 0.5, 0.75, 1.0] for a in ("faster_rcnn", "retinanet")},
                init_arms=["faster_rcnn", "retinanet"]),
}
DIPKD_DEFAULT = (0.5, 0.25)                        # DIPKDConfig(): tau, mask rate
SCRKD_ROWS_05 = ("fitnet", "at", "mvcd", "msfd", "dsd", "scrkd", "scrkd_4x", "cascade")   # recipes.scrkd.COMPARISON
BENCH_METHODS_06 = ("student", "fitnet", "at", "cwd", "fgd", "mgd", "pkd", "logit", "ds2d2", "dipkd")


@dataclass(frozen=True)
class Stage:
    """One training stage: a model of ``family`` at ``size`` px trained ``epochs`` x ``images``, in batches of
    ``batch``, with a forward of each frozen model in ``frozen`` ((family, size) pairs) every step."""

    family: str
    size: int
    images: int
    epochs: int
    batch: int
    frozen: tuple[tuple[str, int], ...] = ()

    @property
    def image_steps(self) -> int:
        return self.images * self.epochs

    @property
    def steps(self) -> int:
        per_epoch = self.images // self.batch if self.images > self.batch else 1    # engine.fit's drop_last
        return per_epoch * self.epochs


@dataclass
class PlannedRun:
    """A run a chapter trains (``shipped``: loads from the teacher store instead; it costs nothing)."""

    id: str                      # the same id in two chapters is the same cached run
    role: str                    # teacher | student | kd | bench
    stages: tuple[Stage, ...]
    shipped: bool = False
    seconds: float = 0.0
    evals: tuple[tuple[str, int, int], ...] = ()     # (family, size, images) evaluated after training

    @property
    def image_steps(self) -> int:
        return sum(s.image_steps for s in self.stages)

    @property
    def family(self) -> str:
        return self.stages[-1].family


@dataclass
class ChapterPlan:
    chapter: str
    title: str
    runs: list[PlannedRun] = field(default_factory=list)
    seconds: float = 0.0
    budget_s: float = 0.0

    @property
    def over_budget(self) -> bool:
        return self.seconds > self.budget_s


def _shipped_names(profile: Any) -> set[str]:
    from rskd_tutorial.engine.store import shipped_records

    return {r["name"] for r in shipped_records(profile.name)}


# --- the runs of each chapter ----------------------------------------------------------------------------

class _Book:
    """Builds the runs of the chapters of one profile (sizes from the profile, epochs from the recipes)."""

    def __init__(self, profile: Any):
        self.p = profile
        self.seeds = tuple(profile.seeds)
        self.shipped = _shipped_names(profile)

    def table(self, tables: dict[str, Any]) -> Any:
        return tables.get(self.p.name, tables["gpu"])

    # detection (chapters 0-3, 6)
    def det_stage(self, arch: str, role: str, *, frozen: int = 0, **overrides: Any) -> Stage:
        from rskd_tutorial.recipes.detection import tutorial_train_config

        d = self.p.detection
        cfg = tutorial_train_config(self.p, arch, role, **overrides)
        return Stage(arch, d.image_size, d.train_images, cfg.epochs, cfg.batch_size, ((arch, d.image_size),) * frozen)

    def det_eval(self, arch: str) -> tuple[tuple[str, int, int], ...]:
        d = self.p.detection
        return ((arch, d.image_size, d.test_images or d.val_images),)

    def det_run(self, id: str, role: str, stage: Stage, shipped: bool = False) -> PlannedRun:
        return PlannedRun(id, role, (stage,), shipped=shipped, evals=self.det_eval(stage.family))

    def det_teacher(self, kind: str, arch: str) -> PlannedRun:
        return self.det_run(f"{kind}-{arch}-teacher", "teacher", self.det_stage(arch, "teacher"),
                            shipped=f"{kind}-{arch}" in self.shipped)

    def det_students(self, kind: str, arch: str, seeds: Sequence[int] | None = None) -> list[PlannedRun]:
        return [self.det_run(f"{kind}-{arch}-student-s{s}", "student", self.det_stage(arch, "student"))
                for s in (self.seeds if seeds is None else seeds)]

    def det_kd(self, chapter: str, kind: str, arch: str, row: str, seeds: Sequence[int] | None = None,
               frozen: int = 1) -> list[PlannedRun]:
        stage = self.det_stage(arch, "student", frozen=frozen)
        return [self.det_run(f"{chapter}:{kind}-{arch}-{row}-s{s}", "kd", stage)
                for s in (self.seeds if seeds is None else seeds)]

    def ch00(self) -> list[PlannedRun]:
        runs = [self.det_teacher("optical", "retinanet"), *self.det_students("optical", "retinanet")]
        for name in BASELINES_00:
            runs += self.det_kd("00", "optical", "retinanet", name)
        runs += [self.det_teacher("optical", "faster_rcnn"), *self.det_students("optical", "faster_rcnn")]
        for name in FRCNN_BASELINES_00.get(self.p.name, ()):
            runs += self.det_kd("00", "optical", "faster_rcnn", name)
        return runs

    def ch01(self) -> list[PlannedRun]:
        return [self.det_teacher("optical", "retinanet"), *self.det_students("optical", "retinanet", (0,))]

    def ch02(self) -> list[PlannedRun]:
        runs = []
        for arch in ("retinanet", "faster_rcnn"):
            runs += [self.det_teacher("optical", arch), *self.det_students("optical", arch)]
        d = self.p.detection
        for arch in ("retinanet", "faster_rcnn"):   # the HF amplifier: the teacher's heads on H(F), trunk frozen
            stage = self.det_stage(arch, "teacher", epochs=d.amplifier_epochs)
            runs.append(self.det_run(f"optical-{arch}-ds2d2-amplifier", "teacher", stage))
        for arch, rows in self.table(ROWS_02).items():
            for row in rows:   # DS2D2 rows run the teacher and the amplifier: two frozen forwards
                runs += self.det_kd("02", "optical", arch, row, frozen=1 if row in ("fitnet", "fgd") else 2)
        return runs

    def ch03(self) -> list[PlannedRun]:
        grid = self.table(GRIDS_03)
        archs = ("faster_rcnn", "retinanet")
        runs: dict[str, PlannedRun] = {}

        def add(rs: list[PlannedRun]) -> None:
            for r in rs:
                runs.setdefault(r.id, r)

        def dipkd(arch: str, seeds: Sequence[int], tau: float = 0.5, rate: float = 0.25, modules: str = "111",
                  weight: str = "paper", init: bool = False) -> list[PlannedRun]:
            row = f"dipkd-{modules}-t{tau:g}-m{rate:g}-{weight}{'-init' if init else ''}"
            return self.det_kd("03", "sar", arch, row, seeds)

        for arch in archs:
            add([self.det_teacher("sar", arch), *self.det_students("sar", arch)])
        for arch in archs:
            for m in grid["compare"].get(arch, []):
                add(dipkd(arch, self.seeds) if m == "dipkd" else dipkd(arch, self.seeds, weight="balanced")
                    if m == "dipkd_balanced" else self.det_kd("03", "sar", arch, m))
        for arch in grid["init_arms"]:
            add([self.det_run(f"03:sar-{arch}-init-only-s0", "student", self.det_stage(arch, "student"))])
            add(dipkd(arch, (0,)))
            if self.p.name != "ci":
                add(dipkd(arch, (0,), init=True))
        for arch, flags_list in grid["ablation"].items():
            if arch in archs and flags_list:
                for flags in flags_list:
                    add(dipkd(arch, self.seeds, modules="".join(map(str, flags)), weight="balanced"))
                add(dipkd(arch, self.seeds, weight="balanced"))
        sweep_seeds = self.seeds[:grid.get("sweep_seeds", len(self.seeds))]
        for arch in archs:
            add([r for tau in grid["taus"].get(arch, []) for r in dipkd(arch, sweep_seeds, tau=tau)])
            add([r for rate in grid["mask_rates"].get(arch, []) for r in dipkd(arch, sweep_seeds, rate=rate)])
        return list(runs.values())

    def ch04(self) -> list[PlannedRun]:
        from rskd_tutorial.recipes.freqkd import stage_train_config

        c = self.p.crossmodal

        def stage(name: str, frozen: int = 0) -> Stage:
            cfg = stage_train_config(self.p, name)
            frozen_models = (("rgbir", c.image_size),) * frozen
            return Stage("rgbir", c.image_size, c.train_pairs, cfg.epochs, cfg.batch_size, frozen_models)

        report = ((("rgbir", c.image_size, c.test_pairs or c.val_pairs)),)
        both = report + ((("rgbir", c.image_size, c.val_pairs)),) if c.test_pairs else report   # + val_* metrics
        runs = [PlannedRun("rgbir-teacher", "teacher", (stage("teacher"),), shipped="rgb-retinanet" in self.shipped,
                           evals=report),
                PlannedRun("04:rgbir-nokd-s0", "student", (stage("finetune"),), evals=both)]
        rows = ["mse", "freqkd-c0.25-w0.1"]
        rows += [f"freqkd-c{rc:g}-w{wh:g}" for rc in c.sweep_cutoffs for wh in c.sweep_weights]
        for row in dict.fromkeys(rows):     # stage A (feature distillation from the frozen RGB trunk) + stage B
            runs.append(PlannedRun(f"04:rgbir-{row}-s0", "kd", (stage("distill", frozen=1), stage("finetune")),
                                   evals=both))
        return runs

    def ch05(self) -> list[PlannedRun]:
        from rskd_tutorial.recipes.scrkd.tutorial import saliency_train_config

        sal = self.p.saliency
        t, a, s = sal.resolutions

        def stage(res: int, role: str, frozen: tuple[tuple[str, int], ...] = ()) -> Stage:
            cfg = saliency_train_config(self.p, role)
            return Stage("sod", res, sal.train_images, cfg.epochs, cfg.batch_size, frozen)

        def ev(res: int) -> tuple[tuple[str, int, int], ...]:
            return (("sod", res, sal.test_images),)

        runs = [PlannedRun(f"saliency-{t}px-teacher", "teacher", (stage(t, "teacher"),),
                           shipped="saliency-teacher" in self.shipped, evals=ev(t)),
                PlannedRun(f"saliency-{a}px-teacher", "teacher", (stage(a, "teacher"),),
                           shipped="saliency-assistant" in self.shipped, evals=ev(a)),
                PlannedRun(f"saliency-{s}px-teacher", "teacher", (stage(s, "teacher"),), evals=ev(s))]
        runs += [PlannedRun(f"saliency-{s}px-student-s{k}", "student", (stage(s, "student"),), evals=ev(s))
                 for k in self.seeds]
        for row in SCRKD_ROWS_05:
            for k in self.seeds:
                if row == "cascade":
                    stages = (stage(a, "student", (("sod", t),)), stage(s, "student", (("sod", a),)))
                else:
                    stages = (stage(s, "student", (("sod", t if row == "scrkd_4x" else a),)),)
                runs.append(PlannedRun(f"05:saliency-{row}-s{k}", "kd", stages,
                                       evals=ev(s) + (ev(a) if row == "cascade" else ())))
        return runs

    def ch06(self) -> list[PlannedRun]:
        d = self.p.detection
        steps = 5 + 2 if self.p.name == "gpu" else 3 + 1      # the bench: timed steps + warm-up
        runs = []
        for arch in ("retinanet", "faster_rcnn"):
            for m in BENCH_METHODS_06:
                if m == "logit" and arch != "retinanet":
                    continue
                st = Stage(arch, d.image_size, d.batch_size * steps, 1, d.batch_size, () if m == "student" else
                           ((arch, d.image_size),))
                runs.append(PlannedRun(f"06:bench-{arch}-{m}", "bench", (st,)))
        return runs


def chapter_runs(profile: Any, chapter: str) -> list[PlannedRun]:
    """The runs chapter ``chapter`` (``"00"`` .. ``"06"``) trains or loads in ``profile``."""
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; choose from {tuple(CHAPTERS)}")
    return getattr(_Book(profile), f"ch{chapter}")()


def estimate(run: PlannedRun, costs: CostModel) -> float:
    """Seconds ``run`` trains for under ``costs`` (0 for a shipped teacher)."""
    if run.shipped:
        return 0.0
    total = 0.0
    for st in run.stages:
        per_image = costs.train(st.family, st.size) + sum(costs.forward(f, s) for f, s in st.frozen)
        total += st.image_steps * per_image + st.steps * costs.step_overhead_s
    batch = run.stages[-1].batch
    for family, size, images in run.evals:
        batches = -(-images // batch)
        total += images * costs.forward(family, size) + batches * costs.step_overhead_s + EVAL_FIXED_S
    return total


def cost_model(profile: Any, *, calibrated: bool = False, device_kind: str | None = None) -> CostModel:
    """The cost model of ``rskd plan``: calibrated on this device, else the table (cpu) or the FLOP model."""
    if calibrated:
        batches = {"retinanet": profile.detection.batch_size, "faster_rcnn": profile.detection.batch_size,
                   "rgbir": profile.crossmodal.batch_size, "sod": profile.saliency.batch_size}
        return calibrate(profile, batches)
    kind = device_kind or TARGET_DEVICE.get(profile.name, "cpu")
    if kind not in DEVICE_KINDS:
        raise ValueError(f"unknown device kind {kind!r}; choose from {DEVICE_KINDS}")
    return table_cost_model() if kind == "cpu" else flop_cost_model(profile, kind)


def plan(profile: Any, *, calibrated: bool = False, device_kind: str | None = None,
         chapters: Sequence[str] | None = None) -> dict[str, Any]:
    """Every chapter's runs with their image-steps and estimated seconds, the book total (each run once) and
    the chapters over budget; a JSON-ready dict (what ``rskd plan --json`` prints)."""
    costs = cost_model(profile, calibrated=calibrated, device_kind=device_kind)
    budget = BUDGET_S.get(profile.name, BUDGET_S["gpu"])
    out, unique = [], {}
    for ch in chapters or CHAPTERS:
        cp = ChapterPlan(ch, CHAPTERS[ch], chapter_runs(profile, ch), budget_s=budget)
        for r in cp.runs:
            r.seconds = estimate(r, costs)
            unique.setdefault(r.id, r.seconds)
        cp.seconds = sum(r.seconds for r in cp.runs)
        out.append(cp)
    return {
        "profile": profile.name, "seeds": list(profile.seeds), "device_kind": costs.kind, "cost_source": costs.source,
        "measured": dict(costs.measured), "budget_s": budget,
        "chapters": [{"chapter": c.chapter, "title": c.title, "seconds": round(c.seconds, 1), "budget_s": c.budget_s,
                      "over_budget": c.over_budget, "trained": sum(not r.shipped for r in c.runs),
                      "shipped": sum(r.shipped for r in c.runs),
                      "runs": [{"id": r.id, "role": r.role, "family": r.family, "shipped": r.shipped,
                                "image_steps": r.image_steps, "seconds": round(r.seconds, 2),
                                "stages": [asdict(s) for s in r.stages]} for r in c.runs]} for c in out],
        "total_seconds": round(sum(unique.values()), 1),
        "over_budget": [c.chapter for c in out if c.over_budget],
    }


def _minutes(seconds: float) -> str:
    return f"{seconds:7.0f} s ({seconds / 60:5.1f} min)"


def format_plan(result: dict[str, Any]) -> str:
    """The text of ``rskd plan``: one table per chapter (runs grouped by role) and the totals."""
    lines = [f"profile {result['profile']} | seeds {result['seeds']} | device {result['device_kind']} | "
             f"{result['cost_source']}"]
    for ch in result["chapters"]:
        flag = "  OVER BUDGET" if ch["over_budget"] else ""
        lines.append(f"\nchapter {ch['chapter']} ({ch['title']}): {_minutes(ch['seconds'])} of "
                     f"{ch['budget_s']:.0f} s{flag} | {ch['trained']} runs trained, {ch['shipped']} shipped")
        lines.append(f"  {'run':<52} {'role':<8} {'family':<12} {'image-steps':>11} {'seconds':>9}")
        for r in ch["runs"]:
            what = "shipped" if r["shipped"] else f"{r['seconds']:9.1f}"
            lines.append(f"  {r['id']:<52} {r['role']:<8} {r['family']:<12} {r['image_steps']:>11} {what:>9}")
    lines.append(f"\nbook total (each run once): {_minutes(result['total_seconds'])}")
    if result["over_budget"]:
        lines.append(f"over budget: chapters {', '.join(result['over_budget'])}")
    return "\n".join(lines)


def plan_main(argv: Sequence[str] | None = None) -> int:
    """``rskd plan [--profile P] [--calibrate] [--json] [--device-kind K] [--chapter NN ...]``."""
    from rskd_tutorial.profile import PROFILE_NAMES, get_profile

    p = argparse.ArgumentParser(prog="rskd plan", description="Each chapter's runs, image-steps and time.")
    p.add_argument("--profile", help=f"{' | '.join(PROFILE_NAMES)} (default: RSKD_PROFILE, else gpu/cpu)")
    p.add_argument("--calibrate", action="store_true", help="time 5 real steps of each model family here instead")
    p.add_argument("--device-kind", choices=DEVICE_KINDS, help="ci/cpu -> cpu, gpu -> h100, t4 -> t4 by default")
    p.add_argument("--chapter", nargs="+", choices=tuple(CHAPTERS), help="these chapters only")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    a = p.parse_args(argv)
    result = plan(get_profile(a.profile), calibrated=a.calibrate, device_kind=a.device_kind, chapters=a.chapter)
    print(json.dumps(result, indent=1) if a.json else format_plan(result))
    return 0
