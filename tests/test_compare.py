"""Chapter 6's common ground (rskd_tutorial.recipes.compare) on hand-made records, checked by hand."""

from __future__ import annotations

import json
import math

import pytest

from rskd_tutorial.recipes.compare import (check_record, common_ground, format_table, gain_cost_points, guide,
                                           join_bench, missing_chapters, record_files, records_overview)
from rskd_tutorial.recipes.results import result_row, write_results

SEEDS = [0, 1, 2]
OPT = "optical-detection"


def optical_file(chapter="00", profile="cpu"):
    """teacher 50, student 40/41/42 (mean 41, gap 9); FGD a clear gain, MGD a tie, CWD a loss."""
    return {"chapter": chapter, "profile": profile, "device": "cpu (2 threads, x86_64)", "rows": [
        result_row(OPT, "retinanet-big", "teacher", "none", "AP50", [50.0], [0], train_seconds=1000.0),
        result_row(OPT, "retinanet-small", "student", "none", "AP50", [40.0, 41.0, 42.0], SEEDS, train_seconds=100.0),
        # paired differences 4, 5, 3: gain 4 ± 1 -> above; 4 / 9 of the gap; 1.5x the training time
        result_row(OPT, "retinanet-small", "kd", "fgd", "AP50", [44.0, 46.0, 45.0], SEEDS, train_seconds=150.0),
        # differences 1, -1, 1: gain 1/3 ± 1.155 -> within noise
        result_row(OPT, "retinanet-small", "kd", "mgd", "AP50", [41.0, 40.0, 43.0], SEEDS, train_seconds=120.0),
        # differences -2, -2, -3: gain -7/3 ± 0.577 -> below
        result_row(OPT, "retinanet-small", "kd", "cwd", "AP50", [38.0, 39.0, 39.0], SEEDS, train_seconds=110.0),
    ]}


def sar_file():
    """the teacher (30) is behind its student (36): nothing to distil, although DIPKD is 'above'."""
    return {"chapter": "03", "profile": "cpu", "device": "cpu", "rows": [
        result_row("sar-detection", "faster_rcnn-big", "teacher", "none", "AP50", [30.0], [0]),
        result_row("sar-detection", "faster_rcnn-small", "student", "none", "AP50", [35.0, 36.0, 37.0], SEEDS,
                   train_seconds=10.0),
        result_row("sar-detection", "faster_rcnn-small", "kd", "dipkd", "AP50", [38.0, 39.0, 40.0], SEEDS,
                   train_seconds=30.0),
    ]}


def saliency_file():
    """one seed; two teachers (the stronger, 0.92, is the group's ceiling)."""
    return {"chapter": "05", "profile": "ci", "device": "cpu", "rows": [
        result_row("saliency", "pspnet-448px", "teacher", "none", "S", [0.92], [0]),
        result_row("saliency", "pspnet-224px", "teacher", "none", "S", [0.90], [0]),
        result_row("saliency", "pspnet-224px", "other", "scrkd-assistant", "S", [0.91], [0]),
        result_row("saliency", "pspnet-112px", "student", "none", "S", [0.80], [0], train_seconds=2.0),
        result_row("saliency", "pspnet-112px", "kd", "scrkd", "S", [0.83], [0], train_seconds=3.0),
    ]}


@pytest.fixture
def records():
    return [optical_file(), sar_file(), saliency_file()]


def line(table, method, chapter=None):
    sel = table[(table["method"] == method) & (table["role"] == "kd")]
    if chapter is not None:
        sel = sel[sel["chapter"] == chapter]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def sentence(sentences, group):
    hits = [s for s in sentences if group in s]
    assert len(hits) == 1, sentences
    return hits[0]


def test_table_numbers_by_hand(records):
    t = common_ground(records)
    fgd, mgd, cwd = line(t, "fgd"), line(t, "mgd"), line(t, "cwd")
    assert (fgd["teacher"], fgd["student"], fgd["gap"]) == (50.0, 41.0, 9.0)
    assert fgd["student sd"] == pytest.approx(1.0)
    assert fgd["gain"] == pytest.approx(4.0) and fgd["gain sd"] == pytest.approx(1.0) and fgd["paired"] == 3
    assert fgd["gap closed"] == pytest.approx(4.0 / 9.0)
    assert fgd["cost"] == pytest.approx(1.5) and fgd["verdict"] == "above"
    assert mgd["gain"] == pytest.approx(1 / 3) and mgd["gain sd"] == pytest.approx(math.sqrt(4 / 3))
    assert mgd["verdict"] == "within noise"
    assert cwd["gain"] == pytest.approx(-7 / 3) and cwd["verdict"] == "below"
    assert cwd["cost"] == pytest.approx(1.1)
    # the reference lines of the group come first: teacher, student alone, then the KD rows in order
    opt = t[t["group"] == "retinanet-small"]
    assert list(opt["role"]) == ["teacher", "student", "kd", "kd", "kd"]
    assert list(opt["model"])[:2] == ["retinanet-big", "retinanet-small"]
    assert set(t["chapter"]) == {"00", "03", "05"} and set(opt["profile"]) == {"cpu"}


def test_gap_closed_only_when_the_teacher_is_ahead(records):
    t = common_ground(records)
    dipkd = line(t, "dipkd")
    assert dipkd["gap"] == pytest.approx(-6.0) and dipkd["verdict"] == "above"
    assert dipkd["gap closed"] is None or math.isnan(dipkd["gap closed"])
    assert dipkd["cost"] == pytest.approx(3.0)


def test_one_seed_and_the_strongest_teacher(records):
    t = common_ground(records)
    sc = line(t, "scrkd")
    assert sc["verdict"] == "one seed" and sc["paired"] == 1
    assert sc["teacher"] == pytest.approx(0.92) and sc["teacher model"] == "pspnet-448px"
    assert sc["gain"] == pytest.approx(0.03) and sc["gap closed"] == pytest.approx(0.25)
    assert "scrkd-assistant" not in set(t["method"])     # role "other" is not part of the comparison


def test_guide_recommends_exactly_the_clear_gain(records):
    sentences = guide(records)
    assert len(sentences) == 3                            # one per (task, model) group
    s = sentence(sentences, "retinanet-small")
    assert s.count("**recommended**") == 1
    recommended = s.split("**recommended**: ")[1].split(";")[0]
    assert recommended.startswith("fgd (+4.0 ± 1.0, 44 % of the gap, 1.50× the training time)")
    assert "mgd" not in recommended and "cwd" not in recommended
    assert "within noise: mgd (+0.3 ± 1.2" in s
    assert "below the student alone: cwd (-2.3 ± 0.6" in s
    assert "teacher 50.0 vs student alone 41.0 ± 1.0 AP50 (gap 9.0)" in s
    assert "\\pm" not in s and "$" not in s                # plain Markdown, no LaTeX


def test_guide_recommends_nothing_when_the_teacher_is_behind(records):
    s = sentence(guide(records), "faster_rcnn-small")
    assert "nothing to distil" in s and "**recommended**" not in s
    assert "dipkd (+3.0 ± 0.0" in s


def test_guide_calls_one_seed_a_demo(records):
    s = sentence(guide(records), "pspnet-112px")
    assert "**recommended**" not in s
    assert "one seed: scrkd (+0.030" in s and "a demo, not a result" in s and "≥ 2 seeds" in s


def test_same_row_from_two_chapters_stays_apart(records):
    # chapter 02 reports the same FGD row with its own numbers and borrows chapter 0's student and teacher
    ch2 = {"chapter": "02", "profile": "cpu", "device": "cpu", "rows": [
        result_row(OPT, "retinanet-small", "kd", "fgd", "AP50", [40.0, 42.0, 41.0], SEEDS, train_seconds=200.0)]}
    t = common_ground([*records, ch2])
    a, b = line(t, "fgd", "00"), line(t, "fgd", "02")
    assert a["gain"] == pytest.approx(4.0) and b["gain"] == pytest.approx(0.0)
    assert b["student"] == 41.0 and b["teacher"] == 50.0 and b["cost"] == pytest.approx(2.0)
    s = sentence(guide(t), "retinanet-small")
    assert "chapter 0 (cpu profile)" in s and "chapter 2 (cpu profile)" in s
    assert s.count("**recommended**") == 1                # chapter 2's FGD is a tie


def test_a_kd_row_without_its_student_is_not_judged():
    other_profile = {"chapter": "02", "profile": "gpu", "device": "cuda", "rows": [
        result_row(OPT, "retinanet-small", "kd", "fgd", "AP50", [40.0, 42.0], [0, 1])]}
    t = common_ground([optical_file(), other_profile])    # chapter 0 ran in cpu: no pairing across profiles
    fgd2 = line(t, "fgd", "02")
    assert fgd2["verdict"] == "no student-alone row" and math.isnan(fgd2["gain"])
    assert "no method is recommended" in sentence(guide(t), "retinanet-small").split("chapter 2")[1]


def test_format_table_rounds_per_metric(records):
    shown = format_table(common_ground(records))
    fgd = shown[shown["row"] == "fgd"].iloc[0]
    assert (fgd["row mean"], fgd["gain"], fgd["gap closed"], fgd["train time ×"]) == ("45.0 ± 1.0", "+4.0 ± 1.0",
                                                                                     "44 %", "1.50")
    assert fgd["student alone"] == "41.0 ± 1.0"
    sc = shown[shown["row"] == "scrkd"].iloc[0]
    assert (sc["row mean"], sc["gain"], sc["teacher"], sc["student alone"]) == ("0.830", "+0.030", "0.920", "0.800")


def test_join_bench_matches_family_and_method(records):
    bench = [{"detector": "retinanet", "method": "student", "step_ms": 10.0, "peak_mb": 100.0},
             {"detector": "retinanet", "method": "fgd", "step_ms": 18.0, "slowdown": 1.8, "kd_forward_share": 0.05,
              "peak_mb": 150.0},
             {"detector": "faster_rcnn", "method": "fgd", "slowdown": 9.0, "kd_forward_share": 0.5, "peak_mb": 1.0}]
    t = join_bench(common_ground(records), bench)
    assert line(t, "fgd")["step x (bench)"] == pytest.approx(1.8)
    assert line(t, "fgd")["peak MB (bench)"] == pytest.approx(150.0)
    student = t[(t["group"] == "retinanet-small") & (t["role"] == "student")].iloc[0]
    assert student["step x (bench)"] == 1.0
    assert math.isnan(line(t, "mgd")["step x (bench)"])           # not benched
    assert math.isnan(line(t, "dipkd")["step x (bench)"])         # faster_rcnn has no dipkd record
    assert math.isnan(line(t, "scrkd")["step x (bench)"])         # saliency is not a detector
    points, xlabel = gain_cost_points(t, OPT)                     # mgd, cwd unbenched: training time instead
    assert "training time" in xlabel and list(points["x"]) == pytest.approx([1.5, 1.2, 1.1])
    assert list(points["yerr"]) == pytest.approx([1.0, math.sqrt(4 / 3), math.sqrt(1 / 3)])
    full = [dict(bench[0]), *({"detector": "retinanet", "method": m, "slowdown": x, "kd_forward_share": 0.1,
                                 "peak_mb": 1.0} for m, x in (("fgd", 1.8), ("mgd", 1.6), ("cwd", 1.4)))]
    points, xlabel = gain_cost_points(join_bench(common_ground(records), full), OPT)
    assert "bench" in xlabel and list(points["x"]) == pytest.approx([1.8, 1.6, 1.4])
    points, _ = gain_cost_points(t, "saliency")
    assert list(points["yerr"]) == [0.0]                          # one seed: no error bar


def test_record_files_overview_and_missing_chapters(tmp_path, records):
    for rec, name in zip(records, ("retinanet", "dipkd", "scrkd")):
        write_results(rec["chapter"], name, rec["rows"], profile=rec["profile"], device=rec["device"], root=tmp_path)
    files = record_files(tmp_path)
    assert [p.name for p, _ in files] == ["00_retinanet.json", "03_dipkd.json", "05_scrkd.json"]
    over = records_overview(files)
    assert list(over["rows"]) == [5, 3, 5] and list(over["profile"]) == ["cpu", "cpu", "ci"]
    assert missing_chapters([r for _, r in files]) == ["01", "02", "04"]
    assert record_files(tmp_path / "none") == [] and missing_chapters([]) == ["00", "01", "02", "03", "04", "05"]
    assert len(records_overview([])) == 0


def test_malformed_or_mixed_records_fail(tmp_path):
    good = optical_file()
    check_record(good)
    bad = json.loads(json.dumps(good))
    del bad["profile"]
    with pytest.raises(AssertionError, match="profile"):
        check_record(bad)
    bad = json.loads(json.dumps(good))
    bad["rows"][1]["values"] = [40.0, 41.0]
    with pytest.raises(AssertionError, match="one value per seed"):
        check_record(bad)
    bad = json.loads(json.dumps(good))
    del bad["rows"][2]["mean"]
    with pytest.raises(AssertionError, match="missing"):
        check_record(bad)
    bad = json.loads(json.dumps(good))
    bad["rows"][2]["mean"] = 99.0
    with pytest.raises(AssertionError, match="not the mean"):
        check_record(bad)
    mixed = json.loads(json.dumps(good))
    mixed["rows"][3]["extra"]["profile"] = "gpu"
    with pytest.raises(AssertionError, match="mix profiles"):
        check_record(mixed)
    mixed = json.loads(json.dumps(good))
    mixed["profile"] = ["cpu", "gpu"]
    with pytest.raises(AssertionError, match="mix profiles"):
        check_record(mixed)
    # a file whose chapter disagrees with its name, or that is not a record at all
    (tmp_path / "02_x.json").write_text(json.dumps(good))
    with pytest.raises(AssertionError, match="chapter"):
        record_files(tmp_path)
    (tmp_path / "02_x.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(AssertionError, match="malformed"):
        record_files(tmp_path)


def test_a_kd_row_is_measured_against_the_teacher_it_names():
    rec = saliency_file()
    rec["rows"].append(result_row("saliency", "pspnet-112px", "kd", "scrkd-2x", "S", [0.85], [0],
                                  extra={"teacher": "pspnet-224px"}))
    table = common_ground([rec])
    named = line(table, "scrkd-2x")
    assert named["teacher"] == pytest.approx(0.90) and named["gap closed"] == pytest.approx(0.05 / 0.10)
    assert line(table, "scrkd")["teacher"] == pytest.approx(0.92)     # no name: the strongest teacher
