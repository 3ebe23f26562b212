"""Synthetic scene generators: determinism, on-disk formats, idempotent writing, physics statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from rskd_tutorial.data.synthetic import (
    MANIFEST, OPTICAL_CLASSES, gamma_speckle, optical_scene, rgbir_scene, saliency_scene, sar_scene,
    synth_main, write_scenes,
)
from rskd_tutorial.data.synthetic._common import area_downsample


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("kind", ["optical", "sar", "rgbir", "saliency"])
def test_write_is_deterministic_by_seed(tmp_path, kind):
    a = write_scenes(kind, tmp_path / "a", n_train=3, n_val=1, size=48, seed=5, progress=False)
    b = write_scenes(kind, tmp_path / "b", n_train=3, n_val=1, size=48, seed=5, progress=False)
    c = write_scenes(kind, tmp_path / "c", n_train=3, n_val=1, size=48, seed=6, progress=False)
    ta, tb, tc = _tree_bytes(a), _tree_bytes(b), _tree_bytes(c)
    assert ta == tb
    assert ta.keys() == tc.keys()
    images = [k for k in ta if k.endswith((".png", ".jpg"))]
    assert len(images) >= 4 and all(ta[k] != tc[k] for k in images)


def test_scene_functions_are_deterministic():
    for f in (lambda s: optical_scene(64, s)["image"], lambda s: sar_scene(64, s)["intensity"],
              lambda s: rgbir_scene(64, s)["ir"], lambda s: saliency_scene(s, 32)[0]):
        assert np.array_equal(f(3), f(3)) and not np.array_equal(f(3), f(4))


def test_pool_gives_the_same_bytes_as_serial(tmp_path):
    a = write_scenes("sar", tmp_path / "serial", n_train=64, n_val=2, size=32, workers=1, progress=False)
    b = write_scenes("sar", tmp_path / "pool", n_train=64, n_val=2, size=32, workers=2, progress=False)
    assert _tree_bytes(a) == _tree_bytes(b)


# ------------------------------------------------------------------------------ formats on disk
def test_detection_layout_and_coco(tmp_path):
    out = write_scenes("optical", tmp_path / "opt", n_train=4, n_val=2, size=64, progress=False)
    for split, n in (("train", 4), ("val", 2)):
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == n
        assert [c["name"] for c in coco.dataset["categories"]] == list(OPTICAL_CLASSES)
        for im in coco.dataset["images"]:
            assert (out / "images" / im["file_name"]).is_file() and im["width"] == im["height"] == 64
        for a in coco.dataset["annotations"]:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
            assert a["area"] == w * h and a["iscrowd"] == 0 and 1 <= a["category_id"] <= 5
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kind"] == "optical" and manifest["n_train"] == 4


def test_paired_and_saliency_layouts(tmp_path):
    out = write_scenes("rgbir", tmp_path / "rgbir", n_train=2, n_val=1, size=48, progress=False)
    data = json.loads((out / "annotations" / "instances_val.json").read_text())
    im = data["images"][0]
    assert im["file_name"].endswith("_ir.png") and (out / "images" / im["paired_file_name"]).is_file()
    assert [c["name"] for c in data["categories"]] == ["person", "vehicle"]
    out = write_scenes("saliency", tmp_path / "sal", n_train=2, n_val=1, size=40, progress=False)
    for split, n in (("train", 2), ("test", 1)):
        imgs = sorted((out / split / "images").iterdir())
        masks = sorted((out / split / "masks").iterdir())
        assert [p.stem for p in imgs] == [p.stem for p in masks] and len(imgs) == n
        from PIL import Image
        m = np.asarray(Image.open(masks[0]))
        assert m.shape == (40, 40) and set(np.unique(m)) <= {0, 255}


# ------------------------------------------------------------------------- idempotent and safe
def test_write_scenes_idempotent_and_atomic(tmp_path):
    out = tmp_path / "sar"
    write_scenes("sar", out, n_train=2, n_val=1, size=32, progress=False)
    stamp = (out / MANIFEST).stat().st_mtime_ns
    write_scenes("sar", out, n_train=2, n_val=1, size=32, progress=False)      # same manifest: no-op
    assert (out / MANIFEST).stat().st_mtime_ns == stamp
    write_scenes("sar", out, n_train=3, n_val=1, size=32, looks=4, progress=False)  # different: replaced
    assert json.loads((out / MANIFEST).read_text())["kind_kwargs"] == {"looks": 4}
    assert len(list((out / "images" / "train").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sar"]                 # no temp dirs left


def test_write_scenes_refuses_foreign_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "precious.txt").write_text("not synthetic")
    with pytest.raises(FileExistsError, match="refusing"):
        write_scenes("optical", real, n_train=1, n_val=1, size=32, progress=False)
    assert (real / "precious.txt").read_text() == "not synthetic"
    with pytest.raises(TypeError, match="looks"):
        write_scenes("optical", tmp_path / "x", n_train=1, n_val=1, size=32, looks=2)


def test_synth_cli(tmp_path, capsys):
    assert synth_main(["sar", str(tmp_path / "s"), "--n", "5", "--size", "32", "--seed", "1", "--looks", "2"]) == 0
    data = json.loads((tmp_path / "s" / "annotations" / "instances_val.json").read_text())
    assert len(data["images"]) == 1 and "4 train + 1 val" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        synth_main(["optical", str(tmp_path / "o"), "--n", "5", "--size", "32", "--looks", "2"])


# ---------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("looks", [1, 4, 16])
def test_sar_speckle_mean_one_and_enl_equals_looks(looks):
    sc = sar_scene(256, seed=11, looks=looks, inshore=False)
    sea = np.ones_like(sc["clean"], bool)
    for x1, y1, x2, y2 in sc["boxes"].astype(int):
        sea[max(0, y1 - 8):y2 + 8, max(0, x1 - 8):x2 + 8] = False
    n = (sc["intensity"] / sc["clean"])[sea].astype(np.float64)   # the speckle field on the sea
    assert abs(n.mean() - 1) < 0.02
    enl = n.mean() ** 2 / n.var()
    assert abs(enl / looks - 1) < 0.05
    g = gamma_speckle((200, 200), looks, np.random.default_rng(0)).astype(np.float64)
    assert abs(g.mean() - 1) < 0.02 and abs(g.mean() ** 2 / g.var() / looks - 1) < 0.05


def test_sar_scene_contents():
    inshore = [sar_scene(96, s, inshore_prob=0.3)["inshore"] for s in range(40)]
    assert 0.1 < np.mean(inshore) < 0.5
    sc = sar_scene(96, 2)
    assert sc["intensity"].dtype == np.float32 and sc["clean"].shape == (96, 96)
    assert (sc["labels"] == 1).all() and sc["boxes"].dtype == np.float32
    assert len(sar_scene(64, 1, empty_prob=1.0)["boxes"]) == 0


def test_ir_pedestrians_warmer_than_background():
    checked = 0
    for seed in range(12):
        sc = rgbir_scene(96, seed)
        persons = sc["boxes"][sc["labels"] == 1].astype(int)
        if len(persons) == 0:
            continue
        inside = np.zeros(sc["ir"].shape, bool)
        for x1, y1, x2, y2 in sc["boxes"].astype(int):
            inside[y1:y2, x1:x2] = True
        person_px = np.zeros_like(inside)
        for x1, y1, x2, y2 in persons:
            person_px[y1:y2, x1:x2] = True
        assert sc["ir"][person_px].mean() > sc["ir"][~inside].mean() + 10
        assert sc["temperature"][person_px].mean() > sc["temperature"][~inside].mean()
        checked += 1
    assert checked >= 6
    nights = [rgbir_scene(64, s, night=True)["rgb"].mean() for s in range(3)]
    days = [rgbir_scene(64, s, night=False)["rgb"].mean() for s in range(3)]
    assert max(nights) < min(days)


def test_saliency_same_content_at_every_resolution():
    for seed in range(8):
        _, m448 = saliency_scene(seed, 448)
        img112, m112 = saliency_scene(seed, 112)
        soft = area_downsample(m448.astype(np.float32) / 255, 4)
        mismatch = (m112 > 127) != (soft >= 0.5)
        border = (soft > 0) & (soft < 1)
        assert not (mismatch & ~border).any()          # disagreements only on object borders
        assert mismatch.mean() < 0.01
        assert img112.shape == (112, 112, 3) and m112.dtype == np.uint8
        assert 0 < (m112 > 0).mean() < 0.6             # 1-3 objects, never the whole image


@pytest.mark.parametrize("size", [96, 192])
def test_boxes_valid_and_empty_images_occur(size):
    counts, labels = [], []
    for seed in range(30 if size == 96 else 8):
        sc = optical_scene(size, seed)
        b = sc["boxes"]
        assert b.dtype == np.float32 and sc["image"].shape == (size, size, 3) and sc["image"].dtype == np.uint8
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert (b >= 0).all() and (b <= size).all()
        counts.append(len(b))
        labels += sc["labels"].tolist()
    for fn in (sar_scene, rgbir_scene):
        b = fn(size, 1)["boxes"]
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & (b >= 0).all(1) & (b <= size).all(1)).all()
    if size == 96:
        assert min(counts) == 0 and max(counts) >= 20        # empty scenes and dense ones
        assert set(labels) == {1, 2, 3, 4, 5}


def test_objects_are_small_and_scale_with_size():
    sides = {}
    for size in (96, 192):
        v = np.concatenate([optical_scene(size, s)["boxes"][optical_scene(size, s)["labels"] == 1] for s in range(6)])
        sides[size] = np.median(np.maximum(v[:, 2] - v[:, 0], v[:, 3] - v[:, 1]))
    assert 5 <= sides[192] <= 14                          # vehicles: 6-10 px long at 192 px
    assert 1.5 <= sides[192] / sides[96] <= 2.5


def test_plot_scenes_returns_figures(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from rskd_tutorial.data.synthetic import plot_scenes
    root = write_scenes("rgbir", tmp_path / "p", n_train=2, n_val=1, size=32, progress=False)
    assert isinstance(plot_scenes("rgbir", root, n=2), Figure)
    assert isinstance(plot_scenes("sar", [sar_scene(32, 0)], n=1), Figure)
    assert isinstance(plot_scenes("optical", [optical_scene(32, 0)]), Figure)
    assert isinstance(plot_scenes("saliency", [saliency_scene(0, 32)]), Figure)
    import matplotlib.pyplot as plt
    plt.close("all")
