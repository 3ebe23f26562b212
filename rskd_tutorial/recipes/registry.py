"""The recipe registry: what ``rskd train CONFIG`` and ``rskd eval CONFIG CHECKPOINT`` dispatch to.

A full-scale config is a YAML file whose ``recipe:`` key names a registered :class:`Recipe`; the rest
of the file is validated into the recipe's config dataclass (``rskd_tutorial.config.parse_config``).
Each method module in ``rskd_tutorial.recipes`` registers its recipes at import time.

Two optional top-level keys are read here, outside the recipe's dataclass:

* ``recipe:`` (required) -- the registered recipe's name;
* ``reference_batch:`` -- the total batch (GPUs x images per GPU) the config's ``train.lr`` is meant for;
  ``rskd train`` scales the LR by the linear rule to the batch it actually runs (``--no-scale-lr`` keeps it);
* ``synthetic:`` -- a :class:`SyntheticSpec`: ``rskd train`` / ``rskd eval`` first write (or reuse) synthetic
  scenes of that kind at the config's ``data.root`` (the smoke configs ``configs/<method>/synthetic/``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rskd_tutorial.config import ConfigError, apply_overrides, load_yaml, parse_config, to_yaml_data

# modules that register recipes when imported (rskd_tutorial.recipes.<name>)
RECIPE_MODULES = ("detection", "ds2d2", "dipkd", "freqkd", "scrkd")


@dataclass(frozen=True)
class Recipe:
    """A named training procedure.

    * ``config_cls``: dataclass the YAML (minus ``recipe:``) is parsed into.
    * ``train(cfg, out_dir, resume) -> dict``: runs it (through ``engine.fit``), returns final metrics.
    * ``evaluate(cfg, checkpoint) -> dict``: metrics of a checkpoint on the config's evaluation split.
    """

    name: str
    config_cls: type
    train: Callable[[Any, Path, bool], Mapping[str, float]]
    evaluate: Callable[[Any, Path], Mapping[str, float]]
    description: str = ""


_REGISTRY: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    if recipe.name in _REGISTRY and _REGISTRY[recipe.name] is not recipe:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    _REGISTRY[recipe.name] = recipe
    return recipe


def _import_all() -> None:
    for name in RECIPE_MODULES:
        try:
            importlib.import_module(f"rskd_tutorial.recipes.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"rskd_tutorial.recipes.{name}":
                raise


def recipes() -> dict[str, Recipe]:
    """Every registered recipe by name."""
    _import_all()
    return dict(_REGISTRY)


def get_recipe(name: str) -> Recipe:
    available = recipes()
    if name not in available:
        raise ConfigError(f"recipe: {name!r} is not registered; available: {', '.join(sorted(available))}")
    return available[name]


@dataclass
class SyntheticSpec:
    """The ``synthetic:`` block of a smoke config: scenes ``rskd train`` writes at ``data.root`` if missing
    (``data.synthetic.write_scenes``; a complete dataset with the same manifest is reused)."""

    kind: str                         # optical | sar | rgbir | saliency
    n_train: int
    n_eval: int                       # the evaluation split: val (detection kinds) or test (saliency)
    size: int
    seed: int = 0
    n_test: int = 0                   # a third, held-out split (test; val for saliency)

    def __post_init__(self) -> None:
        kinds = ("optical", "sar", "rgbir", "saliency")
        if self.kind not in kinds:
            raise ValueError(f"kind must be one of {kinds}, got {self.kind!r}")
        if self.n_train < 1 or self.n_eval < 1 or self.n_test < 0 or self.size < 8:
            raise ValueError("need n_train >= 1, n_eval >= 1, n_test >= 0 and size >= 8")


@dataclass
class LoadedConfig:
    """A validated config file: its recipe, the recipe's dataclass and the top-level extras."""

    recipe: Recipe
    config: Any
    source: Path
    reference_batch: int | None = None
    overrides: tuple[str, ...] = field(default=())
    synthetic: SyntheticSpec | None = None

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in, as YAML-safe data that ``load_config`` reads back."""
        data: dict[str, Any] = {"recipe": self.recipe.name}
        if self.reference_batch is not None:
            data["reference_batch"] = self.reference_batch
        if self.synthetic is not None:
            data["synthetic"] = to_yaml_data(self.synthetic)
        data.update(to_yaml_data(self.config))
        return data


def load_run_config(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> LoadedConfig:
    """Read a YAML config, apply ``KEY=VALUE`` overrides (``rskd train --set``) and validate the result
    into its recipe's dataclass; every error is a :class:`ConfigError` naming the file and the key."""
    data = apply_overrides(load_yaml(path), list(overrides))
    name = data.pop("recipe", None)
    if not isinstance(name, str):
        raise ConfigError(f"{path}: recipe: required key is missing (the name of a registered recipe)")
    reference = data.pop("reference_batch", None)
    if reference is not None and (isinstance(reference, bool) or not isinstance(reference, int) or reference < 1):
        raise ConfigError(f"{path}: reference_batch: expected a positive int (GPUs x images per GPU), got {reference!r}")
    synthetic = data.pop("synthetic", None)
    recipe = get_recipe(name)
    try:
        config = parse_config(recipe.config_cls, data)
        synthetic = parse_config(SyntheticSpec, synthetic, "synthetic") if synthetic is not None else None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if synthetic is not None and not hasattr(getattr(config, "data", None), "root"):
        raise ConfigError(f"{path}: synthetic: needs a data.root to write the scenes to")
    return LoadedConfig(recipe, config, Path(path), reference, tuple(overrides), synthetic)


def load_config(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> tuple[Recipe, Any]:
    """Read a YAML config (with optional ``KEY=VALUE`` overrides) and validate it into its recipe's dataclass."""
    loaded = load_run_config(path, overrides)
    return loaded.recipe, loaded.config
