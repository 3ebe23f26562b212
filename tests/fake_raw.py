"""Tiny fake copies of each real dataset in its ORIGINAL raw layout (2-4 images of 32-64 px).

Nothing is downloaded: these builders write the folders, annotation formats and split lists the
official releases ship, so the converters in ``data_scripts/`` run on them in the tests. Each
builder returns a dict of what it planted (expected image/box counts) for the assertions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, w: int = 64, h: int = 48, seed: int = 0, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    a = rng.integers(0, 255, shape, dtype=np.uint8)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(a).save(path, format=fmt)
    return path


def voc_xml(filename: str, w: int, h: int, objects: list[tuple[str, tuple[float, float, float, float], int]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


# --------------------------------------------------------------------------------------- DIOR
DIOR_OBJECTS = {
    "00001": [("vehicle", (2, 3, 12, 9), 0), ("ship", (20, 20, 40, 30), 0)],
    "00002": [("Expressway-Service-area", (5, 5, 60, 40), 0)],
    "00003": [("storagetank", (10, 10, 20, 20), 0), ("airplane", (30, 5, 50, 25), 1)],
    "00004": [],
}


def make_dior(root: Path, nested_annotations: bool = True) -> dict:
    ann = root / "Annotations" / ("Horizontal Bounding Boxes" if nested_annotations else "")
    ann.mkdir(parents=True, exist_ok=True)
    for i, (id_, objs) in enumerate(DIOR_OBJECTS.items()):
        folder = "JPEGImages-test" if id_ == "00004" else "JPEGImages-trainval"
        write_image(root / folder / f"{id_}.jpg", 64, 48, seed=i)
        (ann / f"{id_}.xml").write_text(voc_xml(f"{id_}.jpg", 64, 48, objs))
    lists = root / "ImageSets" / "Main"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("00001\n00002\n")
    (lists / "val.txt").write_text("00003\n")
    (lists / "test.txt").write_text("00004\n")
    return {"images": {"train": 2, "val": 1, "test": 1}, "boxes": {"train": 3, "val": 2, "test": 0}}


# --------------------------------------------------------------------------------------- SSDD
def make_ssdd(root: Path, with_lists: bool = True, inshore: bool = True) -> dict:
    objs = {"000001": [("ship", (3, 4, 13, 10), 0)], "000002": [("ship", (1, 1, 9, 6), 0), ("ship", (20, 20, 30, 25), 0)],
            "000009": [("ship", (5, 5, 15, 12), 0)], "000011": [("ship", (2, 2, 7, 6), 0)]}
    for i, (id_, o) in enumerate(objs.items()):
        write_image(root / "JPEGImages" / f"{id_}.jpg", 48, 40, seed=10 + i)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{id_}.xml").write_text(voc_xml(f"{id_}.jpg", 48, 40, o))
    if with_lists:
        lists = root / "ImageSets" / "Main"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / "train.txt").write_text("000002\n000011\n")
        (lists / "test.txt").write_text("000001\n000009\n")
        if inshore:
            (lists / "test_inshore.txt").write_text("000001\n")
            (lists / "test_offshore.txt").write_text("000009\n")
    return {"images": {"train": 2, "test": 2}, "boxes": {"train": 3, "test": 2}}


# --------------------------------------------------------------------------------------- DOTA
def make_dota(root: Path, big: bool = False) -> dict:
    """train: one image (1500 x 1500 when ``big``, else 64 x 64); val: one 48 x 48 image."""
    size = 1500 if big else 64
    (root / "train" / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (90, 100, 80)).save(root / "train" / "images" / "P0001.png")
    if big:
        lines = ["imagesource:GoogleEarth", "gsd:0.15",
                 "900 100 1000 100 1000 150 900 150 small-vehicle 0",      # in both top windows
                 "1000 300 1100 300 1100 350 1000 350 plane 0",            # crosses x = 1024
                 "100 1300 140 1300 140 1340 100 1340 ship 1"]             # bottom-left only, difficult
    else:
        lines = ["imagesource:GoogleEarth", "gsd:0.15", "2 3 12 3 12 9 2 9 small-vehicle 0",
                 "20 20 40 22 38 30 18 28 large-vehicle 1", "50 50 70 50 70 60 50 60 ship 0"]  # last leaves the image
    (root / "train" / "labelTxt").mkdir(parents=True, exist_ok=True)
    (root / "train" / "labelTxt" / "P0001.txt").write_text("\n".join(lines) + "\n")
    write_image(root / "val" / "images" / "P0002.png", 48, 48, seed=3)
    (root / "val" / "labelTxt").mkdir(parents=True, exist_ok=True)
    (root / "val" / "labelTxt" / "P0002.txt").write_text("1 1 10 1 10 8 1 8 plane 0\n")
    return {"train_size": size}


# -------------------------------------------------------------------------------------- HRSID
def make_hrsid(root: Path) -> dict:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, names in (("train2017", ["P0001_0_800_0_800.jpg", "P0002_0_800_0_800.jpg"]), ("test2017", ["P0003_0_800_0_800.jpg"])):
        images, anns = [], []
        for i, n in enumerate(names, start=1):
            write_image(root / "images" / n, 40, 40, seed=i, mode="L")
            images.append({"id": i, "file_name": n, "width": 40, "height": 40})
            anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0,
                         "segmentation": [[2, 3, 12, 3, 12, 8]]})
        (root / "annotations" / f"{split}.json").write_text(json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}))
    return {"images": {"train": 2, "test": 1}, "boxes": {"train": 2, "test": 1}}


# ---------------------------------------------------------------------------------------- SOD
def make_sod(root: Path, variant: str = "orssd") -> dict:
    """ORSSD/EORSSD layout (``train-images/`` ...) or ORSI-4199 layout (``train/images``, ``train/GT``)."""
    counts = {"train": 3, "test": 2}
    for split, n in counts.items():
        for i in range(n):
            if variant == "orsi4199":
                idir, mdir = root / split / "images", root / split / "GT"
            else:
                idir, mdir = root / f"{split}-images", root / f"{split}-labels"
            write_image(idir / f"{i:04d}.jpg", 40, 32, seed=i)
            m = np.zeros((32, 40), np.uint8)
            m[8:20, 10:30] = 250  # near-255 values, like JPEG-compressed masks
            mdir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m).save(mdir / f"{i:04d}.png")
    return {"images": counts}


# -------------------------------------------------------------------------------------- KAIST
def make_kaist(root: Path) -> dict:
    frames = {"set00/V000/I00001": ["person 10 5 8 20 0 0 0 0 0 0 0", "people 30 5 15 20 0 0 0 0 0 0 0"],
              "set00/V000/I00002": ["person 12 6 8 20 2 0 0 0 0 0 0"],
              "set06/V000/I00001": ["cyclist 5 5 10 20 0 0 0 0 0 0 0", "person? 20 5 5 10 0 0 0 0 0 0 0"],
              "set06/V001/I00003": []}
    for i, (key, lines) in enumerate(frames.items()):
        s, v, f = key.split("/")
        write_image(root / "images" / s / v / "visible" / f"{f}.jpg", 64, 48, seed=i)
        write_image(root / "images" / s / v / "lwir" / f"{f}.jpg", 64, 48, seed=100 + i, mode="L")
        (root / "annotations" / s / v).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / s / v / f"{f}.txt").write_text("\n".join(["% bbGt version=3", *lines]) + "\n")
    (root / "imageSets").mkdir(parents=True, exist_ok=True)
    (root / "imageSets" / "train-all-02.txt").write_text("set00/V000/I00001\nset00/V000/I00002\n")
    (root / "imageSets" / "test-all-20.txt").write_text("set06/V000/I00001\nset06/V001/I00003\n")
    return {"images": {"train": 2, "test": 2}, "boxes": {"train": 3, "test": 2}, "crowd": {"train": 2, "test": 2}}


# --------------------------------------------------------------------------------------- FLIR
FLIR_CATS = [{"id": 1, "name": "person"}, {"id": 2, "name": "bike"}, {"id": 3, "name": "car"}, {"id": 10, "name": "light"}]


def _flir_set(folder: Path, names: list[str], anns: list[tuple[int, int, list]], mode: str = "L") -> None:
    images = []
    for i, n in enumerate(names, start=1):
        write_image(folder / "data" / n, 64, 48, seed=i, mode=mode)
        images.append({"id": i, "file_name": f"data/{n}", "width": 64, "height": 48})
    annotations = [{"id": k + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                   for k, (im, c, b) in enumerate(anns)]
    (folder / "coco.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": FLIR_CATS}))


def make_flir(root: Path) -> dict:
    _flir_set(root / "images_thermal_train", ["video-a-frame-000001-x.jpg", "video-a-frame-000002-x.jpg"],
              [(1, 1, [2, 2, 8, 20]), (1, 10, [30, 2, 4, 4]), (2, 3, [10, 10, 20, 12])])
    _flir_set(root / "images_rgb_train", ["video-b-frame-000001-y.jpg"], [], mode="RGB")
    _flir_set(root / "images_thermal_val", ["video-c-frame-000001-x.jpg"], [(1, 2, [5, 5, 10, 10])])
    _flir_set(root / "video_thermal_test", ["video-d-frame-000001-t.jpg", "video-d-frame-000002-t.jpg"],
              [(1, 1, [3, 3, 6, 15]), (2, 3, [20, 20, 15, 10])])
    _flir_set(root / "video_rgb_test", ["video-d-frame-000001-r.jpg"], [], mode="RGB")
    (root / "rgb_to_thermal_vid_map.json").write_text(json.dumps({"video-d-frame-000001-r.jpg": "video-d-frame-000001-t.jpg"}))
    return {"images": {"train": 2, "val": 1, "test": 2}, "boxes": {"train": 2, "val": 1, "test": 2}, "paired_test": 1}
