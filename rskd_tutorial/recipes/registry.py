"""The recipe registry: what ``rskd train CONFIG`` and ``rskd eval CONFIG CHECKPOINT`` dispatch to.

A full-scale config is a YAML file whose ``recipe:`` key names a registered :class:`Recipe`; the rest
of the file is validated into the recipe's config dataclass (``rskd_tutorial.config.parse_config``).
Each method module in ``rskd_tutorial.recipes`` registers its recipes at import time.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rskd_tutorial.config import ConfigError, load_yaml, parse_config

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


def load_config(path: str | os.PathLike) -> tuple[Recipe, Any]:
    """Read a YAML config and validate it into its recipe's dataclass."""
    data = load_yaml(path)
    name = data.pop("recipe", None)
    if not isinstance(name, str):
        raise ConfigError(f"{path}: recipe: required key is missing (the name of a registered recipe)")
    recipe = get_recipe(name)
    try:
        return recipe, parse_config(recipe.config_cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
