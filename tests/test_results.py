"""Results records: paired gains over seeds, the spread rule, rows from trained runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rskd_tutorial.recipes.runs import describe_run, run_steps
from rskd_tutorial.recipes.results import (detection_row, labelled_table, paired_gain, result_row, rows_table, runs_row,
                                          verdict)


def _row(values, seeds=(0, 1, 2), role="kd", method="x", model="m"):
    return result_row("saliency", model, role, method, "S", values, list(seeds))


def test_paired_gain_uses_per_seed_differences():
    base = _row([0.70, 0.72, 0.74], role="student", method="none")
    kd = _row([0.71, 0.74, 0.77])                    # differences 0.01, 0.02, 0.03
    mean, sd, n = paired_gain(kd, base)
    assert mean == pytest.approx(0.02) and sd == pytest.approx(0.01) and n == 3
    # an offset that is the same for every seed has no spread, although both rows do
    mean, sd, n = paired_gain(_row([0.80, 0.82, 0.84]), base)
    assert mean == pytest.approx(0.10) and sd == pytest.approx(0.0, abs=1e-12)


def test_paired_gain_without_common_seeds_falls_back_to_the_means():
    base = _row([1.0, 3.0], seeds=(0, 1), role="student")
    kd = _row([4.0, 6.0], seeds=(5, 6))
    mean, sd, n = paired_gain(kd, base)
    assert (mean, n) == (pytest.approx(3.0), 0) and sd == pytest.approx((2.0 ** 0.5) * 2 ** 0.5)


@pytest.mark.parametrize("gain, sd, n, expected", [(1.0, 0.5, 3, "above"), (-1.0, 0.5, 3, "below"),
                                                   (0.3, 0.5, 3, "within noise"), (0.5, 0.5, 3, "within noise"),
                                                   (5.0, 0.0, 1, "one seed")])
def test_verdict_respects_the_spread(gain, sd, n, expected):
    assert verdict(gain, sd, n) == expected


def test_rows_table_pairs_each_kd_row_with_its_own_student():
    rows = [_row([10.0, 12.0, 14.0], role="student", model="a"), _row([20.0, 20.0, 20.0], role="student", model="b"),
            _row([11.0, 14.0, 17.0], model="a"), _row([21.0, 21.0, 21.0], model="b")]
    t = rows_table(rows)
    assert t["Δ vs student"].isna().tolist() == [True, True, False, False]
    assert list(t["Δ vs student"])[2:] == [2.0, 1.0]
    assert t.loc[2, "Δ sd"] == 1.0 and t.loc[3, "Δ sd"] == 0.0


@dataclass
class _Run:
    run_dir: Path
    metrics: dict
    loaded_from_cache: bool
    seconds: float
    extra: dict = field(default_factory=dict)


def test_runs_row_reads_values_steps_and_seconds(tmp_path):
    runs = []
    for s, (ap, secs) in enumerate([(0.30, 100.0), (0.40, 120.0)]):
        d = tmp_path / f"s{s}"
        d.mkdir()
        (d / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 2, "step": 250, "seconds": secs}) + "\n")
        runs.append(_Run(d, {"AP50": ap, "mAP": ap / 2}, s == 0, secs))
    row = runs_row("optical-detection", "retinanet-x", "kd", "fitnet", "AP50", runs, [0, 1], key="AP50", scale=100.0,
                   extra_keys=("mAP",))
    assert row["values"] == pytest.approx([30.0, 40.0]) and row["mean"] == pytest.approx(35.0)
    assert row["steps"] == 250 and row["train_seconds"] == pytest.approx(110.0) and row["loaded"] is False
    assert row["extra"]["mAP"] == pytest.approx(17.5)
    assert run_steps(runs[0].run_dir) == 250
    assert describe_run(runs[0]) == "loaded from the cache (100 s of training)"
    with pytest.raises(ValueError, match="one run per seed"):
        runs_row("saliency", "m", "kd", "x", "S", runs, [0], key="AP50")


def test_describe_run_of_a_shipped_teacher(tmp_path):
    (tmp_path / "shipped.json").write_text(json.dumps({"name": "sar-faster_rcnn", "steps": 2124, "train_seconds": 896.2,
                                                       "hardware": "cpu (2 threads, x86_64)", "git_commit": "abcdef1234567"}))
    text = describe_run(_Run(tmp_path, {}, True, 896.2))
    assert "shipped teacher 'sar-faster_rcnn'" in text and "2124 steps" in text and "commit abcdef123" in text
    assert run_steps(tmp_path) == 2124


def test_timing_summary_counts_trained_loaded_and_shipped(tmp_path):
    import time

    from rskd_tutorial.recipes.runs import timing_summary

    shipped = tmp_path / "t"
    shipped.mkdir()
    (shipped / "shipped.json").write_text("{}")
    runs = [_Run(shipped, {}, True, 1000.0), _Run(tmp_path, {}, True, 50.0), _Run(tmp_path, {}, False, 30.0)]
    line = timing_summary(runs, time.time(), "banner")
    assert "1 runs trained in this execution (30 s), 2 loaded (1 shipped teachers)" in line
    assert "1080 s cold, 80 s with the shipped teachers | banner" in line


def test_detection_row_and_labelled_table(tmp_path):
    runs = []
    for s, ap in enumerate([0.20, 0.30]):
        d = tmp_path / f"s{s}"
        d.mkdir()
        (d / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1, "step": 10, "seconds": 5.0}) + "\n")
        runs.append(_Run(d, {"AP50": ap, "mAP": ap / 2, "APs": ap / 4}, False, 5.0))
    base = detection_row("optical-detection", "retinanet", "regnetx_002", "student", "none", runs, [0, 1])
    kd = detection_row("optical-detection", "retinanet", "regnetx_002", "kd", "fitnet", runs[::-1], [0, 1])
    assert base["model"] == "retinanet-regnetx_002" and base["values"] == pytest.approx([20.0, 30.0])
    assert base["extra"]["mAP"] == pytest.approx(12.5) and base["extra"]["APs"] == pytest.approx(6.25)
    t = labelled_table([base, kd], ["student alone", "+ FitNet"])
    assert list(t.index) == ["student alone", "+ FitNet"] and "task" not in t.columns and "model" not in t.columns
    assert t.loc["+ FitNet", "Δ vs student"] == 0.0 and t.loc["+ FitNet", "Δ sd"] == pytest.approx(14.1)
    assert t.loc["student alone", "mAP"] == 12.5
    with pytest.raises(ValueError, match="one label per row"):
        labelled_table([base], ["a", "b"])


def test_chosen_on_val_takes_the_best_validation_mean_and_never_reads_test():
    from types import SimpleNamespace

    from rskd_tutorial.recipes.results import chosen_on_val

    def runs(*vals):   # test AP50 is the mirror image of val: a choice on test would pick the other key
        return [SimpleNamespace(metrics={"val_AP50": v, "AP50": 1.0 - v}) for v in vals]

    sweep = {0.25: runs(0.30, 0.50), 0.5: runs(0.45, 0.41), 1.0: runs(0.10, 0.20)}   # means 0.40, 0.43, 0.15
    assert chosen_on_val(sweep) == 0.5
    assert chosen_on_val({"a": runs(0.2), "b": runs(0.2)}) == "a"                    # ties: the first key
    with pytest.raises(ValueError):
        chosen_on_val({})
    with pytest.raises(KeyError):
        chosen_on_val({"a": [SimpleNamespace(metrics={"AP50": 0.9})]})               # no validation metrics


def test_with_val_metrics_evaluates_once_and_prefixes(monkeypatch, tmp_path):
    import torch

    from rskd_tutorial.recipes import detection
    from rskd_tutorial.recipes.runs import TutorialRun

    calls = []

    def fake_eval(model, dataset, batch_size):
        calls.append((dataset, batch_size))
        return {"AP50": 0.6, "mAP": 0.3, "per_class": torch.zeros(2)}

    monkeypatch.setattr(detection, "evaluate_detection", fake_eval)
    run = TutorialRun(torch.nn.Linear(1, 1), tmp_path, {"AP50": 0.5}, loaded_from_cache=True)
    out = detection.with_val_metrics(run, "VAL", 4)
    assert out is run and run.metrics == {"AP50": 0.5, "val_AP50": 0.6, "val_mAP": 0.3}   # test AP50 untouched
    detection.with_val_metrics(run, "VAL", 4)
    assert calls == [("VAL", 4)]
