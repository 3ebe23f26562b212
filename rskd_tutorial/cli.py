"""The ``rskd`` command.

::

    rskd info                                  versions, device, profile
    rskd train CONFIG [--out DIR] [--resume]   train what a YAML config describes (any stage of any recipe)
    rskd eval CONFIG CHECKPOINT                evaluate a checkpoint on the config's evaluation split
    rskd synth KIND OUT_DIR --n N --size S     write synthetic scenes (optical | sar | rgbir | saliency)
    rskd recipes                               list the registered recipes
    rskd divergence CONFIG --pairs N           FreqKD's RGB-IR spectral divergence study
    rskd bench [--method M ...]                time the KD terms against the training step
    rskd teachers [--list|--check] [--json]    train and ship the chapters' teachers; list or re-check them

Several GPUs: ``torchrun --nproc_per_node=N -m rskd_tutorial.cli train CONFIG``.
Bad input (an unknown config key, a wrong type, a missing dataset) ends with one line naming the
problem and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2


def _info(_: argparse.Namespace) -> int:
    import torch

    from rskd_tutorial import __version__
    from rskd_tutorial.engine import cache_dir
    from rskd_tutorial.profile import get_profile

    rows = {"rskd_tutorial": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "timm", "pytorch_wavelets", "pywt", "pycocotools", "py_sod_metrics", "numpy"):
        try:
            mod = importlib.import_module(name)
            rows[name] = getattr(mod, "__version__", "installed")
        except ImportError:
            rows[name] = "missing"
    rows["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    rows["cpu threads"] = str(torch.get_num_threads())
    rows["cache"] = str(cache_dir())
    for k, v in rows.items():
        print(f"{k:>16}: {v}")
    print(get_profile().banner())
    return 0


def _train(args: argparse.Namespace) -> int:
    from rskd_tutorial.recipes.registry import load_config

    recipe, cfg = load_config(args.config)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    metrics = recipe.train(cfg, out, args.resume)
    print(json.dumps({"recipe": recipe.name, "out": str(out), "metrics": dict(metrics or {})}, indent=1))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from rskd_tutorial.recipes.registry import load_config

    recipe, cfg = load_config(args.config)
    metrics = recipe.evaluate(cfg, Path(args.checkpoint))
    print(json.dumps(dict(metrics), indent=1))
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
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rskd", description="Knowledge distillation for remote sensing "
                                     "(the RSKD Tutorial Book's package).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device and profile").set_defaults(func=_info)
    p = sub.add_parser("train", help="train what a YAML config describes")
    p.add_argument("config", help="YAML file (see rskd_tutorial/configs/)")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_train)
    p = sub.add_parser("eval", help="evaluate a checkpoint")
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.set_defaults(func=_eval)
    sub.add_parser("recipes", help="list the registered recipes").set_defaults(func=_recipes)
    for name, module, func, helptext in (
        ("synth", "rskd_tutorial.data.synthetic", "synth_main", "write synthetic scenes (KIND OUT_DIR --n --size --seed)"),
        ("divergence", "rskd_tutorial.recipes.freqkd", "divergence_main", "RGB-IR spectral divergence study"),
        ("bench", "rskd_tutorial.bench", "bench_main", "time the KD terms against the training step"),
        ("teachers", "rskd_tutorial.recipes.teachers", "teachers_main",
         "train and ship the chapters' teachers (--list, --check, --json)"),
    ):
        p = sub.add_parser(name, help=helptext, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate(module, func))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from rskd_tutorial.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        # a delegated subcommand parses its own options (argparse.REMAINDER would drop a leading --option)
        args = argparse.Namespace(func=_delegate(*DELEGATED[argv[0]]), rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"rskd: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as e:  # includes DatasetNotFoundError: its message says which script prepares it
        print(f"rskd: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rskd: interrupted; the last checkpoint is intact (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
