"""COCO and SOD metrics on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rskd_tutorial.engine import coco_metrics, detections_to_coco, saliency_metrics


def _gt(boxes_per_image):
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": i, "file_name": f"{i}.png", "width": 100, "height": 100})
        for x, y, w, h in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "ship"}]}


def test_perfect_predictions_score_one():
    gt = _gt([[(10, 10, 20, 20)], [(50, 40, 40, 50)]])
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9} for a in gt["annotations"]]
    m = coco_metrics(gt, dets)
    assert m["mAP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AR100"] == pytest.approx(1.0)


def test_one_missed_object_of_two_gives_recall_half():
    gt = _gt([[(10, 10, 20, 20), (60, 60, 30, 30)]])
    m = coco_metrics(gt, [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}])
    assert m["AR100"] == pytest.approx(0.5)
    # precision is 1 up to recall 0.5 and 0 beyond: 51 of the 101 recall points
    assert m["AP50"] == pytest.approx(51 / 101, abs=1e-6)


def test_no_detection_gives_zeros_and_xyxy_conversion():
    assert coco_metrics(_gt([[(0, 0, 5, 5)]]), [])["mAP"] == 0.0
    recs = detections_to_coco([{"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]), "scores": torch.tensor([0.5]),
                                "labels": torch.tensor([3])}], [7])
    assert recs == [{"image_id": 7, "category_id": 3, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}]


def test_sod_metrics_hand_computed_mae_and_perfect_map():
    mask = np.zeros((8, 8), np.float32)
    mask[2:6, 2:6] = 1
    pred = mask * 0.75 + 0.25 * (1 - mask)   # every pixel off by 0.25
    m = saliency_metrics([pred], [mask])
    # pysodmetrics min-max normalises the prediction: 0.25..0.75 -> 0..1, so the map becomes exact
    assert m["MAE"] == pytest.approx(0.0, abs=1e-6)
    assert m["maxF"] == pytest.approx(1.0, abs=1e-3) and m["Sm"] == pytest.approx(1.0, abs=1e-3)
    flat = np.full((8, 8), 0.5, np.float32)
    flat[0, 0] = 0.0
    m2 = saliency_metrics([flat], [mask])
    # normalised: 1 everywhere but the corner, so the 48 - 1 background pixels are wrong by 1
    assert m2["MAE"] == pytest.approx(47 / 64, abs=1e-6)


def test_sod_curves_and_size_check():
    mask = np.zeros((8, 8), np.float32)
    mask[:4] = 1
    m = saliency_metrics([np.random.default_rng(0).random((8, 8))], [mask], curves=True)
    assert m["precision"].shape == (256,) and m["fmeasure"].max() == pytest.approx(m["maxF"])
    with pytest.raises(ValueError, match="differ in size"):
        saliency_metrics([np.zeros((4, 4))], [mask])


def test_evaluate_detection_on_a_subset_scores_only_its_images():
    from torch.utils.data import Subset

    from rskd_tutorial.engine import evaluate_detection

    gt = _gt([[(10, 10, 20, 20)], [(50, 40, 40, 50)]])

    class Split(torch.utils.data.Dataset):
        coco = gt

        def __len__(self):
            return 2

        def __getitem__(self, i):   # the image's pixels carry its id, so the oracle below can answer
            return torch.full((3, 8, 8), float(i + 1)), {"image_id": i + 1}

    class Oracle(torch.nn.Module):   # finds image 1's box, misses image 2's
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, images):
            out = []
            for im in images:
                hit = int(im[0, 0, 0]) == 1
                out.append({"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]] if hit else [[0.0, 0.0, 1.0, 1.0]]),
                            "scores": torch.tensor([0.9]), "labels": torch.tensor([1])})
            return out

    assert evaluate_detection(Oracle(), Subset(Split(), [0]))["AP50"] == pytest.approx(1.0)
    assert evaluate_detection(Oracle(), Subset(Split(), [1]))["AP50"] == pytest.approx(0.0)
    assert evaluate_detection(Oracle(), Split())["AP50"] == pytest.approx(0.5, abs=0.01)
