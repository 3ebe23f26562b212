"""Dataset classes, paired transforms, collate functions and the DOTA sliding-window helpers."""

from __future__ import annotations

import json

import pytest
import torch

from rskd_tutorial.data import (
    CocoDetection, Compose, DatasetFormatError, DatasetNotFoundError, RandomCrop, RandomHorizontalFlip,
    RandomVerticalFlip, Resize, SaliencyFolder, collate_detection, collate_saliency, merge_window_detections,
    sliding_windows, write_scenes,
)


@pytest.fixture(scope="module")
def optical_root(tmp_path_factory):
    return write_scenes("optical", tmp_path_factory.mktemp("d") / "optical", n_train=6, n_val=2, size=64, seed=1,
                        progress=False)


@pytest.fixture(scope="module")
def rgbir_root(tmp_path_factory):
    return write_scenes("rgbir", tmp_path_factory.mktemp("d") / "rgbir", n_train=3, n_val=1, size=48, progress=False)


@pytest.fixture(scope="module")
def saliency_root(tmp_path_factory):
    return write_scenes("saliency", tmp_path_factory.mktemp("d") / "sal", n_train=3, n_val=2, size=64, progress=False)


# --------------------------------------------------------------------------------- CocoDetection
def test_coco_detection_items(optical_root):
    ds = CocoDetection(optical_root, "train")
    assert len(ds) == 6 and ds.num_classes == 5 and ds.categories[0] == "vehicle"
    assert ds.image_ids == sorted(ds.coco.getImgIds())
    n_boxes = 0
    for i in range(len(ds)):
        img, t = ds[i]
        assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
        assert t["labels"].dtype == torch.int64 and t["iscrowd"].dtype == torch.int64 and t["area"].dtype == torch.float32
        assert len(t["labels"]) == len(t["boxes"]) == len(t["iscrowd"]) == len(t["area"])
        if len(t["labels"]):
            assert 1 <= t["labels"].min() and t["labels"].max() <= ds.num_classes
            b = t["boxes"]
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert torch.allclose(t["area"], (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        assert isinstance(t["image_id"], int)
        n_boxes += len(t["boxes"])
    assert n_boxes == len(ds.coco.getAnnIds())
    images, targets = collate_detection([ds[0], ds[1]])
    assert len(images) == len(targets) == 2


def test_drop_empty_and_sar_single_channel(tmp_path):
    root = write_scenes("sar", tmp_path / "sar", n_train=12, n_val=1, size=32, seed=3, progress=False, empty_prob=0.5)
    full, kept = CocoDetection(root, "train"), CocoDetection(root, "train", drop_empty=True)
    empties = sum(len(full.target(i)["boxes"]) == 0 for i in range(len(full)))
    assert empties > 0 and len(kept) == len(full) - empties
    img, _ = full[0]
    assert img.shape == (3, 32, 32) and torch.equal(img[0], img[2])


def test_paired_items_and_consistent_transform(rgbir_root):
    ds = CocoDetection(rgbir_root, "train", return_paired=True)
    ir, t, rgb = ds[0]
    assert ir.shape == rgb.shape == (3, 48, 48) and not torch.equal(ir, rgb)
    flipped = CocoDetection(rgbir_root, "train", transforms=RandomHorizontalFlip(1.0), return_paired=True)
    ir2, t2, rgb2 = flipped[0]
    assert torch.equal(ir2, ir.flip(-1)) and torch.equal(rgb2, rgb.flip(-1))
    assert torch.equal(t2["boxes"][:, [0, 2]], 48 - t["boxes"][:, [2, 0]])
    images, targets, paired = collate_detection([ds[0], ds[1]])
    assert len(paired) == 2
    with pytest.raises(DatasetFormatError, match="paired_file_name"):
        CocoDetection(write_scenes("optical", rgbir_root.parent / "o2", n_train=1, n_val=1, size=32, progress=False),
                      "train", return_paired=True)


def test_missing_root_and_malformed_file(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        CocoDetection(tmp_path / "ssdd", "train")
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert str(tmp_path / "ssdd") in msg and "instances_train.json" in msg and "prepare_ssdd.py" in msg
    with pytest.raises(DatasetNotFoundError, match="rskd synth"):
        CocoDetection(tmp_path / "whatever", "val")
    with pytest.raises(DatasetNotFoundError, match="prepare_sod.py --dataset orssd"):
        SaliencyFolder(tmp_path / "ORSSD", "train", 64)
    ann = tmp_path / "bad" / "annotations" / "instances_train.json"
    ann.parent.mkdir(parents=True)
    ann.write_text('{"images": [], "annotations": [')
    with pytest.raises(DatasetFormatError, match="instances_train.json.*not valid JSON"):
        CocoDetection(tmp_path / "bad", "train")
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 2]}],
                               "categories": [{"id": 1, "name": "ship"}]}))
    with pytest.raises(DatasetFormatError, match="non-positive width"):
        CocoDetection(tmp_path / "bad", "train")


# ----------------------------------------------------------------------------------- transforms
def _sample():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 40, 60, generator=g)
    t = {"boxes": torch.tensor([[5.0, 4.0, 15.0, 10.0], [40.0, 20.0, 58.0, 39.0]]), "labels": torch.tensor([1, 2]),
         "iscrowd": torch.tensor([0, 1]), "area": torch.tensor([60.0, 342.0]), "image_id": 7}
    return img, t


def test_flips_match_a_flip_done_by_hand():
    img, t = _sample()
    fimg, ft = RandomHorizontalFlip(p=1.0)(img, t)
    assert torch.equal(fimg, img[:, :, torch.arange(59, -1, -1)])
    assert ft["boxes"].tolist() == [[45.0, 4.0, 55.0, 10.0], [2.0, 20.0, 20.0, 39.0]]
    vimg, vt = RandomVerticalFlip(p=1.0)(img, t)
    assert torch.equal(vimg, img[:, torch.arange(39, -1, -1), :])
    assert vt["boxes"].tolist() == [[5.0, 30.0, 15.0, 36.0], [40.0, 1.0, 58.0, 20.0]]
    # the pixel under a box centre moves with the box
    cx, cy = 10, 7
    assert torch.equal(fimg[:, cy, 59 - cx], img[:, cy, cx])
    same_img, same_t = RandomHorizontalFlip(p=0.0)(img, t)
    assert same_img is img and same_t is t
    torch.manual_seed(0)
    a = [RandomHorizontalFlip(0.5)(img, t)[1]["boxes"][0, 0].item() for _ in range(8)]
    torch.manual_seed(0)
    b = [RandomHorizontalFlip(0.5)(img, t)[1]["boxes"][0, 0].item() for _ in range(8)]
    assert a == b and len(set(a)) == 2   # seeded by torch, and both outcomes occur


def test_resize_and_crop_keep_boxes_consistent():
    img, t = _sample()
    rimg, rt = Resize((20, 30))(img, t)
    assert rimg.shape == (3, 20, 30)
    assert rt["boxes"].tolist() == [[2.5, 2.0, 7.5, 5.0], [20.0, 10.0, 29.0, 19.5]]
    cimg, ct = RandomCrop.crop(img, t, x0=10, y0=0, w=30, h=20)
    assert torch.equal(cimg, img[:, 0:20, 10:40])
    assert ct["boxes"].tolist() == [[0.0, 4.0, 5.0, 10.0]] and ct["labels"].tolist() == [1]
    assert ct["iscrowd"].tolist() == [0] and ct["area"].tolist() == [30.0]
    torch.manual_seed(1)
    c2, t2 = RandomCrop(32)(img, t)
    assert c2.shape == (3, 32, 32) and (t2["boxes"][:, 2:] <= 32).all()
    pipe = Compose([RandomHorizontalFlip(1.0), RandomVerticalFlip(1.0)])
    pimg, pt = pipe(img, t)
    assert torch.equal(pimg, img.flip(-1).flip(-2))
    assert torch.allclose(pt["boxes"][:, [0, 2]], 60 - t["boxes"][:, [2, 0]])


def test_transforms_on_saliency_mask_and_multisize_dict():
    img = torch.rand(3, 16, 16)
    mask = torch.zeros(1, 16, 16)
    mask[:, 2:6, 1:4] = 1
    fimg, fmask = RandomHorizontalFlip(1.0)(img, mask)
    assert torch.equal(fmask, mask.flip(-1)) and torch.equal(fimg, img.flip(-1))
    multi = {16: img, 8: torch.nn.functional.avg_pool2d(img[None], 2)[0]}
    out, m = RandomCrop.crop(multi, mask, 8, 8, 8, 8)
    assert out[16].shape == (3, 8, 8) and out[8].shape == (3, 4, 4) and m.shape == (1, 8, 8)
    assert torch.equal(out[8], multi[8][:, 4:8, 4:8])


# ------------------------------------------------------------------------------- SaliencyFolder
def test_saliency_folder_multi_size(saliency_root):
    ds = SaliencyFolder(saliency_root, "train", [64, 32, 16])
    assert len(ds) == 3 and ds.names == ["000000", "000001", "000002"]
    images, mask = ds[0]
    assert {s: tuple(x.shape) for s, x in images.items()} == {64: (3, 64, 64), 32: (3, 32, 32), 16: (3, 16, 16)}
    assert mask.shape == (1, 64, 64) and mask.dtype == torch.float32 and 0 <= mask.min() and mask.max() <= 1
    single = SaliencyFolder(saliency_root, "test", 32, mask_size=16, binary=True)
    x, m = single[1]
    assert x.shape == (3, 32, 32) and m.shape == (1, 16, 16) and set(m.unique().tolist()) <= {0.0, 1.0}
    soft = SaliencyFolder(saliency_root, "test", 32, mask_size=16)[1][1]
    assert ((soft > 0) & (soft < 1)).any()   # bilinear resizing keeps soft edges
    batch = collate_saliency([ds[0], ds[1]])
    assert batch[0][32].shape == (2, 3, 32, 32) and batch[1].shape == (2, 1, 64, 64)
    flipped = SaliencyFolder(saliency_root, "train", [64, 32], transforms=RandomHorizontalFlip(1.0))
    fi, fm = flipped[0]
    assert torch.equal(fm, mask.flip(-1)) and torch.allclose(fi[32], images[32].flip(-1), atol=1e-6)


def test_saliency_folder_errors(tmp_path, saliency_root):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(saliency_root, bad)
    (bad / "train" / "masks" / "000001.png").unlink()
    with pytest.raises(DatasetFormatError, match="000001.*has no mask"):
        SaliencyFolder(bad, "train", 32)


# ------------------------------------------------------------------------------ sliding windows
def test_sliding_windows_cover_the_image():
    wins = sliding_windows((1500, 1500), 1024, 200)
    assert wins == [(0, 0, 1024, 1024), (476, 0, 1500, 1024), (0, 476, 1024, 1500), (476, 476, 1500, 1500)]
    wins = sliding_windows((900, 3000), 1024, 200)
    assert [w[0] for w in wins] == [0, 824, 1648, 1976] and all(w[1] == 0 and w[3] == 900 for w in wins)
    cover = torch.zeros(900, 3000, dtype=torch.bool)
    for x0, y0, x1, y1 in wins:
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    assert sliding_windows((500, 600)) == [(0, 0, 600, 500)]
    with pytest.raises(ValueError):
        sliding_windows((100, 100), 50, 50)


def test_merge_window_detections_shifts_and_suppresses_duplicates():
    wins = [(0, 0, 1024, 1024), (476, 0, 1500, 1024)]
    dets = [
        {"boxes": torch.tensor([[900.0, 100.0, 1000.0, 150.0], [10.0, 10.0, 20.0, 20.0]]),
         "scores": torch.tensor([0.9, 0.5]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[424.0, 101.0, 524.0, 150.0], [424.0, 100.0, 524.0, 150.0]]),
         "scores": torch.tensor([0.8, 0.7]), "labels": torch.tensor([1, 3])},
    ]
    m = merge_window_detections(dets, wins, iou_threshold=0.5)
    assert m["scores"].tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert m["labels"].tolist() == [1, 3, 2]   # the same-class duplicate from window 2 is gone
    assert m["boxes"][1].tolist() == [900.0, 100.0, 1000.0, 150.0]
    empty = merge_window_detections([{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}], wins[:1])
    assert empty["boxes"].shape == (0, 4)
