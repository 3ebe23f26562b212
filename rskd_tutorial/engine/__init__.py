"""The training loop, evaluation and the run cache: one home for each."""

from rskd_tutorial.engine.cache import cache_dir, load_finished, run_key, train_or_load
from rskd_tutorial.engine.evaluate import (
    coco_metrics,
    detections_to_coco,
    evaluate_detection,
    evaluate_saliency,
    predict_detections,
    saliency_metrics,
)
from rskd_tutorial.engine.train import (
    FitResult,
    NonFiniteLossError,
    RunExistsError,
    TrainConfig,
    fit,
    load_checkpoint,
    load_weights,
    read_metrics,
    seed_everything,
    to_device,
)

__all__ = [
    "FitResult", "NonFiniteLossError", "RunExistsError", "TrainConfig", "cache_dir",
    "coco_metrics", "detections_to_coco", "evaluate_detection", "evaluate_saliency",
    "fit", "load_checkpoint", "load_finished", "load_weights", "predict_detections", "read_metrics", "run_key",
    "saliency_metrics", "seed_everything", "to_device", "train_or_load",
]
