"""Run folders of ``rskd train`` / ``rskd eval``: what they hold and how they are (re)started.

A run folder explains itself::

    config.yaml      the resolved config (every default filled in, ``--set`` overrides and LR scaling
                     applied); ``rskd train runs/NAME/config.yaml`` reruns it
    run.json         package version, git commit, torch / Python versions, and one record per session
                     (command, start time, world size, LR rule, final metrics, seconds)
    metrics.jsonl    training lines and epoch summaries (``engine.fit``)
    checkpoint.pt    the resumable state (``--resume``); final.pt the weights at the end
    eval.json        written by ``rskd eval``: split, image count, checkpoint, metrics
    tensorboard/     event files, when the ``tensorboard`` extra is installed

:func:`prepare_run_dir` refuses to train into a folder that already holds a run unless ``--resume``
(continue it) or ``--overwrite`` (delete it first) is given.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rskd_tutorial.config import ConfigError

CONFIG_FILE = "config.yaml"
RUN_RECORD = "run.json"
EVAL_RECORD = "eval.json"
RUN_MARKERS = ("checkpoint.pt", "final.pt")                 # a folder holding one of these holds a run
OWN_FILES = RUN_MARKERS + (CONFIG_FILE, RUN_RECORD, "metrics.jsonl", EVAL_RECORD)
TENSORBOARD_HINT = ("TensorBoard event files are off (tensorboard is not installed); "
                    "pip install 'rskd_tutorial[tb]' to get them in RUN/tensorboard")


def _run_exists_error() -> type[FileExistsError]:
    from rskd_tutorial.engine.train import RunExistsError   # one class for fit() and the CLI

    return RunExistsError


def existing_run(out: Path) -> Path | None:
    """The first checkpoint or final weights inside ``out`` (or its stage sub-folders, two levels down)."""
    out = Path(out)
    if not out.is_dir():
        return None
    for pattern in ("", "*/", "*/*/"):
        for marker in RUN_MARKERS:
            found = sorted(out.glob(f"{pattern}{marker}"))
            if found:
                return found[0]
    return None


def looks_like_run(out: Path) -> bool:
    """Whether ``out`` holds files that ``rskd train`` writes (so that ``--overwrite`` may delete it)."""
    return existing_run(out) is not None or any((Path(out) / name).exists() for name in OWN_FILES)


def prepare_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check ``out`` before a run: a folder that holds a run needs ``resume`` or ``overwrite``; ``overwrite``
    deletes the old run (only a folder that looks like one, never the working directory or its parents)."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    out = Path(out)
    found = existing_run(out)
    if resume:
        return
    if found is not None and not overwrite:
        raise _run_exists_error()(
            f"{out} already holds a run ({found.relative_to(out)}); pass --resume to continue it or "
            f"--overwrite to delete it and start over")
    if overwrite and out.exists():
        clear_run_dir(out)


def clear_run_dir(out: Path) -> None:
    """Delete a run folder for ``--overwrite``, refusing anything that is not plainly one."""
    out = Path(out)
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve() or not out.is_dir():
        raise FileExistsError(f"--overwrite: refusing to delete {out} (the working directory, one of its "
                              f"parents, the home folder or not a folder)")
    if any(out.iterdir()) and not looks_like_run(out):
        raise FileExistsError(f"--overwrite: {out} is not empty and holds no run files ({', '.join(OWN_FILES)}); "
                              f"refusing to delete it")
    shutil.rmtree(out)


def is_main_rank() -> bool:
    """Rank 0 under torchrun (the rank that writes the run folder's records), or a plain process."""
    return int(os.environ.get("RANK", "0")) == 0


def tensorboard_available() -> bool:
    """Whether ``engine.fit`` can write TensorBoard event files (the ``tensorboard`` package is installed)."""
    return importlib.util.find_spec("tensorboard") is not None


# ----------------------------------------------------------------------------------------------
# the linear LR rule
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LRScaling:
    """What :func:`scale_lr` did: for each training block (``train``, ``stage_a.train`` ...) the config's LR
    and the LR trained with, the batches behind the rule, and whether it was applied."""

    blocks: tuple[tuple[str, float, float, int], ...]     # (key, config lr, lr used, total batch)
    reference_batch: int | None
    applied: bool

    @property
    def config_lr(self) -> float:
        return self.blocks[0][1] if self.blocks else float("nan")

    @property
    def lr(self) -> float:
        return self.blocks[0][2] if self.blocks else float("nan")

    def describe(self) -> str:
        if self.reference_batch is None:
            return "the config sets no reference_batch: its learning rates are used as written"
        parts = []
        for key, config_lr, lr, total in self.blocks:
            rule = f"total batch {total} against the config's reference_batch {self.reference_batch}"
            if self.applied:
                parts.append(f"{key}.lr {config_lr:g} -> {lr:g} by the linear rule ({rule})")
            else:
                parts.append(f"{key}.lr {config_lr:g} as written (the linear rule would give "
                             f"{config_lr * total / self.reference_batch:g} for {rule})")
        return "; ".join(parts) + ("; --no-scale-lr keeps the config's values" if self.applied else " (--no-scale-lr)")

    def recorded_reference_batch(self) -> int | None:
        """The ``reference_batch`` for the run folder's ``config.yaml``, whose LRs are those used: the total
        batch they were used at (so that rerunning it on the same GPUs keeps them, on others rescales them),
        or None when there was no rule or the blocks ran at different totals."""
        totals = {t for *_, t in self.blocks}
        if self.reference_batch is None or len(totals) != 1:
            return None
        return totals.pop()

    def as_dict(self) -> dict[str, Any]:
        return {"reference_batch": self.reference_batch, "applied": self.applied,
                "blocks": [{"key": k, "config_lr": a, "lr": b, "total_batch": t} for k, a, b, t in self.blocks]}


def _train_blocks(config: Any, prefix: str = "", depth: int = 2) -> list[tuple[str, Any]]:
    """Every training block of a config: a field holding a dataclass with ``lr``, ``batch_size`` and
    ``epochs`` (a ``TrainConfig``), at the top level or inside a stage (``stage_a.train``)."""
    found = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            continue
        key = f"{prefix}{f.name}"
        if all(hasattr(value, a) for a in ("lr", "batch_size", "epochs")):
            found.append((key, value))
        elif depth > 1:
            found.extend(_train_blocks(value, f"{key}.", depth - 1))
    return found


def _replace_path(config: Any, key: str, value: Any) -> Any:
    head, _, rest = key.partition(".")
    inner = value if not rest else _replace_path(getattr(config, head), rest, value)
    return dataclasses.replace(config, **{head: inner})


def scale_lr(config: Any, reference_batch: int | None, world_size: int, enabled: bool = True) -> tuple[Any, LRScaling]:
    """``config`` with the LR of each training block scaled by ``world_size x batch_size / reference_batch``
    (a copy; the config's own dataclasses are not changed), and what was done. Without ``reference_batch``
    (or with ``enabled=False``) the config is returned as is."""
    blocks = _train_blocks(config) if dataclasses.is_dataclass(config) else []
    apply = reference_batch is not None and enabled and bool(blocks)
    rows = []
    for key, train in blocks:
        total = int(world_size) * int(train.batch_size)
        lr = train.lr * total / reference_batch if apply else train.lr
        rows.append((key, train.lr, lr, total))
        if apply:
            config = _replace_path(config, key, dataclasses.replace(train, lr=lr))
    return config, LRScaling(tuple(rows), reference_batch, apply)


def ensure_synthetic(loaded: Any) -> Path | None:
    """Write (or reuse) the synthetic scenes a smoke config's ``synthetic:`` block asks for at its
    ``data.root``; returns that root, or None for a config without the block."""
    spec = getattr(loaded, "synthetic", None)
    if spec is None:
        return None
    from rskd_tutorial.data.synthetic import MANIFEST, write_scenes

    root = Path(loaded.config.data.root)
    manifest = root / MANIFEST
    before = manifest.read_text(encoding="utf-8") if manifest.is_file() else None
    t0 = time.perf_counter()
    write_scenes(spec.kind, root, n_train=spec.n_train, n_val=spec.n_eval, n_test=spec.n_test, size=spec.size,
                 seed=spec.seed, workers=1, progress=False)
    if manifest.read_text(encoding="utf-8") != before:
        note(f"wrote {spec.n_train + spec.n_eval + spec.n_test} synthetic {spec.kind} scenes of {spec.size} px "
             f"to {root} ({time.perf_counter() - t0:.1f} s)")
    return root


# ----------------------------------------------------------------------------------------------
# records
# ----------------------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def environment() -> dict[str, str]:
    """Package version, git commit, Python and torch versions (what ``run.json`` opens with)."""
    import torch

    from rskd_tutorial import __version__
    from rskd_tutorial.engine.store import git_commit

    return {"rskd_tutorial": __version__, "git_commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__}


def write_config(out: Path, resolved: Mapping[str, Any], source: Path) -> Path:
    """Write the resolved config to ``out/config.yaml`` (a header names where it came from)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILE
    header = f"# resolved by rskd train from {source} on {_now()}; `rskd train {path}` reruns it\n"
    path.write_text(header + yaml.safe_dump(dict(resolved), sort_keys=False), encoding="utf-8")
    return path


def start_session(out: Path, argv: Sequence[str], world_size: int, lr: LRScaling, resume: bool) -> dict[str, Any]:
    """Append this session to ``out/run.json`` (created with the environment on the first session)."""
    path = out / RUN_RECORD
    record = json.loads(path.read_text(encoding="utf-8")) if resume and path.is_file() else {}
    record.update(environment())
    session = {"command": ["rskd", *argv], "started": _now(), "resume": resume, "world_size": world_size,
               "lr": lr.as_dict(), "status": "running"}
    record.setdefault("sessions", []).append(session)
    _write_json(path, record)
    return record


def finish_session(out: Path, status: str, seconds: float, metrics: Mapping[str, Any] | None = None) -> None:
    """Close the last session of ``out/run.json`` with its status (``finished`` / an error), time and metrics."""
    path = out / RUN_RECORD
    if not path.is_file():
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("sessions"):
        record["sessions"][-1].update({"status": status, "seconds": round(seconds, 2), "ended": _now()})
        if metrics is not None:
            record["sessions"][-1]["metrics"] = _jsonable(metrics)
    if metrics is not None and status == "finished":
        record["metrics"] = _jsonable(metrics)
    _write_json(path, record)


def write_eval_record(path: Path, *, config: Path, checkpoint: Path, recipe: str, seen: Sequence[Mapping[str, Any]],
                      metrics: Mapping[str, Any], seconds: float, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``eval.json``: which checkpoint was evaluated on which split (and how many images), and the metrics."""
    last = seen[-1] if seen else {}
    record = {"recipe": recipe, "config": str(config), "overrides": list(overrides), "checkpoint": str(checkpoint),
              "split": last.get("split"), "images": last.get("images"), "dataset": last.get("root"),
              "evaluated": list(seen), "metrics": _jsonable(metrics), "seconds": round(seconds, 2),
              "date": _now(), **environment()}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, record)
    return record


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def note(message: str, *, stderr: bool = False) -> None:
    """One informational line, prefixed like every ``rskd`` message (stdout: errors alone go to stderr, so
    that a failing command's stderr is its one error line; ``stderr=True`` keeps stdout machine-readable)."""
    print(f"rskd: {message}", file=sys.stderr if stderr else sys.stdout, flush=True)
