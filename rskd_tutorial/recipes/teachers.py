"""The teachers every chapter uses, trained once per profile and shipped with the package.

``rskd teachers [--profile P]`` trains each teacher of :func:`catalog` that the store does not hold yet
(through the run cache, so an interrupted run resumes), evaluates the *stored* float16 weights on the
held-out split and writes ``rskd_tutorial/shipped/<profile>/<name>.safetensors.xz`` + ``<name>.json``
(:mod:`rskd_tutorial.engine.store`). A chapter then loads the shipped teacher whose record carries its
run key instead of training it.

``rskd teachers --list`` prints the records; ``rskd teachers --check`` loads each shipped teacher
strictly, re-evaluates it on freshly generated held-out scenes and exits 2 naming any teacher whose
metric moved by more than :data:`TOLERANCE` from its record (or whose file is missing, tampered with or
no longer fits its model). ``--json`` prints machine-readable records on both.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rskd_tutorial.recipes.runs import TutorialSetup

__all__ = ["TOLERANCE", "TeacherEntry", "catalog", "check_teachers", "ship_teachers", "teachers_main"]

TOLERANCE = {"AP50": 0.5, "S": 0.005}   # |re-measured - recorded| allowed by --check


@dataclass(frozen=True)
class TeacherEntry:
    """One teacher: how to set it up (untrained model, key, training closure, evaluation set) and measure it."""

    name: str
    task: str                      # optical-detection | sar-detection | rgb-detection | saliency
    architecture: str
    chapters: tuple[str, ...]
    metric: str                    # AP50 (percent) | S
    setup: Callable[[Any, bool], TutorialSetup]          # (profile, progress) -> setup
    measure: Callable[[TutorialSetup], dict[str, float]]  # metrics of setup.model on setup.eval_set


def _detection_percent(s: TutorialSetup) -> dict[str, float]:
    """COCO metrics (in percent) of a detector setup's model on its evaluation set."""
    from rskd_tutorial.engine import evaluate_detection

    m = evaluate_detection(s.model.to(s.device).eval(), s.eval_set, batch_size=s.batch_size)
    return {k: 100.0 * float(v) for k, v in m.items()}


def _detector_entry(kind: str, arch: str, chapters: tuple[str, ...]) -> TeacherEntry:
    from rskd_tutorial.recipes.detection import detector_setup

    def setup(profile: Any, progress: bool) -> TutorialSetup:
        return detector_setup(profile, arch, kind, 0, role="teacher", verbose=False, progress=progress)

    task = {"optical": "optical-detection", "sar": "sar-detection"}[kind]
    return TeacherEntry(f"{kind}-{arch}", task, arch, chapters, "AP50", setup, _detection_percent)


def _saliency_entry(which: int, chapters: tuple[str, ...]) -> TeacherEntry:
    from rskd_tutorial.recipes.scrkd import sod_setup

    role = ("teacher", "assistant")[which]

    def setup(profile: Any, progress: bool) -> TutorialSetup:
        return sod_setup(profile, profile.saliency.resolutions[which], role="teacher", progress=progress)

    def measure(s: TutorialSetup) -> dict[str, float]:
        from rskd_tutorial.engine import evaluate_saliency

        m = evaluate_saliency(s.model.to(s.device).eval(), s.eval_set, eval_size=s.eval_size,
                              batch_size=s.batch_size)
        out = {k: float(v) for k, v in m.items() if isinstance(v, float)}
        out["S"] = out["Sm"]   # the S-measure (Fan et al. 2017), the book's headline saliency metric
        return out

    return TeacherEntry(f"saliency-{role}", "saliency", "pspnet", chapters, "S", setup, measure)


def _rgb_entry(chapters: tuple[str, ...]) -> TeacherEntry:
    from rskd_tutorial.recipes.freqkd import rgb_teacher_setup

    def setup(profile: Any, progress: bool) -> TutorialSetup:
        return rgb_teacher_setup(profile, 0, progress=progress, verbose=False)

    return TeacherEntry("rgb-retinanet", "rgb-detection", "retinanet", chapters, "AP50", setup, _detection_percent)


def catalog(profile: Any) -> list[TeacherEntry]:
    """The teachers the chapters load in ``profile``, in training order."""
    return [
        _detector_entry("optical", "faster_rcnn", ("00", "02", "06")),
        _detector_entry("optical", "retinanet", ("00", "01", "02", "06")),
        _detector_entry("sar", "faster_rcnn", ("01", "03", "06")),
        _saliency_entry(0, ("05", "06")),
        _saliency_entry(1, ("05", "06")),
        _detector_entry("sar", "retinanet", ("01", "03", "06")),
        _rgb_entry(("04", "06")),
    ]


def _steps(run_dir: Path) -> int:
    from rskd_tutorial.engine import read_metrics

    steps = [int(r.get("step", 0)) for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    return max(steps, default=0)


def ship_teachers(profile: Any, names: Sequence[str] | None = None, *, retrain: bool = False,
                  progress: bool = True, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train (or resume, or take from the run cache) every catalogued teacher the store lacks and ship it."""
    from rskd_tutorial import __version__
    from rskd_tutorial.engine import cache_dir
    from rskd_tutorial.engine.cache import train_or_load
    from rskd_tutorial.engine.store import find_shipped, git_commit, hardware, load_shipped, save_shipped
    from rskd_tutorial.recipes.runs import run_seconds

    out = []
    entries = [e for e in catalog(profile) if names is None or e.name in names]
    if names is not None and len(entries) != len(set(names)):
        known = [e.name for e in catalog(profile)]
        raise ValueError(f"unknown teacher(s) {sorted(set(names) - set(known))}; the catalog holds {known}")
    for i, entry in enumerate(entries, 1):
        s = entry.setup(profile, progress)
        old = find_shipped(s.key)
        if old is not None and not retrain:
            log(f"[{i}/{len(entries)}] {entry.name}: shipped and up to date ({entry.metric} {old['value']:.3g})")
            out.append(old)
            continue
        log(f"[{i}/{len(entries)}] {entry.name}: training ({s.key})")
        t0 = time.time()
        _, run_dir, _ = train_or_load(s.model, s.key, s.train, verbose=False, shipped=False)
        record = {"name": entry.name, "task": entry.task, "architecture": entry.architecture,
                  "profile": profile.name, "config_key": s.key, "seed": 0, "steps": _steps(run_dir),
                  "train_seconds": round(run_seconds(run_dir), 1), "hardware": hardware(),
                  "package_version": __version__, "git_commit": git_commit(), "metric": entry.metric,
                  "value": None, "split": getattr(s.eval_set, "split", "test"), "chapters": list(entry.chapters),
                  "run_dir": str(run_dir.relative_to(cache_dir())) if run_dir.is_relative_to(cache_dir()) else str(run_dir)}
        rec = save_shipped(s.model, record)
        load_shipped(s.model, rec)          # measure what is stored (float16), not the float32 run
        metrics = entry.measure(s)
        rec.update(value=round(metrics[entry.metric], 4), extra={k: round(v, 4) for k, v in metrics.items()})
        rec = save_shipped(s.model, rec)
        log(f"[{i}/{len(entries)}] {entry.name}: {entry.metric} {rec['value']:.3g} on {rec['split']} after "
            f"{rec['steps']} steps ({time.time() - t0:.0f} s here, {rec['train_seconds']:.0f} s training); "
            f"{rec['bytes'] / 1e6:.1f} MB")
        out.append(rec)
    return out


def check_teachers(profile_name: str | None = None, *, log: Callable[[str], None] = print) -> tuple[list[dict], list[str]]:
    """Re-measure every shipped teacher on freshly generated held-out scenes. Returns (records with
    ``measured`` filled in, problems); a problem names the teacher and what is wrong."""
    import os

    from rskd_tutorial.engine.store import ShippedTeacherError, load_shipped, shipped_records
    from rskd_tutorial.profile import get_profile

    records, problems = shipped_records(profile_name), []
    old_cache = os.environ.get("RSKD_CACHE")
    with tempfile.TemporaryDirectory(prefix="rskd-check-") as tmp:
        os.environ["RSKD_CACHE"] = tmp      # fresh scenes, and no cached run can stand in for the file
        try:
            for i, rec in enumerate(records):
                profile = get_profile(rec["profile"])
                entry = {e.name: e for e in catalog(profile)}.get(rec["name"])
                if entry is None:
                    problems.append(f"{rec['name']} ({rec['profile']}): not in the catalog")
                    continue
                s = entry.setup(profile, False)
                if s.key != rec["config_key"]:
                    problems.append(f"{rec['name']} ({rec['profile']}): its record's config key {rec['config_key']} "
                                    f"is not the chapters' key {s.key} (re-run `rskd teachers --profile {rec['profile']}`)")
                    continue
                try:
                    load_shipped(s.model, rec)
                except ShippedTeacherError as e:
                    problems.append(str(e))
                    continue
                value = entry.measure(s)[rec["metric"]]
                rec = dict(rec, measured=round(value, 4))
                tol = TOLERANCE[rec["metric"]]
                ok = abs(value - rec["value"]) <= tol
                log(f"{rec['name']} ({rec['profile']}): {rec['metric']} recorded {rec['value']:.4g}, "
                    f"measured {value:.4g} -> {'ok' if ok else 'MISMATCH'}")
                if not ok:
                    problems.append(f"{rec['name']} ({rec['profile']}): {rec['metric']} {value:.4g} differs from its "
                                    f"record {rec['value']:.4g} by more than {tol}")
                records[i] = rec
        finally:
            if old_cache is None:
                os.environ.pop("RSKD_CACHE", None)
            else:
                os.environ["RSKD_CACHE"] = old_cache
    return records, problems


def _summary(rec: dict) -> dict:
    keys = ("name", "task", "architecture", "profile", "metric", "value", "measured", "split", "steps",
            "train_seconds", "hardware", "file", "bytes", "config_key", "git_commit")
    return {k: rec[k] for k in keys if k in rec}


def teachers_main(argv: Sequence[str] | None = None) -> int:
    """``rskd teachers``: train and ship, ``--list`` the records, ``--check`` them."""
    from rskd_tutorial.engine.store import shipped_records
    from rskd_tutorial.profile import get_profile

    p = argparse.ArgumentParser(prog="rskd teachers", description="Train, ship, list and check the chapters' "
                                "teachers (rskd_tutorial/shipped/<profile>/).")
    p.add_argument("--profile", help="ci | cpu | gpu | t4 (default: RSKD_PROFILE, else gpu with CUDA, else cpu)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="train these teachers only")
    p.add_argument("--retrain", action="store_true", help="train and ship again even when the store is up to date")
    p.add_argument("--list", action="store_true", help="print the shipped records")
    p.add_argument("--check", action="store_true", help="re-evaluate every shipped teacher; exit 2 on a mismatch")
    p.add_argument("--json", action="store_true", help="machine-readable output (a JSON list of records)")
    a = p.parse_args(argv)
    quiet = (lambda _m: None) if a.json else print
    if a.list:
        records = [_summary(r) for r in shipped_records(a.profile)]
        if a.json:
            print(json.dumps(records, indent=1))
        else:
            for r in records:
                print(f"{r['profile']:>4} {r['name']:<22} {r['metric']} {r['value']:>7.4g} ({r['split']}) "
                      f"{r['steps']:>5} steps {r['train_seconds']:>6.0f} s  {r['bytes'] / 1e6:5.1f} MB  {r['hardware']}")
            if not records:
                print("no shipped teachers" + (f" for profile {a.profile}" if a.profile else ""))
        return 0
    if a.check:
        records, problems = check_teachers(a.profile, log=quiet)
        if a.json:
            print(json.dumps([_summary(r) for r in records], indent=1))
        if not records:
            print("rskd teachers: no shipped teachers to check", file=sys.stderr)
            return 2
        for msg in problems:
            print(f"rskd teachers: {msg}", file=sys.stderr)
        return 2 if problems else 0
    profile = get_profile(a.profile)
    records = ship_teachers(profile, a.only, retrain=a.retrain, log=quiet, progress=not a.json)
    if a.json:
        print(json.dumps([_summary(r) for r in records], indent=1))
    return 0
