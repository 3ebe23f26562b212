"""YAML configs validated into dataclasses, with one-line errors that name the bad key.

``load_yaml(path)`` reads a file with ``yaml.safe_load``; ``parse_config(cls, mapping)`` builds the
dataclass ``cls`` recursively (nested dataclasses, ``Optional``, tuples, lists, dicts, scalars) and
raises :class:`ConfigError` such as ``train.lr: expected float, got str 'fast'`` or
``model.backbon: unknown key (known: arch, backbone, ...)``. The CLI turns it into exit code 2.
``apply_overrides(mapping, ["train.epochs=1", ...])`` sets dotted keys from the command line
(``rskd train CONFIG --set KEY=VALUE``) before validation, so an override is checked like the YAML.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration has an unknown key, a missing key or a value of the wrong type."""


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load`` (no code is ever constructed from a config)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return dict(data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> ``(["train", "lr"], "1e-3")``: the dotted key and the value read as YAML
    (``1`` is an int, ``null`` None, ``[p3, p4]`` a list; strings need no quotes)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or any(not p for p in parts):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=1")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({str(e).splitlines()[0]})") from None
    return parts, value


def apply_overrides(data: Mapping[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``data`` with each ``KEY=VALUE`` of ``overrides`` set (missing intermediate mappings are
    created; validation is left to :func:`parse_config`, whose errors name the dotted key)."""
    out = _deep_copy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[:i + 1])
                raise ConfigError(f"--set {'.'.join(parts)}: {where} is {type(child).__name__} {child!r}, not a mapping")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def to_yaml_data(obj: Any) -> Any:
    """A dataclass config (or plain data) as YAML-safe data: dataclasses to mappings, tuples to lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_yaml_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_yaml_data(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_config(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; every error names the dotted key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in known:
            raise ConfigError(f"{_join(where, key)}: unknown key (known: {', '.join(sorted(known))})")
    kwargs = {key: _coerce(value, hints[key], _join(where, key)) for key, value in data.items()}
    missing = [name for name, f in known.items() if name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{_join(where, missing[0])}: required key is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def config_to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config back to plain YAML-able data."""
    return dataclasses.asdict(obj)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: must not be null")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: expected {' or '.join(_name(a) for a in args)}, got {type(value).__name__} {value!r}")
    if value is None:
        raise ConfigError(f"{where}: must not be null")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return parse_config(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected float, got bool {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # PyYAML reads 1e-4 (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected float, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected int, got {type(value).__name__} {value!r}")
    if tp in (str, bool):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
    return value


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))
