"""Results records: every chapter run writes ``book/results/<NN>_<name>.json``, one row per table row.

Chapter 6 and the tests read these files instead of re-training, so a chapter's printed table and its
JSON must come from the same rows: build the rows with :func:`result_row`, show them with
:func:`rows_table`, store them with :func:`write_results`. A row::

    {"task": "optical-detection", "model": "retinanet-regnetx_002", "role": "kd", "method": "fitnet",
     "metric": "AP50", "split": "test", "seeds": [0, 1, 2], "values": [30.1, 29.4, 31.0],
     "mean": 30.17, "sd": 0.80, "steps": 460, "train_seconds": 150.0, "loaded": false, "extra": {...}}

``role`` is ``teacher``, ``student`` (alone, no KD), ``kd`` or ``other``; ``sd`` is the sample standard
deviation over seeds (0 for one seed).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ROLES", "TASKS", "result_row", "runs_row", "detection_row", "paired_gain", "verdict", "mean_pm", "results_path",
           "rows_table", "labelled_table", "write_results", "read_results", "VAL_PREFIX", "val_prefixed", "chosen_on_val"]

ROLES = ("teacher", "student", "kd", "other")
VAL_PREFIX = "val_"      # a run's metrics on the validation split carry this prefix; unprefixed ones are the test split's
TASKS = ("optical-detection", "sar-detection", "rgb-detection", "ir-detection", "saliency")


def result_row(task: str, model: str, role: str, method: str, metric: str, values: Sequence[float],
               seeds: Sequence[int], *, split: str = "test", steps: int | None = None,
               train_seconds: float | None = None, loaded: bool = False,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One table row over seeds: per-seed ``values`` with their mean and sample standard deviation."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    values = [float(v) for v in values]
    if not values or len(values) != len(seeds):
        raise ValueError(f"need one value per seed, got {len(values)} values for seeds {list(seeds)}")
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"task": task, "model": model, "role": role, "method": method, "metric": metric, "split": split,
            "seeds": [int(s) for s in seeds], "values": values, "mean": mean, "sd": sd, "steps": steps,
            "train_seconds": train_seconds, "loaded": bool(loaded), "extra": dict(extra or {})}


def runs_row(task: str, model: str, role: str, method: str, metric: str, runs: Sequence[Any],
             seeds: Sequence[int], *, key: str, scale: float = 1.0, extra_keys: Sequence[str] = (),
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`result_row` from one trained run per seed (``TutorialRun``: ``metrics``, ``run_dir``,
    ``seconds``, ``loaded_from_cache``): the headline ``metrics[key] * scale`` per seed, the mean of the
    ``extra_keys`` metrics, the run's optimizer steps and its mean training seconds."""
    from rskd_tutorial.recipes.runs import run_steps

    if len(runs) != len(seeds):
        raise ValueError(f"need one run per seed, got {len(runs)} runs for seeds {list(seeds)}")
    more = {k: sum(scale * float(r.metrics[k]) for r in runs) / len(runs) for k in extra_keys}
    more.update(extra or {})
    return result_row(task, model, role, method, metric, [scale * float(r.metrics[key]) for r in runs], seeds,
                      steps=run_steps(runs[0].run_dir), train_seconds=sum(r.seconds for r in runs) / len(runs),
                      loaded=all(r.loaded_from_cache for r in runs), extra=more)


def detection_row(task: str, arch: str, backbone: str, role: str, method: str, runs: Sequence[Any],
                  seeds: Sequence[int]) -> dict[str, Any]:
    """A detection chapter's row: test AP50 x 100 per seed (model ``<arch>-<backbone>``), with the mean mAP
    and APs x 100 in ``extra`` (:func:`runs_row`)."""
    return runs_row(task, f"{arch}-{backbone}", role, method, "AP50", runs, seeds, key="AP50", scale=100.0,
                    extra_keys=("mAP", "APs"))


def paired_gain(row: Mapping[str, Any], base: Mapping[str, Any]) -> tuple[float, float, int]:
    """``row`` minus ``base`` over the seeds both have (a KD student and the student alone of the same seed
    start from the same weights): (mean difference, sample sd of the per-seed differences, seeds paired).
    Without common seeds: the difference of the means, its sd from the two spreads, and 0."""
    by_seed = dict(zip(base["seeds"], base["values"]))
    diffs = [v - by_seed[s] for s, v in zip(row["seeds"], row["values"]) if s in by_seed]
    if not diffs:
        return row["mean"] - base["mean"], math.hypot(row["sd"], base["sd"]), 0
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) if len(diffs) > 1 else 0.0
    return mean, sd, len(diffs)


def verdict(gain: float, sd: float, n_seeds: int) -> str:
    """How a row compares with the student alone, respecting the seeds' spread: ``"above"`` or ``"below"``
    when the paired gain exceeds the sd of the per-seed differences, ``"within noise"`` otherwise, and
    ``"one seed"`` when fewer than two seeds were paired (a demo, not a result)."""
    if n_seeds < 2:
        return "one seed"
    if abs(gain) <= sd:
        return "within noise"
    return "above" if gain > 0 else "below"


def results_path(chapter: str, name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<NN>_<name>.json``; ``root`` defaults to ``$RSKD_RESULTS``, else ``results/`` when run from
    ``book/`` (a chapter), else ``book/results/``."""
    if not (len(chapter) == 2 and chapter.isdigit()):
        raise ValueError(f"chapter must be two digits ('00' ... '06'), got {chapter!r}")
    if root is None:
        env = os.environ.get("RSKD_RESULTS")
        root = Path(env) if env else (Path("results") if Path.cwd().name == "book" else Path("book") / "results")
    return Path(root) / f"{chapter}_{name}.json"


def write_results(chapter: str, name: str, rows: Sequence[Mapping[str, Any]], *, profile: str, device: str,
                  root: str | os.PathLike | None = None) -> Path:
    """Write a chapter's rows (atomically) and return the path."""
    path = results_path(chapter, name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"chapter": chapter, "profile": profile, "device": device, "rows": [dict(r) for r in rows]}
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_results(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every results file under ``root`` (default as :func:`results_path`), sorted by file name."""
    folder = results_path("00", "x", root).parent
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("[0-9][0-9]_*.json"))]


def mean_pm(mean: float | None, sd: float | None, digits: int, n: int = 2, *, sign: bool = False) -> str:
    """``"mean ± sd"`` to ``digits`` decimals (``+`` signed with ``sign``); only the mean for fewer than two
    seeds or without an sd; ``""`` without a mean (None or NaN)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    m = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return m if n < 2 or sd is None or (isinstance(sd, float) and math.isnan(sd)) else f"{m} ± {sd:.{digits}f}"


def rows_table(rows: Sequence[Mapping[str, Any]], precision: int = 1) -> Any:
    """The rows as a DataFrame: mean +- sd, the difference to the student alone of the same task and model
    (per-seed paired, :func:`paired_gain`) with its sd, and the per-seed values (what a chapter displays)."""
    import pandas as pd

    students = {(r["task"], r["model"], r["metric"]): r for r in rows if r["role"] == "student"}
    out = []
    for r in rows:
        base = students.get((r["task"], r["model"], r["metric"]))
        gain = None if base is None or r["role"] in ("student", "teacher") else paired_gain(r, base)
        out.append({"task": r["task"], "model": r["model"], "role": r["role"], "method": r["method"],
                    r["metric"]: mean_pm(r["mean"], r["sd"], precision, len(r["values"])),
                    "Δ vs student": None if gain is None else round(gain[0], precision),
                    "Δ sd": None if gain is None else round(gain[1], precision),
                    "seeds": len(r["seeds"]),
                    "per seed": ", ".join(f"{v:.{precision}f}" for v in r["values"])})
    return pd.DataFrame(out)


def labelled_table(rows: Sequence[Mapping[str, Any]], labels: Sequence[str], *,
                   extra_keys: Sequence[str] = ("mAP", "APs"), precision: int = 1) -> Any:
    """:func:`rows_table` as a chapter shows one model's rows: indexed by ``labels``, without the task and
    model columns, with the mean of each ``extra_keys`` metric as a column."""
    if len(labels) != len(rows):
        raise ValueError(f"need one label per row, got {len(labels)} labels for {len(rows)} rows")
    table = rows_table(rows, precision).drop(columns=["task", "model"])
    table.index = list(labels)
    for k in extra_keys:
        table[k] = [round(float(r["extra"][k]), precision) for r in rows]
    return table


def val_prefixed(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` of the validation split under ``val_`` names, without array values (per-class tensors):
    what a run stores beside its test metrics so that a sweep can be chosen on validation."""
    return {VAL_PREFIX + k: v for k, v in metrics.items() if not hasattr(v, "shape")}


def chosen_on_val(runs: Mapping[Any, Sequence[Any]], metric: str = "AP50") -> Any:
    """The key of ``runs`` ({setting: [run per seed]}) whose runs have the highest mean validation ``metric``
    (``run.metrics["val_AP50"]``): how a grid or a sweep is chosen without looking at the test split that the
    tables report. Ties go to the first key."""
    def val(key: Any) -> float:
        rs = runs[key]
        if not rs:
            raise ValueError(f"no runs for {key!r}")
        return sum(float(r.metrics[VAL_PREFIX + metric]) for r in rs) / len(rs)

    if not runs:
        raise ValueError("chosen_on_val needs at least one setting")
    return max(runs, key=val)
