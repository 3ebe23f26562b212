"""The ``rskd`` command.

::

    rskd info                                  versions, device, profile
    rskd train CONFIG [--out DIR] [--resume | --overwrite] [--set KEY=VALUE ...] [--no-scale-lr]
                                               train what a YAML config describes (any stage of any recipe)
    rskd eval CONFIG CHECKPOINT [--out FILE] [--set KEY=VALUE ...]
                                               evaluate a checkpoint on the config's evaluation split
    rskd synth KIND OUT_DIR --n N --size S     write synthetic scenes (optical | sar | rgbir | saliency)
    rskd recipes                               list the registered recipes
    rskd divergence CONFIG --pairs N           FreqKD's RGB-IR spectral divergence study
    rskd bench [--method M ...]                time the KD terms against the training step
    rskd teachers [--list|--check] [--json]    train and ship the chapters' teachers; list or re-check them
    rskd plan [--profile P] [--calibrate] [--json]
                                               each chapter's runs, image-steps and estimated time; over-budget flags
    rskd --version

Several GPUs: ``torchrun --nproc_per_node=N -m rskd_tutorial.cli train CONFIG``.
Bad input (an unknown config key or ``--set`` key, a wrong type, a missing dataset or checkpoint, an
unreadable checkpoint, a run folder that already holds a run) ends with one line naming the problem and
exit code 2; a loss that stops being finite ends with one line and exit code 1 (the last checkpoint is
intact). The run folder's files are described in :mod:`rskd_tutorial.run_folder`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rskd_tutorial import __version__

EXIT_USAGE = 2
EXIT_FAILED = 1


def _info(_: argparse.Namespace) -> int:
    import torch

    from rskd_tutorial.engine import cache_dir
    from rskd_tutorial.profile import get_profile

    rows = {"rskd_tutorial": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "timm", "pytorch_wavelets", "pywt", "pycocotools", "py_sod_metrics", "numpy"):
        rows[name] = _version_of(name)
    rows["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    rows["cpu threads"] = str(torch.get_num_threads())
    rows["cache"] = str(cache_dir())
    for k, v in rows.items():
        print(f"{k:>16}: {v}")
    print(get_profile().banner())
    return 0


DISTRIBUTIONS = {"pytorch_wavelets": "pytorch-wavelets", "pywt": "PyWavelets", "py_sod_metrics": "pysodmetrics"}


def _version_of(module: str) -> str:
    """A module's installed version from its distribution's metadata (no import: ``pytorch_wavelets``
    imports ``pkg_resources``, which warns and is slow), else from importing it; ``missing`` if absent."""
    from importlib import metadata, util

    if util.find_spec(module) is None:
        return "missing"
    try:
        return metadata.version(DISTRIBUTIONS.get(module, module))
    except metadata.PackageNotFoundError:
        mod = importlib.import_module(module)
        return getattr(mod, "__version__", "installed")


def _out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else Path("runs") / Path(args.config).stem


def _train(args: argparse.Namespace) -> int:
    from rskd_tutorial import run_folder as runs
    from rskd_tutorial.engine.train import distributed_env
    from rskd_tutorial.recipes.registry import load_run_config

    loaded = load_run_config(args.config, args.set)
    out = _out_dir(args)
    main_rank = runs.is_main_rank()
    if main_rank:
        runs.prepare_run_dir(out, resume=args.resume, overwrite=args.overwrite)
    world = distributed_env()[2]
    config, lr = runs.scale_lr(loaded.config, loaded.reference_batch, world, enabled=not args.no_scale_lr)
    loaded.config = config
    loaded.reference_batch = lr.recorded_reference_batch()   # config.yaml reruns as this run, not scaled twice
    if main_rank:
        if lr.reference_batch is not None:
            runs.note(lr.describe())
        if not runs.tensorboard_available():
            runs.note(runs.TENSORBOARD_HINT)
        runs.ensure_synthetic(loaded)
        runs.write_config(out, loaded.resolved(), loaded.source)
        runs.start_session(out, args.argv, world, lr, args.resume)
    _seed_for(config)
    t0, status, metrics = time.perf_counter(), "failed", None
    try:
        kwargs = {"progress": False} if args.no_progress else {}
        metrics = dict(loaded.recipe.train(config, out, args.resume, **kwargs) or {})
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        status = f"failed: {type(e).__name__}"
        raise
    finally:
        if main_rank:
            runs.finish_session(out, status, time.perf_counter() - t0, metrics)
    if main_rank:
        print(json.dumps({"recipe": loaded.recipe.name, "out": str(out), "metrics": metrics}, indent=1))
    return 0


def _seed_for(config: object) -> None:
    """Seed every RNG with ``train.seed`` before the recipe builds its models: the initial weights (and so
    the whole run) are then the same in every process (``engine.fit`` seeds again before training)."""
    from rskd_tutorial.engine.train import seed_everything

    train = getattr(config, "train", None)
    seed_everything(int(getattr(train, "seed", 0)))


def _eval(args: argparse.Namespace) -> int:
    from rskd_tutorial import run_folder as runs
    from rskd_tutorial.engine.evaluate import track_evaluation
    from rskd_tutorial.recipes.registry import load_run_config

    loaded = load_run_config(args.config, args.set)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    runs.ensure_synthetic(loaded)
    t0 = time.perf_counter()
    with track_evaluation(progress=not args.no_progress) as seen:
        metrics = dict(loaded.recipe.evaluate(loaded.config, checkpoint))
    out = Path(args.out) if args.out else (checkpoint if checkpoint.is_dir() else checkpoint.parent) / runs.EVAL_RECORD
    record = runs.write_eval_record(out, config=loaded.source, checkpoint=checkpoint, recipe=loaded.recipe.name,
                                    seen=seen, metrics=metrics, seconds=time.perf_counter() - t0,
                                    overrides=loaded.overrides)
    print(json.dumps(record["metrics"], indent=1))
    runs.note(f"evaluated {checkpoint} on {record['split']} ({record['images']} images) -> {out}", stderr=True)
    return 0


def _recipes(_: argparse.Namespace) -> int:
    from rskd_tutorial.recipes.registry import recipes

    for name, r in sorted(recipes().items()):
        print(f"{name:>18}  {r.description}")
    return 0


def _delegate(module: str, func: str):
    def run(args: argparse.Namespace) -> int:
        fn = getattr(importlib.import_module(module), func)
        return int(fn(args.rest) or 0)
    return run


DELEGATED = {
    "synth": ("rskd_tutorial.data.synthetic", "synth_main"),
    "divergence": ("rskd_tutorial.recipes.freqkd", "divergence_main"),
    "bench": ("rskd_tutorial.bench", "bench_main"),
    "teachers": ("rskd_tutorial.recipes.teachers", "teachers_main"),
    "plan": ("rskd_tutorial.recipes.plan", "plan_main"),
}


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted, e.g. train.epochs=1; the value is read as YAML and "
                        "validated like the file); repeatable")


def build_parser() -> argparse.ArgumentParser:
    """The ``rskd`` argument parser (delegated subcommands parse their own options)."""
    parser = argparse.ArgumentParser(prog="rskd", description="Knowledge distillation for remote sensing "
                                     "(the RSKD Tutorial Book's package).")
    parser.add_argument("--version", action="version", version=f"rskd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device and profile").set_defaults(func=_info)
    p = sub.add_parser("train", help="train what a YAML config describes")
    p.add_argument("config", help="YAML file (see rskd_tutorial/configs/)")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    again.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    _add_set(p)
    p.add_argument("--no-scale-lr", action="store_true",
                   help="keep train.lr as written (default: scale it by the linear rule from the config's "
                        "reference_batch to GPUs x train.batch_size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines only)")
    p.set_defaults(func=_train)
    p = sub.add_parser("eval", help="evaluate a checkpoint (writes eval.json beside it)")
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--out", help="where to write the record (default: eval.json beside the checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_set(p)
    p.set_defaults(func=_eval)
    sub.add_parser("recipes", help="list the registered recipes").set_defaults(func=_recipes)
    for name, module, func, helptext in (
        ("synth", "rskd_tutorial.data.synthetic", "synth_main", "write synthetic scenes (KIND OUT_DIR --n --size --seed)"),
        ("divergence", "rskd_tutorial.recipes.freqkd", "divergence_main", "RGB-IR spectral divergence study"),
        ("bench", "rskd_tutorial.bench", "bench_main", "time the KD terms against the training step"),
        ("teachers", "rskd_tutorial.recipes.teachers", "teachers_main",
         "train and ship the chapters' teachers (--list, --check, --json)"),
        ("plan", "rskd_tutorial.recipes.plan", "plan_main",
         "each chapter's runs and estimated training time in a profile (--profile, --calibrate, --json)"),
    ):
        p = sub.add_parser(name, help=helptext, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate(module, func))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rskd``; returns the exit code (0, 1 training failed, 2 bad input, 130 interrupted)."""
    from rskd_tutorial.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        # a delegated subcommand parses its own options (argparse.REMAINDER would drop a leading --option)
        args = argparse.Namespace(func=_delegate(*DELEGATED[argv[0]]), rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except ConfigError as e:
        return _fail(f"config error: {e}", EXIT_USAGE)
    except (FileNotFoundError, FileExistsError) as e:
        # DatasetNotFoundError says which script prepares the data; RunExistsError names --resume / --overwrite
        return _fail(str(e), EXIT_USAGE)
    except Exception as e:
        code = _known_error(e)
        if code is None:
            raise
        return _fail(str(e), code)
    except KeyboardInterrupt:
        print("rskd: interrupted; the last checkpoint is intact (resume with --resume)", file=sys.stderr)
        return 130


def _known_error(e: Exception) -> int | None:
    """The exit code of an error that is reported in one line (no traceback), or None."""
    from rskd_tutorial.engine.train import NonFiniteLossError
    from rskd_tutorial.models.utils import CheckpointError

    if isinstance(e, CheckpointError):
        return EXIT_USAGE
    if isinstance(e, NonFiniteLossError):
        return EXIT_FAILED
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return EXIT_FAILED          # a full disk: atomic_save kept the previous checkpoint
    return None


def _fail(message: str, code: int) -> int:
    print(f"rskd: {message.splitlines()[0] if message else 'error'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
