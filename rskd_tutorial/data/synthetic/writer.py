"""Write synthetic scenes to disk in the real datasets' formats (idempotent, atomic, parallel).

Layouts (the same the ``data_scripts`` converters produce)::

    detection (optical, sar)   OUT/annotations/instances_{train,val}.json  OUT/images/{train,val}/000000.jpg|png
    paired (rgbir)             as detection; file_name = IR frame (…_ir.png), paired_file_name = RGB (…_rgb.jpg)
    saliency                   OUT/{train,test}/images/000000.jpg   OUT/{train,test}/masks/000000.png (0/255)
    every kind                 OUT/synth_manifest.json (the arguments; written last)

Image ``i`` of split ``s`` is the in-memory scene ``<kind>_scene(size, image_seed(seed, s, i))``
(``s`` = 0 for train, 1 for the evaluation split); the seed is stored in each COCO image entry.
RGB images are JPEG (quality 95, like DIOR/KAIST/ORSSD, and 20x faster to encode than PNG),
single-channel images (SAR amplitude, thermal IR) and masks are lossless PNG; ``image_format="png"``
writes PNG everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ._common import image_seed
from .optical import OPTICAL_CLASSES, optical_scene
from .rgbir import RGBIR_CLASSES, rgbir_scene
from .saliency import saliency_scene
from .sar import SAR_CLASSES, sar_scene, sar_to_uint8

__all__ = ["KINDS", "MANIFEST", "SPLIT_CODES", "write_scenes", "synth_main", "render_scene", "split_seeds", "third_split"]

KINDS: tuple[str, ...] = ("optical", "sar", "rgbir", "saliency")
MANIFEST = "synth_manifest.json"
FORMAT_VERSION = 1
_CLASSES = {"optical": OPTICAL_CLASSES, "sar": SAR_CLASSES, "rgbir": RGBIR_CLASSES}
_KIND_KWARGS = {
    "optical": {"empty_prob", "density"},
    "sar": {"looks", "inshore", "inshore_prob", "empty_prob"},
    "rgbir": {"night", "empty_prob"},
    "saliency": {"supersample"},
}
_POOL_MIN_IMAGES = 64


def eval_split(kind: str) -> str:
    """The evaluation split's name: ``test`` for saliency (as ORSSD), ``val`` otherwise."""
    return "test" if kind == "saliency" else "val"


def third_split(kind: str) -> str:
    """The held-out split written when ``n_test > 0``: ``val`` for saliency (ORSSD has train/test only), ``test``
    otherwise. Together with :func:`eval_split` every kind gets train / val / test."""
    return "val" if kind == "saliency" else "test"


SPLIT_CODES = {"train": 0, "eval": 1, "third": 2}   # image i of a split has seed image_seed(seed, code, i)


def split_seeds(kind: str, seed: int, n_train: int, n_val: int, n_test: int = 0) -> dict[str, list[int]]:
    """The per-image scene seeds of each split ``write_scenes`` writes (split name -> seeds)."""
    out = {"train": [image_seed(seed, SPLIT_CODES["train"], i) for i in range(n_train)],
           eval_split(kind): [image_seed(seed, SPLIT_CODES["eval"], i) for i in range(n_val)]}
    if n_test:
        out[third_split(kind)] = [image_seed(seed, SPLIT_CODES["third"], i) for i in range(n_test)]
    return out


def _save(arr: np.ndarray, path: Path, fmt: str) -> None:
    im = Image.fromarray(arr)
    if fmt == "jpg":
        im.save(path, format="JPEG", quality=95)
    else:
        im.save(path, format="PNG", compress_level=1)


def render_scene(kind: str, size: int, seed: int, **kw: Any) -> dict:
    """The in-memory scene ``write_scenes`` stores for one image (dispatch on ``kind``)."""
    if kind == "optical":
        return optical_scene(size, seed, **kw)
    if kind == "sar":
        return sar_scene(size, seed, **kw)
    if kind == "rgbir":
        return rgbir_scene(size, seed, **kw)
    if kind == "saliency":
        img, mask = saliency_scene(seed, size, **kw)
        return {"image": img, "mask": mask}
    raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {KINDS}")


def _job(args: tuple) -> dict:
    """Render and write one image; returns its annotation record (runs in a worker process)."""
    kind, size, seed, kw, root, split, idx, fmt = args
    sc = render_scene(kind, size, seed, **kw)
    root = Path(root)
    stem = f"{idx:06d}"
    rgb_ext = "jpg" if fmt == "auto" else "png"
    rec: dict[str, Any] = {"seed": seed}
    if kind == "saliency":
        _save(sc["image"], root / split / "images" / f"{stem}.{rgb_ext}", rgb_ext)
        _save(sc["mask"], root / split / "masks" / f"{stem}.png", "png")
        return rec
    if kind == "optical":
        rel = f"{split}/{stem}.{rgb_ext}"
        _save(sc["image"], root / "images" / rel, rgb_ext)
        h, w = sc["image"].shape[:2]
    elif kind == "sar":
        rel = f"{split}/{stem}.png"
        amp = sar_to_uint8(sc["intensity"])
        _save(amp, root / "images" / rel, "png")
        h, w = amp.shape
        rec["inshore"] = bool(sc["inshore"])
    else:  # rgbir
        rel = f"{split}/{stem}_ir.png"
        _save(sc["ir"], root / "images" / rel, "png")
        prel = f"{split}/{stem}_rgb.{rgb_ext}"
        _save(sc["rgb"], root / "images" / prel, rgb_ext)
        h, w = sc["ir"].shape
        rec["paired_file_name"] = prel
        rec["night"] = bool(sc["night"])
    rec.update(file_name=rel, width=int(w), height=int(h),
               boxes=sc["boxes"].tolist(), labels=[int(v) for v in sc["labels"]])
    return rec


def _coco(kind: str, records: list[dict]) -> dict:
    images, anns = [], []
    for i, r in enumerate(records, start=1):
        entry = {"id": i, "file_name": r["file_name"], "width": r["width"], "height": r["height"], "seed": r["seed"]}
        for k in ("paired_file_name", "night", "inshore"):
            if k in r:
                entry[k] = r[k]
        images.append(entry)
        for (x1, y1, x2, y2), lab in zip(r["boxes"], r["labels"]):
            w, h = x2 - x1, y2 - y1
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": lab, "bbox": [x1, y1, w, h],
                         "area": w * h, "iscrowd": 0})
    cats = [{"id": i + 1, "name": c, "supercategory": "none"} for i, c in enumerate(_CLASSES[kind])]
    return {"info": {"description": f"rskd_tutorial synthetic {kind} scenes"}, "images": images,
            "annotations": anns, "categories": cats}


def _manifest(kind: str, n_train: int, n_val: int, size: int, seed: int, image_format: str, kw: dict,
              n_test: int = 0) -> dict:
    out = {"generator": "rskd_tutorial.data.synthetic", "format_version": FORMAT_VERSION, "kind": kind,
           "n_train": n_train, "n_val": n_val, "size": size, "seed": seed, "image_format": image_format,
           "kind_kwargs": {k: kw[k] for k in sorted(kw)}}
    if n_test:
        out["n_test"] = n_test
    return out


def _is_complete(out: Path, manifest: dict) -> bool:
    mpath = out / MANIFEST
    if not mpath.is_file():
        return False
    try:
        if json.loads(mpath.read_text(encoding="utf-8")) != json.loads(json.dumps(manifest)):
            return False
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    kind = manifest["kind"]
    splits = ("train", eval_split(kind)) + ((third_split(kind),) if manifest.get("n_test") else ())
    if kind == "saliency":
        return all((out / s / "images").is_dir() and (out / s / "masks").is_dir() for s in splits)
    return all((out / "annotations" / f"instances_{s}.json").is_file() for s in splits)


def write_scenes(kind: str, out_dir: str | os.PathLike, *, n_train: int, n_val: int, size: int, seed: int = 0,
                 workers: int | None = None, progress: bool = True, image_format: str = "auto",
                 n_test: int = 0, **kind_kwargs: Any) -> Path:
    """Write ``n_train`` training and ``n_val`` evaluation scenes of ``kind`` to ``out_dir``, and
    ``n_test`` held-out scenes as a third split (``test``; ``val`` for saliency, see :func:`third_split`).

    Splits never share a scene: image ``i`` of a split is rendered from ``image_seed(seed, code, i)``
    with a different ``code`` per split (:data:`SPLIT_CODES`, :func:`split_seeds`).

    ``kind`` is one of ``optical | sar | rgbir | saliency``; ``kind_kwargs`` go to the scene
    function (``looks``/``inshore`` for sar, ``night`` for rgbir, ``empty_prob``/``density`` ...).
    The evaluation split is ``val`` (detection kinds) or ``test`` (saliency); saliency images and
    masks are written at ``size`` (the dataset class resizes; ``saliency_scene`` itself renders
    natively at any resolution).

    Idempotent and safe: if ``out_dir`` already holds a complete dataset written with the same
    arguments (``synth_manifest.json``) it returns at once; otherwise everything is written to a
    temporary directory next to it and moved into place with ``os.replace`` at the end, so a reader
    never sees a half-written dataset. An existing ``out_dir`` is only replaced when it is empty or
    holds a ``synth_manifest.json`` (a previous synthetic dataset), never a real dataset.
    ``workers`` (default: all CPU cores, at most 8) render in parallel when there are at least 64
    images; the output does not depend on it. Returns ``out_dir`` as a ``Path``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {KINDS}")
    bad = set(kind_kwargs) - _KIND_KWARGS[kind]
    if bad:
        raise TypeError(f"{kind} scenes take no argument(s) {sorted(bad)}; allowed: {sorted(_KIND_KWARGS[kind])}")
    if n_train < 0 or n_val < 0 or n_test < 0 or size < 8:
        raise ValueError(f"need n_train, n_val, n_test >= 0 and size >= 8 (got {n_train}, {n_val}, {n_test}, {size})")
    if image_format not in ("auto", "png"):
        raise ValueError(f"image_format must be 'auto' or 'png', got {image_format!r}")
    out = Path(out_dir).absolute()
    manifest = _manifest(kind, int(n_train), int(n_val), int(size), int(seed), image_format, dict(kind_kwargs),
                         int(n_test))
    if _is_complete(out, manifest):
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise FileExistsError(
            f"{out} exists and is not a synthetic dataset written by write_scenes (no {MANIFEST}); "
            f"refusing to replace it - choose another directory or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    splits = [("train", SPLIT_CODES["train"], int(n_train)), (eval_split(kind), SPLIT_CODES["eval"], int(n_val))]
    if n_test:
        splits.append((third_split(kind), SPLIT_CODES["third"], int(n_test)))
    try:
        jobs = []
        for split, code, n in splits:
            if kind == "saliency":
                (tmp / split / "images").mkdir(parents=True)
                (tmp / split / "masks").mkdir(parents=True)
            else:
                (tmp / "images" / split).mkdir(parents=True)
            jobs += [(kind, int(size), image_seed(seed, code, i), dict(kind_kwargs), str(tmp), split, i, image_format)
                     for i in range(n)]
        records = _run(jobs, workers, progress, f"synth {kind} {size}px")
        pos = 0
        for split, _code, n in splits:
            if kind != "saliency":
                (tmp / "annotations").mkdir(exist_ok=True)
                with open(tmp / "annotations" / f"instances_{split}.json", "w", encoding="utf-8") as f:
                    json.dump(_coco(kind, records[pos:pos + n]), f)
            pos += n
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _run(jobs: list[tuple], workers: int | None, progress: bool, desc: str) -> list[dict]:
    from tqdm.auto import tqdm

    n_workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress)
    try:
        if n_workers <= 1 or len(jobs) < _POOL_MIN_IMAGES:
            out = []
            for j in jobs:
                out.append(_job(j))
                bar.update(1)
            return out
        chunk = max(1, min(16, len(jobs) // (4 * n_workers)))
        # fork (Linux): no re-import of __main__, so scripts need no main guard; the workers only run
        # numpy and PIL. Elsewhere spawn (the platform default there).
        method = "fork" if "fork" in get_all_start_methods() and sys.platform.startswith("linux") else "spawn"
        out = []
        try:
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context(method)) as ex:
                for rec in ex.map(_job, jobs, chunksize=chunk):
                    out.append(rec)
                    bar.update(1)
        except BrokenProcessPool:  # e.g. a script without a main guard under spawn: go serial
            warnings.warn("worker processes failed; writing the remaining scenes in this process")
            for j in jobs[len(out):]:
                out.append(_job(j))
                bar.update(1)
        return out
    finally:
        bar.close()


def synth_main(argv: Sequence[str] | None = None) -> int:
    """``rskd synth KIND OUT_DIR --n N --size S --seed K [--val-fraction 0.2] [--looks L]``."""
    p = argparse.ArgumentParser(prog="rskd synth", description="Write synthetic scenes in the real datasets' formats.")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n", type=int, required=True, help="total number of images (train + val/test)")
    p.add_argument("--size", type=int, required=True, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of --n in the evaluation split")
    p.add_argument("--looks", type=float, default=None, help="SAR only: number of looks L of the speckle")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU cores, max 8)")
    p.add_argument("--png", action="store_true", help="write PNG everywhere (default: JPEG for RGB images)")
    a = p.parse_args(argv)
    if not 0 <= a.val_fraction < 1:
        p.error("--val-fraction must be in [0, 1)")
    if a.n < 1:
        p.error("--n must be positive")
    kw: dict[str, Any] = {}
    if a.looks is not None:
        if a.kind != "sar":
            p.error("--looks applies to the sar kind only")
        kw["looks"] = a.looks
    n_val = int(round(a.n * a.val_fraction))
    t0 = time.time()
    try:
        out = write_scenes(a.kind, a.out_dir, n_train=a.n - n_val, n_val=n_val, size=a.size, seed=a.seed,
                           workers=a.workers, image_format="png" if a.png else "auto", **kw)
    except (OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.kind}: {a.n - n_val} train + {n_val} {eval_split(a.kind)} images of {a.size} px in {out} "
          f"({time.time() - t0:.1f} s)")
    return 0
