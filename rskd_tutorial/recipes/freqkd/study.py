"""The RGB-vs-IR spectral divergence study of a frozen trunk (the abstract's 2.4x high/low ratio)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from rskd_tutorial.models.vit import FeatureModel, ViTTrunk
from rskd_tutorial.recipes.freqkd.data import collate_pairs
from rskd_tutorial.spectral import band_divergence, bootstrap_ci, divergence_ratio


def _summary(values: Tensor, n_boot: int, generator: torch.Generator) -> list[float]:
    return list(bootstrap_ci(values, n_boot=n_boot, generator=generator))


@torch.no_grad()
def divergence_study(trunk: nn.Module, pairs: Dataset, *, ir_trunk: nn.Module | None = None,
                     n_pairs: int | None = None, blocks: Sequence[int] | None = None, cutoff: float = 0.25, kind: str = "ideal",
                     band_split: str = "fft", metric: str = "cosine", window: str | None = None,
                     include_input: bool = False, n_boot: int = 1000, batch_size: int = 8, seed: int = 0,
                     device: torch.device | str | None = None, keep_values: bool = False) -> dict[str, Any]:
    """RGB-vs-IR divergence of one frozen trunk's features (or of a pair: ``ir_trunk``), per block and band.

    For the first ``n_pairs`` pairs of ``pairs`` (``(ir, target, rgb)`` items) the trunk runs on
    the RGB frame (reference ``a``) and on the IR frame (``b``); for every tapped block
    :func:`~rskd_tutorial.spectral.band_divergence` gives per-pair low/high divergences, summarised
    by their mean with a bootstrap CI (:func:`~rskd_tutorial.spectral.bootstrap_ci`) and the
    high/low ratio with a paired bootstrap CI (:func:`~rskd_tutorial.spectral.divergence_ratio`);
    the overall ratio is the per-block average (the abstract's "on average across all analysed
    transformer layers"). Pairs are processed batch by batch, so memory does not grow with
    ``n_pairs``.

    Args:
        trunk: a :class:`~rskd_tutorial.models.vit.ViTTrunk` (``blocks`` default: every block) or
            any trunk returning an ``OrderedDict`` of maps (``blocks`` ignored).
        ir_trunk: the trunk that sees the IR frame (default: ``trunk``), e.g. a distilled student of
            the same architecture: the gap it measures is the one stage A's loss acts on.
        include_input: also report the normalised images themselves as a layer named ``"input"``
            (not part of the overall ratio): what the pixels alone would give.
        keep_values: keep the per-pair values (``values[layer] = {"low": [...], "high": [...]}``).

    Returns:
        a JSON-able dict: ``settings``, ``n_pairs``, ``layers`` (per layer ``name``, ``low`` and
        ``high`` = ``[mean, lo, hi]``, ``ratio`` = ``[estimate, lo, hi]``), ``ratio`` (over blocks)
        and ``seconds``.
    """
    t0 = time.perf_counter()
    device = torch.device(device) if device is not None else next(trunk.parameters()).device
    was_training = trunk.training
    ir_trunk = trunk if ir_trunk is None else ir_trunk
    was_training_ir = ir_trunk.training
    trunk.eval().to(device)
    ir_trunk.eval().to(device)
    model = FeatureModel(trunk).to(device)
    n = len(pairs) if n_pairs is None else min(int(n_pairs), len(pairs))
    if n < 2:
        raise ValueError(f"the divergence study needs at least 2 pairs, got {n}")
    loader = DataLoader(Subset(pairs, range(n)), batch_size=batch_size, shuffle=False, collate_fn=collate_pairs)
    kw = dict(cutoff=cutoff, kind=kind, metric=metric, split=band_split, window=window)
    take = None
    if isinstance(trunk, ViTTrunk):
        take = list(range(trunk.depth)) if blocks is None else [b % trunk.depth for b in blocks]
    values: dict[str, dict[str, list[Tensor]]] = {}
    for inputs, _ in loader:
        rgb, ir = (model.normalize(inputs[k].to(device)) for k in ("rgb", "ir"))
        f_rgb = trunk(rgb) if take is None else trunk(rgb, blocks=take)
        f_ir = ir_trunk(ir) if take is None else ir_trunk(ir, blocks=take)
        layers = ([("input", rgb, ir)] if include_input else []) + [(k, f_rgb[k], f_ir[k]) for k in f_rgb]
        for name, a, b in layers:
            d = band_divergence(a.float(), b.float(), **kw)
            slot = values.setdefault(name, {"low": [], "high": []})
            slot["low"].append(d["low"].cpu())
            slot["high"].append(d["high"].cpu())
    trunk.train(was_training)
    ir_trunk.train(was_training_ir)
    g = torch.Generator().manual_seed(seed)
    per_layer, block_divs = [], []
    for name, v in values.items():
        d = {"low": torch.cat(v["low"]), "high": torch.cat(v["high"])}
        row = {"name": name, "low": _summary(d["low"], n_boot, g), "high": _summary(d["high"], n_boot, g),
               "ratio": list(divergence_ratio(d, n_boot=n_boot, generator=g))}
        per_layer.append(row)
        if name != "input":
            block_divs.append(d)
    result: dict[str, Any] = {
        "settings": {**kw, "n_boot": n_boot, "seed": seed, "reference": "rgb",
                     "trunk": getattr(trunk, "arch", type(trunk).__name__), "same_trunk": ir_trunk is trunk},
        "n_pairs": n, "layers": per_layer,
        "ratio": list(divergence_ratio(block_divs, n_boot=n_boot, generator=g)),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if keep_values:
        result["values"] = {name: {b: torch.cat(v[b]).tolist() for b in ("low", "high")} for name, v in values.items()}
    return result
