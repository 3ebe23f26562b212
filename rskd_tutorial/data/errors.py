"""Typed errors of the data layer: a missing dataset root and a malformed dataset file.

Both messages name the path and say what to do, so a chapter or a training run stops with one
actionable line instead of a traceback deep inside a library.
"""

from __future__ import annotations

from pathlib import Path

# The data script that prepares each known dataset (a lowercase key found in the root's path picks it).
PREPARE_SCRIPTS: dict[str, tuple[str, str]] = {
    "dior": ("DIOR", "python data_scripts/prepare_dior.py --root RAW --out {out}"),
    "dota": ("DOTA", "python data_scripts/prepare_dota.py --root RAW --out {out}"),
    "ssdd": ("SSDD", "python data_scripts/prepare_ssdd.py --root RAW --out {out}"),
    "hrsid": ("HRSID", "python data_scripts/prepare_hrsid.py --root RAW --out {out}"),
    "orssd": ("ORSSD", "python data_scripts/prepare_sod.py --dataset orssd --root RAW --out {out}"),
    "eorssd": ("EORSSD", "python data_scripts/prepare_sod.py --dataset eorssd --root RAW --out {out}"),
    "orsi": ("ORSI-4199", "python data_scripts/prepare_sod.py --dataset orsi4199 --root RAW --out {out}"),
    "kaist": ("KAIST", "python data_scripts/prepare_kaist.py --root RAW --out {out}"),
    "flir": ("FLIR ADAS", "python data_scripts/prepare_flir.py --root RAW --out {out}"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root (or a file it must hold) is missing; the message says how to prepare it."""


class DatasetFormatError(ValueError):
    """A dataset file exists but is malformed; the message names the file and the defect."""

    def __init__(self, path: str | Path, defect: str) -> None:
        self.path = str(path)
        self.defect = defect
        super().__init__(f"{path}: {defect}")


def prepare_hint(root: str | Path, name: str | None = None, synthetic_kind: str | None = None) -> tuple[str, str]:
    """``(dataset name, how to prepare it)`` for a root, guessed from ``name`` or the path."""
    root = Path(root)
    key = (name or "").lower().replace("-", "").replace("_", "")
    candidates = [key] if key else []
    candidates += [p.lower().replace("-", "").replace("_", "") for p in reversed(root.parts)]
    for cand in candidates:
        # eorssd before orssd: "orssd" is a substring of "eorssd"
        for k in sorted(PREPARE_SCRIPTS, key=len, reverse=True):
            if k in cand:
                label, cmd = PREPARE_SCRIPTS[k]
                return label, cmd.format(out=root)
    kind = synthetic_kind or "optical|sar|rgbir|saliency"
    return (name or "dataset"), (
        f"rskd synth {kind} {root} --n N --size S (synthetic scenes), or one of the "
        f"data_scripts/prepare_*.py converters for a real dataset"
    )


def not_found(root: str | Path, expected: str | Path, name: str | None = None,
              synthetic_kind: str | None = None) -> DatasetNotFoundError:
    """Build the :class:`DatasetNotFoundError` for a missing ``expected`` path under ``root``."""
    label, how = prepare_hint(root, name, synthetic_kind)
    return DatasetNotFoundError(
        f"{label} not found at {root}: expected {expected}. Prepare it with: {how}"
    )
