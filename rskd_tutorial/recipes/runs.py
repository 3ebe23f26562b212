"""Tutorial runs: what every recipe's tutorial scale shares.

A chapter asks for a trained model; the answer is a :class:`TutorialRun` (the model, its run folder,
its metrics, whether the cache answered and how long it trained). Every recipe builds one the same
way:

1. :func:`fit_closure` -- the training closure ``train(run_dir)`` around ``engine.fit`` (always with
   ``resume=True``, so an interrupted run continues);
2. :func:`finish_run` -- ``engine.train_or_load`` with that closure (cache, else teacher store, else
   train), then the evaluation, cached beside the weights by :func:`cached_metrics`.

The rest reads finished run folders: :func:`run_seconds`, :func:`run_steps`, :func:`describe_run` and
a chapter's last line, :func:`timing_summary`. Detection, saliency and FreqKD recipes all use these;
none writes its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rskd_tutorial.engine import fit, read_metrics, train_or_load
from rskd_tutorial.engine.cache import SHIPPED_RECORD, run_weights

__all__ = ["TutorialRun", "TutorialSetup", "fit_closure", "cached_metrics", "finish_run", "run_seconds", "run_steps",
           "describe_run", "timing_summary"]

EVAL_FILE = "eval.json"


@dataclass
class TutorialRun:
    """A trained (or cache-loaded) model of a chapter with its run folder and evaluation metrics."""

    model: nn.Module
    run_dir: Path
    metrics: dict[str, Any]
    loaded_from_cache: bool
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TutorialSetup:
    """Everything a tutorial run needs before it trains: the model, its cache key, the training closure
    and the evaluation set (what the teacher store uses to train, ship and re-check a teacher)."""

    model: nn.Module
    key: str
    train: Callable[[Path], None]
    eval_set: Any
    batch_size: int
    device: torch.device
    eval_size: int | None = None     # saliency: the resolution metrics are computed at


def fit_closure(model: nn.Module, train_set: Any, config: Any, *, collate_fn: Callable, device: torch.device | str | None,
                progress: bool = False, verbose: bool = True, **fit_kwargs: Any) -> Callable[[Path], None]:
    """``train(run_dir)``: ``engine.fit(model, train_set, config, run_dir, resume=True, ...)`` -- the one
    training closure of every tutorial run (``fit_kwargs``: ``keep_checkpoint``, ``evaluate``, ...)."""

    def train(run_dir: Path) -> None:
        fit(model, train_set, config, run_dir, collate_fn=collate_fn, resume=True, device=device, progress=progress,
            verbose=verbose, **fit_kwargs)

    return train


def _to_json(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in metrics.items()}


def _from_json(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in metrics.items()}


def cached_metrics(run_dir: str | Path, evaluate: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """``evaluate()``, stored in ``run_dir/eval.json`` beside the weights, so a cache hit does not
    re-evaluate; the file counts only while it is newer than the weights (:func:`engine.cache.run_weights`).
    Array values (precision-recall curves) round-trip as NumPy arrays."""
    path, weights = Path(run_dir) / EVAL_FILE, run_weights(Path(run_dir))
    if path.is_file() and weights is not None and path.stat().st_mtime >= weights.stat().st_mtime:
        return _from_json(json.loads(path.read_text()))
    metrics = dict(evaluate())
    path.write_text(json.dumps(_to_json(metrics)))
    return metrics


def finish_run(trained: nn.Module, key: str, train: Callable[[Path], None], evaluate: Callable[[nn.Module], Mapping[str, Any]],
               device: torch.device, *, evaluated: nn.Module | None = None, verbose: bool = True,
               extra: dict[str, Any] | None = None, shipped: bool = True) -> TutorialRun:
    """Train ``trained`` with ``train(run_dir)`` or load it (cache, else teacher store when ``shipped``), then
    ``evaluate(model)`` the ``evaluated`` module (default: ``trained``; e.g. the student inside a Distiller)
    on ``device`` in eval mode, with the metrics cached beside the weights. The one ending of every tutorial run.
    On CUDA the allocator's cached blocks (the run's activations, optimizer moments, evaluation batches) are
    returned afterwards, so that a chapter training dozens of runs holds only the models it keeps."""
    _, run_dir, loaded = train_or_load(trained, key, train, verbose=verbose, shipped=shipped)
    model = (evaluated if evaluated is not None else trained).to(device).eval()
    metrics = cached_metrics(run_dir, lambda: evaluate(model))
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return TutorialRun(model, run_dir, metrics, loaded, run_seconds(run_dir), extra=dict(extra or {}))


def _shipped_record(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SHIPPED_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_seconds(run_dir: Path) -> float:
    """Training wall time of a run folder (sum of its epochs), also for runs loaded from the cache or the
    teacher store (its record)."""
    record = _shipped_record(run_dir)
    if record is not None:
        return float(record.get("train_seconds", 0.0))
    return float(sum(r.get("seconds", 0.0) for r in read_metrics(run_dir) if r.get("kind") == "epoch"))


def run_steps(run_dir: Path) -> int | None:
    """Optimizer steps of a finished run folder (the last epoch record's step; a shipped teacher's record)."""
    record = _shipped_record(run_dir)
    if record is not None:
        return record.get("steps")
    epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    return int(epochs[-1]["step"]) if epochs else None


def describe_run(run: TutorialRun) -> str:
    """Where a chapter's model came from, in one phrase: trained now, loaded from the run cache, or loaded
    from the teacher store (with the record's steps, seconds, hardware and commit)."""
    rec = _shipped_record(run.run_dir)
    if rec is not None:
        return (f"shipped teacher '{rec.get('name')}' (trained {rec.get('steps')} steps in {rec.get('train_seconds', 0):.0f} s "
                f"on {rec.get('hardware')}, commit {str(rec.get('git_commit', '?'))[:9]})")
    return f"{'loaded from the cache' if run.loaded_from_cache else 'trained'} ({run.seconds:.0f} s of training)"


def timing_summary(runs: Sequence[TutorialRun], started: float, banner: str) -> str:
    """A chapter's last line: its wall time, how many runs trained now and how many were loaded (shipped
    teachers among them), and the training time of all its models cold and with the shipped teachers."""
    trained = [r for r in runs if not r.loaded_from_cache]
    shipped = [r for r in runs if _shipped_record(r.run_dir) is not None]
    cold = sum(r.seconds for r in runs)
    return (f"chapter wall time: {time.time() - started:.0f} s | {len(trained)} runs trained in this execution "
            f"({sum(r.seconds for r in trained):.0f} s), {len(runs) - len(trained)} loaded ({len(shipped)} shipped "
            f"teachers) | training time of every model here: {cold:.0f} s cold, "
            f"{cold - sum(r.seconds for r in shipped):.0f} s with the shipped teachers | {banner}")
