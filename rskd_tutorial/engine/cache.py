"""Run cache: "load the checkpoint if present, else train".

Teachers (and any run a chapter wants to skip on a re-run) live under ``RSKD_CACHE`` (default
``~/.cache/rskd_tutorial``) in a folder named by what produced them: the run's name, the profile, the
seed and a short hash of every setting that changes the weights. Change a setting and the key
changes, so a stale checkpoint is never loaded; chapters never depend on each other having run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from rskd_tutorial.engine.train import FINAL_WEIGHTS, load_weights


def cache_dir() -> Path:
    """The cache root: ``$RSKD_CACHE`` or ``~/.cache/rskd_tutorial``."""
    return Path(os.environ.get("RSKD_CACHE", Path.home() / ".cache" / "rskd_tutorial")).expanduser()


def run_key(name: str, *, profile: str, seed: int, config: Mapping[str, Any] | None = None) -> str:
    """``<name>/<profile>-s<seed>-<hash>``, the hash over ``config`` and the package version."""
    from rskd_tutorial import __version__

    blob = json.dumps({"config": config or {}, "version": __version__}, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return f"{name}/{profile}-s{seed}-{digest}"


SHIPPED_RECORD = "shipped.json"   # in a run folder whose weights came from the teacher store


def run_weights(run_dir: Path) -> Path | None:
    """What holds a finished run's weights: ``final.pt``, else the teacher-store record it was loaded from
    (``shipped.json``), else ``None``. Caches beside the weights (evaluation results) compare against it."""
    for name in (FINAL_WEIGHTS, SHIPPED_RECORD):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def load_finished(model: nn.Module, run_dir: str | os.PathLike, *, strict: bool = True) -> bool:
    """Load ``run_dir/final.pt`` into ``model`` if that run finished; return whether it had. The one
    "finished before?" test of the cache (:func:`train_or_load`) and of multi-stage recipes whose stages
    live in one run folder (the SCRKD cascade, FreqKD's stage A)."""
    final = Path(run_dir) / FINAL_WEIGHTS
    if not final.is_file():
        return False
    load_weights(model, final, strict=strict)
    return True


def train_or_load(model: nn.Module, key: str, train: Callable[[Path], Any], *, strict: bool = True,
                  verbose: bool = True, shipped: bool = True) -> tuple[nn.Module, Path, bool]:
    """Load ``model``'s weights from the cached run ``key`` if it finished, else from the teacher store
    (:mod:`rskd_tutorial.engine.store`, when a shipped record has this ``key`` and ``shipped`` is true),
    else call ``train(run_dir)``. A run loaded from the store leaves its record as ``run_dir/shipped.json``.

    ``train`` must leave ``run_dir/final.pt`` behind (``engine.fit`` does); call ``fit`` with
    ``resume=True`` inside it so that an interrupted run continues instead of starting over.
    Weights load strictly: a mismatch is an error listing the keys.

    Returns ``(model, run_dir, loaded)`` where ``loaded`` tells whether the cache answered.
    """
    run_dir = cache_dir() / key
    final = run_dir / FINAL_WEIGHTS
    if load_finished(model, run_dir, strict=strict):
        if verbose:
            print(f"loaded cached run {key}")
        return model, run_dir, True
    run_dir.mkdir(parents=True, exist_ok=True)
    if shipped:
        from rskd_tutorial.engine.store import find_shipped, load_shipped

        record = find_shipped(key)
        if record is not None:
            load_shipped(model, record)
            (run_dir / SHIPPED_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
            if verbose:
                print(f"loaded shipped teacher {record['name']} ({record['metric']} {record['value']:.3g} on "
                      f"{record['split']}; trained {record['steps']} steps in {record['train_seconds']:.0f} s on "
                      f"{record['hardware']})")
            return model, run_dir, True
    train(run_dir)
    if not final.is_file():
        raise RuntimeError(f"train() for {key} finished without writing {final}")
    load_weights(model, final, strict=strict)
    return model, run_dir, False
