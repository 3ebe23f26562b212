"""Evaluation with the field's standard tools.

* Detection: pycocotools ``COCOeval`` (bbox): mAP (AP@[.50:.95]), AP50, AP75, APs, APm, APl and AR100,
  exactly the numbers the DS2D2 and DIPKD papers report (both evaluate with MMDetection's COCO metric).
* Salient object detection: pysodmetrics, as the SOD community computes them: MAE, max / mean /
  adaptive F-measure (beta^2 = 0.3), S-measure (alpha = 0.5), max / mean E-measure, plus the
  precision-recall and F-measure curves over 256 thresholds (SCRKD paper Sec. IV-A, Eqs. 15-17).

All metrics are returned as fractions in [0, 1]; the chapters print detection AP x 100 as the papers do.
Inside ``with track_evaluation(progress=True) as seen:`` every evaluation shows a progress bar and
appends ``{"split", "images", "root"}`` of the split it read to ``seen`` (what ``rskd eval`` records in
``eval.json``); outside it nothing is shown or recorded.
Taught in chapter 0 (detection) and chapter 5 (saliency).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

COCO_KEYS = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR100")

_TRACKERS: list[tuple[list[dict[str, Any]], bool]] = []


@contextlib.contextmanager
def track_evaluation(progress: bool = True) -> Iterator[list[dict[str, Any]]]:
    """Record (and optionally show a tqdm bar for) every evaluation run inside the block; yields the list of
    ``{"split", "images", "root"}`` records, one per evaluated split."""
    seen: list[dict[str, Any]] = []
    _TRACKERS.append((seen, progress))
    try:
        yield seen
    finally:
        _TRACKERS.remove((seen, progress))


def _split_record(dataset: Dataset) -> dict[str, Any]:
    base = getattr(dataset, "dataset", dataset)      # a torch Subset of a split
    root = getattr(base, "root", None)
    return {"split": getattr(base, "split", None), "images": len(dataset), "root": str(root) if root else None}


def _tracked(loader: Iterable[Any], dataset: Dataset, what: str) -> Iterable[Any]:
    """``loader`` as is, or inside :func:`track_evaluation` recorded and wrapped in a progress bar."""
    if not _TRACKERS:
        return loader
    record = _split_record(dataset)
    show = False
    for seen, progress in _TRACKERS:
        seen.append(record)
        show = show or progress
    if not show:
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=f"{what} {record['split'] or ''}".strip(), unit="batch", leave=False,
                dynamic_ncols=True, mininterval=1.0)


def coco_metrics(coco_gt: Any, detections: Sequence[Mapping[str, Any]],
                 image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCO bbox metrics of ``detections`` against the ground truth ``coco_gt``.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` object, or a COCO-format dict (images, annotations,
            categories).
        detections: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` records.
        image_ids: restrict the evaluation to these images (default: every image in ``coco_gt``).

    Returns:
        ``{"mAP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}`` in [0, 1]. With no detection at all
        every value is 0 (COCOeval cannot load an empty result list).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if isinstance(coco_gt, Mapping):
        gt = COCO()
        gt.dataset = {"info": {}, "licenses": [], **coco_gt}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        coco_gt = gt
    if not detections:
        return {k: 0.0 for k in COCO_KEYS}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    # stats: 0 AP, 1 AP50, 2 AP75, 3 APs, 4 APm, 5 APl, 6 AR1, 7 AR10, 8 AR100 ...; -1 means "no such objects"
    values = [s[0], s[1], s[2], s[3], s[4], s[5], s[8]]
    return {k: max(float(v), 0.0) for k, v in zip(COCO_KEYS, values)}


def detections_to_coco(predictions: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int],
                       label_to_category: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
    """Turn torchvision-style predictions (xyxy ``boxes``, ``scores``, ``labels``) into COCO records."""
    records = []
    for pred, image_id in zip(predictions, image_ids):
        boxes = pred["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for box, score, label in zip(xywh, pred["scores"].tolist(), pred["labels"].tolist()):
            cat = label_to_category[label] if label_to_category else int(label)
            records.append({"image_id": int(image_id), "category_id": cat, "bbox": box, "score": float(score)})
    return records


@torch.no_grad()
def predict_detections(model: nn.Module, dataset: Dataset, *, batch_size: int = 8,
                       device: torch.device | str | None = None, num_workers: int = 0,
                       collate_fn: Callable | None = None) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """Run a detector in eval mode over ``dataset``; returns (predictions, image ids), boxes in the
    original image's pixels."""
    from rskd_tutorial.data import collate_detection

    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_fn or collate_detection)
    preds, ids = [], []
    for batch in _tracked(loader, dataset, "evaluate"):
        images, targets = batch[0], batch[1]
        out = model([im.to(device) for im in images])
        out = out.predictions if hasattr(out, "predictions") else out
        preds.extend({k: v.cpu() for k, v in p.items()} for p in out)
        ids.extend(int(t["image_id"]) for t in targets)
    model.train(was_training)
    return preds, ids


def evaluate_detection(model: nn.Module, dataset: Dataset, *, batch_size: int = 8,
                       device: torch.device | str | None = None, num_workers: int = 0) -> dict[str, float]:
    """COCO metrics of ``model`` on a :class:`~rskd_tutorial.data.CocoDetection` split (or a ``Subset`` of one).

    The model is called in eval mode with a list of image tensors and must return torchvision-style
    detections (or a ``ModelOutput`` whose ``predictions`` are). Labels are the dataset's 1-based
    category ids.
    """
    preds, ids = predict_detections(model, dataset, batch_size=batch_size, device=device, num_workers=num_workers)
    coco = dataset.coco if hasattr(dataset, "coco") else dataset.dataset.coco     # a torch Subset of a split
    return coco_metrics(coco, detections_to_coco(preds, ids), image_ids=ids)


# ----------------------------------------------------------------------------------------------
# salient object detection
# ----------------------------------------------------------------------------------------------

def _to_uint8(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def saliency_metrics(predictions: Iterable[np.ndarray | torch.Tensor],
                     masks: Iterable[np.ndarray | torch.Tensor], *,
                     curves: bool = False) -> dict[str, Any]:
    """SOD metrics over pairs of (prediction, ground-truth mask), as pysodmetrics computes them.

    Predictions are probability maps in [0, 1] (or uint8 0-255), masks 0/1 (or 0/255); both 2-D of the
    same size. pysodmetrics min-max normalises each prediction and binarises the mask at 0.5
    (SCRKD's own evaluator keeps the resized mask soft and binarises it only inside the S-measure;
    for sharp masks the two differ at the 3rd decimal).

    Returns ``MAE``, ``maxF``, ``meanF``, ``adpF`` (beta^2 = 0.3), ``Sm``, ``maxEm``, ``meanEm``; with
    ``curves=True`` also ``precision``, ``recall`` and ``fmeasure`` arrays over 256 thresholds.
    """
    import py_sod_metrics as sod

    fm = sod.FmeasureV2(metric_handlers={
        "fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3),
        "p": sod.PrecisionHandler(with_dynamic=True, with_adaptive=False),
        "r": sod.RecallHandler(with_dynamic=True, with_adaptive=False),
    })
    mae, sm, em = sod.MAE(), sod.Smeasure(), sod.Emeasure()
    n = 0
    for pred, mask in zip(predictions, masks):
        p, g = _to_uint8(np.squeeze(_np(pred))), _to_uint8(np.squeeze(_np(mask)))
        if p.shape != g.shape:
            raise ValueError(f"prediction {p.shape} and mask {g.shape} differ in size; resize first")
        for metric in (fm, mae, sm, em):
            metric.step(p, g)
        n += 1
    if n == 0:
        raise ValueError("saliency_metrics: no (prediction, mask) pair given")
    f = fm.get_results()
    e = em.get_results()["em"]
    out: dict[str, Any] = {
        "MAE": float(mae.get_results()["mae"]),
        "maxF": float(f["fm"]["dynamic"].max()),
        "meanF": float(f["fm"]["dynamic"].mean()),
        "adpF": float(f["fm"]["adaptive"]),
        "Sm": float(sm.get_results()["sm"]),
        "maxEm": float(e["curve"].max()),
        "meanEm": float(e["curve"].mean()),
    }
    if curves:
        out.update(precision=f["p"]["dynamic"], recall=f["r"]["dynamic"], fmeasure=f["fm"]["dynamic"])
    return out


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


@torch.no_grad()
def evaluate_saliency(predict: Callable[[Any], torch.Tensor] | nn.Module, dataset: Dataset, *,
                      eval_size: int | None = None, batch_size: int = 8,
                      device: torch.device | str | None = None, curves: bool = False,
                      collate_fn: Callable | None = None) -> dict[str, Any]:
    """SOD metrics of a predictor over a :class:`~rskd_tutorial.data.SaliencyFolder` split.

    ``predict(inputs)`` returns saliency probabilities ``[B, 1, h, w]`` in [0, 1]; an ``nn.Module`` is
    called in eval mode and its output (or its ``ModelOutput.predictions``) is taken as logits. Predictions and
    masks are bilinearly resized to ``eval_size`` (the papers: 448 for every student resolution, so
    that students at different resolutions are compared on the same grid).
    """
    from rskd_tutorial.data import collate_saliency

    if isinstance(predict, nn.Module):
        model = predict
        device = torch.device(device) if device is not None else next(model.parameters()).device
        was_training = model.training
        model.eval()

        def predict(inputs: Any) -> torch.Tensor:  # noqa: F811 - the module's predictions as probabilities
            out = model(inputs)
            logits = out.predictions if hasattr(out, "predictions") else out
            return torch.sigmoid(logits)
    else:
        model, was_training = None, False
    from rskd_tutorial.engine.train import to_device

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn or collate_saliency)
    preds, masks = [], []
    for inputs, mask in _tracked(loader, dataset, "evaluate"):
        if device is not None:
            inputs = to_device(inputs, torch.device(device))
        prob = predict(inputs).float()
        size = eval_size or mask.shape[-1]
        prob = F.interpolate(prob, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        mask = F.interpolate(mask.float(), size=(size, size), mode="bilinear", align_corners=False)
        preds.extend(prob[:, 0].cpu())
        masks.extend(mask[:, 0].cpu())
    if model is not None:
        model.train(was_training)
    return saliency_metrics(preds, masks, curves=curves)
