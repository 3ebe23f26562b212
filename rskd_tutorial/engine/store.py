"""The teacher store: trained models shipped with the package as ``safetensors`` + a JSON record.

A chapter's teacher is trained once (``rskd teachers``) and committed under
``rskd_tutorial/shipped/<profile>/<name>.safetensors.xz`` beside ``<name>.json``, its record:

``name, task, architecture, profile, config_key, seed, steps, train_seconds, hardware,
package_version, git_commit, metric, value, split, extra, file, bytes, sha256``.

``config_key`` is the run-cache key (:func:`rskd_tutorial.engine.cache.run_key`) of the run that made
it: a chapter that asks for a teacher with that key loads the shipped weights instead of training
(:func:`rskd_tutorial.engine.cache.train_or_load` looks here after the cache). Floating-point tensors
are stored in float16 to keep the package small, and the ``safetensors`` file is compressed with
``lzma`` (lossless, about 11 % smaller for float16 weights; ``xz -dk <name>.safetensors.xz`` gives the
plain file); the recorded metric is the one the *stored* (rounded) weights reach, so
``rskd teachers --check`` can re-measure it exactly. Plain ``.safetensors`` files load too.

``RSKD_SHIPPED`` moves the store (tests write a store of their own).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ShippedTeacherError", "find_shipped", "hardware", "git_commit", "load_shipped",
           "save_shipped", "shipped_records", "shipped_root", "file_sha256"]

class ShippedTeacherError(RuntimeError):
    """A shipped teacher file that does not match its record or its model."""


def shipped_root() -> Path:
    """``$RSKD_SHIPPED`` or the package's own ``shipped/`` folder."""
    env = os.environ.get("RSKD_SHIPPED")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "shipped"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hardware() -> str:
    """What trained a model: the GPU's name, else ``cpu (<threads> threads, <machine>)``."""
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.machine()})"


def git_commit() -> str:
    """The repository's commit (``+dirty`` with uncommitted changes), or ``unknown`` outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _half(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in state.items()}


SUFFIX = ".safetensors.xz"


def save_shipped(model: nn.Module, record: Mapping[str, Any], root: Path | None = None) -> dict[str, Any]:
    """Write ``model``'s state (floats as float16, lzma-compressed safetensors) and ``record`` to
    ``<root>/<profile>/<name>.*``; return the completed record (``file``, ``bytes``, ``sha256`` filled in).
    Both files are replaced atomically; a plain ``.safetensors`` of the same teacher is removed."""
    from safetensors.torch import save

    for k in ("name", "profile", "config_key"):
        if not record.get(k):
            raise ValueError(f"a shipped teacher's record needs {k!r}")
    folder = (root or shipped_root()) / record["profile"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['name']}{SUFFIX}"
    tmp = folder / f".{record['name']}{SUFFIX}.partial"
    blob = save(_half(model.state_dict()), metadata={"config_key": record["config_key"]})
    tmp.write_bytes(lzma.compress(blob, preset=9))
    os.replace(tmp, path)
    (folder / f"{record['name']}.safetensors").unlink(missing_ok=True)
    out = dict(record)
    out.update(file=path.name, bytes=path.stat().st_size, sha256=file_sha256(path))
    jtmp = folder / f".{record['name']}.json.partial"
    jtmp.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(jtmp, folder / f"{record['name']}.json")
    return out


def load_shipped(model: nn.Module, record: Mapping[str, Any], root: Path | None = None) -> nn.Module:
    """Load a shipped teacher into ``model`` strictly (every key, every shape; floats cast to the model's
    dtype). Raises :class:`ShippedTeacherError` when the file is missing or its hash differs from the record."""
    from safetensors.torch import load

    path = (root or shipped_root()) / record["profile"] / record["file"]
    if not path.is_file():
        raise ShippedTeacherError(f"shipped teacher {record['name']!r}: {path} is missing")
    if record.get("sha256") and file_sha256(path) != record["sha256"]:
        raise ShippedTeacherError(f"shipped teacher {record['name']!r}: {path} differs from its record (sha256)")
    blob = path.read_bytes()
    try:
        state = load(lzma.decompress(blob) if path.name.endswith(".xz") else blob)
    except Exception as e:   # lzma and safetensors raise their own error types on a broken file
        raise ShippedTeacherError(f"shipped teacher {record['name']!r}: {path} is not a readable safetensors file ({e})") from e
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ShippedTeacherError(f"shipped teacher {record['name']!r} does not fit the model: missing {missing[:4]}, "
                                  f"unexpected {unexpected[:4]}, wrong shape {wrong[:4]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model


def shipped_records(profile: str | None = None, root: Path | None = None) -> list[dict[str, Any]]:
    """Every record in the store (of one ``profile``, or all), sorted by profile and name."""
    base = root or shipped_root()
    if not base.is_dir():
        return []
    folders = [base / profile] if profile else sorted(p for p in base.iterdir() if p.is_dir())
    out = []
    for folder in folders:
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def find_shipped(config_key: str, root: Path | None = None) -> dict[str, Any] | None:
    """The record whose ``config_key`` is ``config_key``, or ``None``."""
    profile = config_key.split("/")[-1].split("-s")[0] if "/" in config_key else None
    for rec in shipped_records(profile, root):
        if rec.get("config_key") == config_key:
            return rec
    return None
