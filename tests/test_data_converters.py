"""The real-dataset converters in data_scripts/ on tiny fake copies of each raw layout."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pycocotools.coco import COCO

import fake_raw

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(name: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = load_script(name).main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def coco(out: Path, split: str) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(out / "annotations" / f"instances_{split}.json"))


def assert_counts(out: Path, images: dict, boxes: dict) -> None:
    for split, n in images.items():
        c = coco(out, split)
        assert len(c.getImgIds()) == n, split
        assert len(c.getAnnIds()) == boxes[split], split
        for img in c.dataset["images"]:
            assert (out / "images" / img["file_name"]).is_file()
        for a in c.dataset["annotations"]:
            x, y, w, h = a["bbox"]
            im = c.imgs[a["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]


def assert_failed_cleanly(rc: int, err: str, out: Path, *needles: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


# ---------------------------------------------------------------------------------- happy paths
def test_dior(tmp_path):
    exp = fake_raw.make_dior(tmp_path / "raw")
    out = tmp_path / "dior"
    rc, stdout, err = run("prepare_dior", "--root", tmp_path / "raw", "--out", out)
    assert rc == 0, err
    assert_counts(out, exp["images"], exp["boxes"])
    c = coco(out, "train")
    assert [cat["name"] for cat in c.dataset["categories"]][:3] == ["Expressway-Service-area", "Expressway-toll-station", "airplane"]
    assert len(c.dataset["categories"]) == 20
    assert (out / "images" / "train" / "00001.jpg").is_symlink()
    assert coco(out, "val").dataset["annotations"][1]["iscrowd"] == 1  # <difficult>1
    assert "vehicle" in stdout and "images" in stdout


def test_dior_flat_annotations_copy_and_overwrite(tmp_path):
    fake_raw.make_dior(tmp_path / "raw", nested_annotations=False)
    out = tmp_path / "dior"
    assert run("prepare_dior", "--root", tmp_path / "raw", "--out", out, "--copy")[0] == 0
    assert not (out / "images" / "train" / "00001.jpg").is_symlink()
    rc, _, err = run("prepare_dior", "--root", tmp_path / "raw", "--out", out)
    assert rc == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert run("prepare_dior", "--root", tmp_path / "raw", "--out", out, "--overwrite")[0] == 0
    assert (out / "images" / "train" / "00001.jpg").is_symlink()


def test_ssdd_with_inshore_lists(tmp_path):
    exp = fake_raw.make_ssdd(tmp_path / "raw")
    out = tmp_path / "ssdd"
    rc, _, err = run("prepare_ssdd", "--root", tmp_path / "raw", "--out", out)
    assert rc == 0, err
    assert_counts(out, exp["images"], exp["boxes"])
    assert len(coco(out, "test_inshore").getImgIds()) == 1
    assert len(coco(out, "test_offshore").getImgIds()) == 1


def test_ssdd_official_digit_rule(tmp_path):
    fake_raw.make_ssdd(tmp_path / "raw", with_lists=False)
    out = tmp_path / "ssdd"
    assert run("prepare_ssdd", "--root", tmp_path / "raw", "--out", out)[0] == 0
    # ids ending in 1 or 9 are test: 000001, 000009, 000011
    assert len(coco(out, "test").getImgIds()) == 3 and len(coco(out, "train").getImgIds()) == 1


def test_dota_small_no_split_needed(tmp_path):
    fake_raw.make_dota(tmp_path / "raw")
    out = tmp_path / "dota"
    rc, stdout, err = run("prepare_dota", "--root", tmp_path / "raw", "--out", out)
    assert rc == 0, err
    c = coco(out, "train")
    assert len(c.getImgIds()) == 1 and len(c.getAnnIds()) == 3
    anns = c.dataset["annotations"]
    assert anns[1]["iscrowd"] == 1                         # difficult -> iscrowd
    assert anns[1]["bbox"] == [18.0, 20.0, 22.0, 10.0]     # polygon -> horizontal box
    assert anns[2]["bbox"] == [50.0, 50.0, 14.0, 10.0]     # left the 64 px image: clipped
    assert "boxes clipped to the image" in stdout
    clipped_row = next(ln for ln in stdout.splitlines() if ln.startswith("boxes clipped"))
    assert clipped_row.split()[-2:] == ["1", "0"]


def test_dota_splits_1500_into_four_1024_windows(tmp_path):
    fake_raw.make_dota(tmp_path / "raw", big=True)
    out = tmp_path / "dota"
    rc, _, err = run("prepare_dota", "--root", tmp_path / "raw", "--out", out)
    assert rc == 0, err
    c = coco(out, "train")
    wins = {tuple(im["window"]): im for im in c.dataset["images"]}
    assert set(wins) == {(0, 0, 1024, 1024), (476, 0, 1500, 1024), (0, 476, 1024, 1500), (476, 476, 1500, 1500)}
    for im in c.dataset["images"]:
        assert (im["width"], im["height"]) == (1024, 1024)
        assert im["file_name"] == f"train/P0001__{im['window'][0]}__{im['window'][1]}.png"

    def boxes(win):
        return sorted((a["category_id"], tuple(a["bbox"]), a["iscrowd"]) for a in c.imgToAnns[wins[win]["id"]])

    sv, plane, ship = 1, 3, 5
    # the small vehicle (900..1000, 100..150) lies in both top windows, shifted by the window offset
    assert boxes((0, 0, 1024, 1024)) == [(sv, (900.0, 100.0, 100.0, 50.0), 0)]
    # the plane (1000..1100) has only 24 % inside the first window: it belongs to the second one
    assert boxes((476, 0, 1500, 1024)) == [(sv, (424.0, 100.0, 100.0, 50.0), 0), (plane, (524.0, 300.0, 100.0, 50.0), 0)]
    assert boxes((0, 476, 1024, 1500)) == [(ship, (100.0, 824.0, 40.0, 40.0), 1)]
    assert boxes((476, 476, 1500, 1500)) == []


def test_hrsid(tmp_path):
    exp = fake_raw.make_hrsid(tmp_path / "raw")
    out = tmp_path / "hrsid"
    rc, _, err = run("prepare_hrsid", "--root", tmp_path / "raw", "--out", out)
    assert rc == 0, err
    assert_counts(out, exp["images"], exp["boxes"])
    assert coco(out, "train").dataset["categories"][0]["name"] == "ship"


@pytest.mark.parametrize("variant", ["orssd", "orsi4199"])
def test_sod(tmp_path, variant):
    exp = fake_raw.make_sod(tmp_path / "raw", variant)
    out = tmp_path / variant
    rc, stdout, err = run("prepare_sod", "--dataset", variant, "--root", tmp_path / "raw", "--out", out)
    assert rc == 0, err
    from PIL import Image
    import numpy as np
    for split, n in exp["images"].items():
        imgs = sorted((out / split / "images").iterdir())
        masks = sorted((out / split / "masks").iterdir())
        assert len(imgs) == len(masks) == n
        assert [p.stem for p in imgs] == [p.stem for p in masks]
        assert set(np.unique(np.asarray(Image.open(masks[0])))) == {0, 255}
    assert "train" in stdout


def test_kaist_pairs_and_ignore_labels(tmp_path):
    exp = fake_raw.make_kaist(tmp_path / "raw")
    out = tmp_path / "kaist"
    rc, _, err = run("prepare_kaist", "--root", tmp_path / "raw", "--out", out)
    assert rc == 0, err
    assert_counts(out, exp["images"], exp["boxes"])
    for split in ("train", "test"):
        c = coco(out, split)
        assert sum(a["iscrowd"] for a in c.dataset["annotations"]) == exp["crowd"][split]
        for im in c.dataset["images"]:
            assert im["file_name"].endswith("_lwir.jpg") and (out / "images" / im["paired_file_name"]).is_file()
    from rskd_tutorial.data import CocoDetection
    ds = CocoDetection(out, "train", return_paired=True)
    ir, target, rgb = ds[0]
    assert ir.shape == rgb.shape == (3, 48, 64)
    assert (ir[0] == ir[1]).all()  # single-channel LWIR repeated to 3 channels


def test_flir(tmp_path):
    exp = fake_raw.make_flir(tmp_path / "raw")
    out = tmp_path / "flir"
    rc, stdout, err = run("prepare_flir", "--root", tmp_path / "raw", "--out", out)
    assert rc == 0, err
    assert_counts(out, exp["images"], exp["boxes"])
    assert [c["name"] for c in coco(out, "train").dataset["categories"]] == ["person", "bike", "car"]
    test = coco(out, "test").dataset["images"]
    assert sum("paired_file_name" in im for im in test) == exp["paired_test"]
    assert "not kept: light" in stdout
    rc, _, _ = run("prepare_flir", "--root", tmp_path / "raw", "--out", tmp_path / "flir_all", "--classes", "all")
    assert rc == 0 and len(coco(tmp_path / "flir_all", "train").dataset["categories"]) == 4


# ------------------------------------------------------------------------------ planted defects
def _dior_with(tmp_path, id_: str, content: str | bytes) -> Path:
    raw = tmp_path / "raw"
    fake_raw.make_dior(raw)
    f = raw / "Annotations" / "Horizontal Bounding Boxes" / f"{id_}.xml"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    return raw


def test_defect_x2_not_greater_than_x1(tmp_path):
    raw = _dior_with(tmp_path, "00002", fake_raw.voc_xml("00002.jpg", 64, 48, [("vehicle", (30, 5, 20, 10), 0)]))
    rc, _, err = run("prepare_dior", "--root", raw, "--out", tmp_path / "o")
    assert_failed_cleanly(rc, err, tmp_path / "o", "00002.xml", "x2<=x1")


def test_defect_malformed_xml(tmp_path):
    raw = _dior_with(tmp_path, "00001", "<annotation><object><name>ship</name>")
    rc, _, err = run("prepare_dior", "--root", raw, "--out", tmp_path / "o")
    assert_failed_cleanly(rc, err, tmp_path / "o", "00001.xml", "malformed XML")


def test_defect_undecodable_text(tmp_path):
    raw = _dior_with(tmp_path, "00001", b"<annotation>\xff\xfe\x00bad</annotation>")
    rc, _, err = run("prepare_dior", "--root", raw, "--out", tmp_path / "o")
    assert_failed_cleanly(rc, err, tmp_path / "o", "00001.xml", "undecodable")


def test_defect_box_outside_image_is_clipped_and_counted(tmp_path):
    raw = _dior_with(tmp_path, "00002", fake_raw.voc_xml("00002.jpg", 64, 48, [("vehicle", (50, 40, 80, 60), 0)]))
    out = tmp_path / "o"
    rc, stdout, err = run("prepare_dior", "--root", raw, "--out", out)
    assert rc == 0, err
    a = coco(out, "train").dataset["annotations"][-1]
    assert a["bbox"] == [50.0, 40.0, 14.0, 8.0]
    row = next(ln for ln in stdout.splitlines() if ln.startswith("boxes clipped"))
    assert row.split()[-3:] == ["1", "0", "0"]


def test_defect_missing_image(tmp_path):
    raw = tmp_path / "raw"
    fake_raw.make_ssdd(raw)
    (raw / "JPEGImages" / "000002.jpg").unlink()
    rc, _, err = run("prepare_ssdd", "--root", raw, "--out", tmp_path / "o")
    assert_failed_cleanly(rc, err, tmp_path / "o", "000002.xml", "missing")


def test_defect_empty_split_list(tmp_path):
    raw = tmp_path / "raw"
    fake_raw.make_kaist(raw)
    (raw / "imageSets" / "test-all-20.txt").write_text("\n\n")
    rc, _, err = run("prepare_kaist", "--root", raw, "--out", tmp_path / "o")
    assert_failed_cleanly(rc, err, tmp_path / "o", "test-all-20.txt", "empty split list")


def test_defect_malformed_json(tmp_path):
    raw = tmp_path / "raw"
    fake_raw.make_hrsid(raw)
    (raw / "annotations" / "test2017.json").write_text('{"images": [}')
    rc, _, err = run("prepare_hrsid", "--root", raw, "--out", tmp_path / "o")
    assert_failed_cleanly(rc, err, tmp_path / "o", "test2017.json", "malformed JSON")


def test_defect_json_names_missing_image(tmp_path):
    raw = tmp_path / "raw"
    fake_raw.make_flir(raw)
    (raw / "images_thermal_val" / "data" / "video-c-frame-000001-x.jpg").unlink()
    rc, _, err = run("prepare_flir", "--root", raw, "--out", tmp_path / "o")
    assert_failed_cleanly(rc, err, tmp_path / "o", "coco.json", "video-c-frame-000001-x.jpg", "missing")


def test_defect_malformed_dota_line_and_kaist_header(tmp_path):
    raw = tmp_path / "raw"
    fake_raw.make_dota(raw)
    (raw / "val" / "labelTxt" / "P0002.txt").write_text("1 1 10 1 plane\n")
    rc, _, err = run("prepare_dota", "--root", raw, "--out", tmp_path / "o")
    assert_failed_cleanly(rc, err, tmp_path / "o", "P0002.txt", "line 1")
    raw2 = tmp_path / "raw2"
    fake_raw.make_kaist(raw2)
    (raw2 / "annotations" / "set00" / "V000" / "I00002.txt").write_text("person 1 2 3 4 0\n")
    rc, _, err = run("prepare_kaist", "--root", raw2, "--out", tmp_path / "o2")
    assert_failed_cleanly(rc, err, tmp_path / "o2", "I00002.txt", "bbGt")


def test_subprocess_exit_code_and_one_line(tmp_path):
    raw = _dior_with(tmp_path, "00003", fake_raw.voc_xml("00003.jpg", 64, 48, [("ship", (5, 30, 9, 30), 0)]))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.run([sys.executable, str(SCRIPTS / "prepare_dior.py"), "--root", str(raw), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "00003.xml" in lines[0] and "y2<=y1" in lines[0]
    assert not (tmp_path / "o").exists()


def test_converter_output_loads_in_cocodetection(tmp_path):
    fake_raw.make_ssdd(tmp_path / "raw")
    out = tmp_path / "ssdd"
    assert run("prepare_ssdd", "--root", tmp_path / "raw", "--out", out)[0] == 0
    from rskd_tutorial.data import CocoDetection
    ds = CocoDetection(out, "train")
    img, t = ds[1]
    assert img.shape == (3, 40, 48) and t["labels"].tolist() == [1] and ds.categories == ["ship"]
    assert json.loads((out / "annotations" / "instances_train.json").read_text())["categories"][0]["id"] == 1


@pytest.mark.parametrize("removed, named, reason", [
    ("test-labels/0001.png", "0001.jpg", "no mask"),                   # an image without its mask
    ("train-images/0002.jpg", "train-labels/0002.png", "has no image"),  # a mask without its image (used to exit 0)
])
def test_sod_unpaired_file_is_an_error_naming_it(tmp_path, removed, named, reason):
    raw = tmp_path / "raw"
    fake_raw.make_sod(raw)
    (raw / removed).unlink()
    rc, _, err = run("prepare_sod", "--dataset", "orssd", "--root", raw, "--out", tmp_path / "o")
    assert_failed_cleanly(rc, err, tmp_path / "o", named, reason)
    if "labels" in named:
        assert "--skip-unpaired" in err


def test_sod_skip_unpaired_converts_pairs_and_lists_each_file(tmp_path):
    raw = tmp_path / "raw"
    fake_raw.make_sod(raw)
    (raw / "train-images" / "0002.jpg").unlink()      # a mask without its image
    (raw / "test-labels" / "0000.png").unlink()       # an image without its mask
    out = tmp_path / "o"
    rc, stdout, err = run("prepare_sod", "--dataset", "orssd", "--root", raw, "--out", out, "--skip-unpaired")
    assert rc == 0, err
    assert sorted(p.stem for p in (out / "train" / "images").iterdir()) == ["0000", "0001"]
    assert sorted(p.stem for p in (out / "test" / "masks").iterdir()) == ["0001"]
    skipped = [ln for ln in stdout.splitlines() if ln.startswith("skipped")]
    assert len(skipped) == 2
    assert any("train-labels/0002.png (no image" in ln for ln in skipped)
    assert any("test-images/0000.jpg (no mask" in ln for ln in skipped)


def test_dior_trainval_is_train_plus_val_with_unique_ids(tmp_path):
    exp = fake_raw.make_dior(tmp_path / "raw")
    out = tmp_path / "dior"
    rc, stdout, err = run("prepare_dior", "--root", tmp_path / "raw", "--out", out)
    assert rc == 0, err
    train, val, trainval = coco(out, "train").dataset, coco(out, "val").dataset, coco(out, "trainval").dataset
    assert len(trainval["images"]) == exp["images"]["train"] + exp["images"]["val"]
    assert len(trainval["annotations"]) == len(train["annotations"]) + len(val["annotations"])
    ids = [im["id"] for im in trainval["images"]]
    ann_ids = [a["id"] for a in trainval["annotations"]]
    assert len(set(ids)) == len(ids) and len(set(ann_ids)) == len(ann_ids)
    assert {a["image_id"] for a in trainval["annotations"]} <= set(ids)
    assert sorted(im["file_name"] for im in trainval["images"]) == sorted(
        im["file_name"] for im in train["images"] + val["images"])
    # every box still belongs to its own image: the per-file box lists are those of train and val
    def boxes(ds):
        name = {im["id"]: im["file_name"] for im in ds["images"]}
        return sorted((name[a["image_id"]], tuple(a["bbox"]), a["category_id"]) for a in ds["annotations"])
    assert boxes(trainval) == sorted(boxes(train) + boxes(val))
    assert "trainval" in stdout
    from rskd_tutorial.data import CocoDetection
    assert len(CocoDetection(out, "trainval")) == len(trainval["images"])   # the package reads it
