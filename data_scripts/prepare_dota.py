#!/usr/bin/env python
"""Convert DOTA v1.0 to horizontal-box COCO json, cutting images into 1024 x 1024 patches.

Dataset: G.-S. Xia et al., "DOTA: A Large-scale Dataset for Object Detection in Aerial Images",
CVPR 2018. 2,806 images (800-4,000 px), 15 classes, oriented boxes. Download by hand from
https://captain-whu.github.io/DOTA/dataset.html (v1.0 images and v1.0 labels) and extract into RAW:

    RAW/train/images/P0000.png ...        RAW/train/labelTxt/P0000.txt ...
    RAW/val/images/P0003.png ...          RAW/val/labelTxt/P0003.txt ...
    (``labelTxt-v1.0/labelTxt/`` or ``labelTxt-v1.0/`` instead of ``labelTxt/`` are accepted too)

A v1.0 label file holds optional header lines ``imagesource:GoogleEarth`` and ``gsd:0.146``, then one
object per line: ``x1 y1 x2 y2 x3 y3 x4 y4 class difficult``. Each polygon becomes its horizontal
bounding box (min/max of the corners); ``difficult = 1`` becomes ``iscrowd = 1``.

Splitting (the standard protocol, as in the DOTA devkit): every image larger than the window is cut
into ``--window`` (1024) px patches with ``--overlap`` (200) px overlap; the last patch in each
direction ends flush with the border (``rskd_tutorial.data.sliding_windows``). A box goes to a patch
when at least ``--keep-fraction`` (0.7) of its area lies inside, and is clipped to the patch. Patches
are written as PNG named ``<image>__<x0>__<y0>.png``; each COCO image entry records
``orig_file_name`` and ``window`` [x0, y0, x1, y1] for merging detections back
(``merge_window_detections``). ``--no-split`` keeps whole images (symlinks).

Output (splits train, val; DOTA is evaluated on val):

    OUT/annotations/instances_{train,val}.json   OUT/images/{train,val}/...

Usage: python data_scripts/prepare_dota.py --root RAW --out OUT [--overwrite] [--copy] [--no-split]
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from rskd_tutorial.data.convert import (
    CocoWriter, ConversionError, atomic_output, base_parser, class_lookup, image_size, place_image,
    read_text, run_main, summary_table,
)
from rskd_tutorial.data.windows import sliding_windows

DOTA_CLASSES = (
    "small-vehicle", "large-vehicle", "plane", "storage-tank", "ship", "harbor", "ground-track-field",
    "soccer-ball-field", "tennis-court", "swimming-pool", "baseball-diamond", "roundabout",
    "basketball-court", "bridge", "helicopter",
)
IMAGE_EXTS = (".png", ".jpg", ".tif", ".bmp")


def parse_dota_txt(path: Path) -> list[tuple[str, tuple[float, float, float, float], int]]:
    """``[(class, (x1, y1, x2, y2) horizontal box, difficult)]`` of a v1.0 label file."""
    objects = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("imagesource", "gsd")):
            continue
        parts = line.split()
        if len(parts) not in (9, 10):
            raise ConversionError(path, f"line {n}: expected 'x1 y1 ... x4 y4 class [difficult]', got {len(parts)} fields")
        try:
            xy = [float(v) for v in parts[:8]]
        except ValueError:
            raise ConversionError(path, f"line {n}: non-numeric coordinate in {line!r}") from None
        diff = parts[9] if len(parts) == 10 else "0"
        if diff not in ("0", "1", "2"):
            raise ConversionError(path, f"line {n}: difficult flag must be 0 or 1, got {diff!r}")
        xs, ys = xy[0::2], xy[1::2]
        objects.append((parts[8], (min(xs), min(ys), max(xs), max(ys)), int(diff != "0")))
    return objects


def _label_dir(split_dir: Path) -> Path:
    for c in ("labelTxt", "labelTxt-v1.0/labelTxt", "labelTxt-v1.0"):
        if (split_dir / c).is_dir():
            return split_dir / c
    raise ConversionError(split_dir, "no label folder: expected labelTxt/ (or labelTxt-v1.0/labelTxt/)")


def convert_split(split: str, split_dir: Path, tmp: Path, args, lookup) -> CocoWriter:
    img_dir = split_dir / "images"
    if not img_dir.is_dir():
        raise ConversionError(split_dir, "images/ folder is missing")
    lab_dir = _label_dir(split_dir)
    labels = sorted(lab_dir.glob("*.txt"))
    if not labels:
        raise ConversionError(lab_dir, "holds no .txt label files")
    w = CocoWriter(DOTA_CLASSES, split)
    for lab in labels:
        img = next((img_dir / (lab.stem + e) for e in IMAGE_EXTS if (img_dir / (lab.stem + e)).is_file()), None)
        if img is None:
            raise ConversionError(lab, f"names image {lab.stem}.png which is missing from {img_dir}")
        W, H = image_size(img)
        objects = []
        for name, (x1, y1, x2, y2), diff in parse_dota_txt(lab):
            cat = lookup(name)
            if cat is None:
                raise ConversionError(lab, f"unknown class {name!r} (known: {', '.join(DOTA_CLASSES)})")
            if x2 <= x1 or y2 <= y1:
                raise ConversionError(lab, f"box of {name} [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has {'x2<=x1' if x2 <= x1 else 'y2<=y1'}")
            c = (max(x1, 0.0), max(y1, 0.0), min(x2, float(W)), min(y2, float(H)))
            if c[2] <= c[0] or c[3] <= c[1]:
                w.dropped += 1
                continue
            if c != (x1, y1, x2, y2):
                w.clipped += 1
            objects.append((cat, c, diff))
        windows = [(0, 0, W, H)] if args.no_split else sliding_windows((H, W), args.window, args.overlap)
        if len(windows) == 1 and windows[0] == (0, 0, W, H):
            rel = f"{split}/{img.name}"
            place_image(img, tmp / "images" / rel, args.copy)
            iid = w.add_image(rel, W, H, orig_file_name=img.name, window=[0, 0, W, H])
            for cat, box, diff in objects:
                w.add_box(iid, cat, box, iscrowd=diff, source=lab)
            continue
        with Image.open(img) as im:
            im.load()
            for x0, y0, x1, y1 in windows:
                rel = f"{split}/{img.stem}__{x0}__{y0}.png"
                im.crop((x0, y0, x1, y1)).save(tmp / "images" / rel, compress_level=1)
                iid = w.add_image(rel, x1 - x0, y1 - y0, orig_file_name=img.name, window=[x0, y0, x1, y1])
                for cat, (bx1, by1, bx2, by2), diff in objects:
                    ix1, iy1, ix2, iy2 = max(bx1, x0), max(by1, y0), min(bx2, x1), min(by2, y1)
                    if ix2 <= ix1 or iy2 <= iy1:
                        continue
                    frac = (ix2 - ix1) * (iy2 - iy1) / ((bx2 - bx1) * (by2 - by1))
                    if frac < args.keep_fraction:
                        w.notes["boxes left out of a patch (< keep fraction inside)"] = \
                            w.notes.get("boxes left out of a patch (< keep fraction inside)", 0) + 1
                        continue
                    w.add_box(iid, cat, (bx1 - x0, by1 - y0, bx2 - x0, by2 - y0), iscrowd=diff, source=lab,
                              count_clip=False)
    return w


def convert(args) -> str:
    root, out = Path(args.root), Path(args.out)
    if not root.is_dir():
        raise ConversionError(root, "DOTA root not found")
    splits = {s: root / s for s in ("train", "val")}
    for s, d in splits.items():
        if not d.is_dir():
            raise ConversionError(root, f"expected {s}/images and {s}/labelTxt: {d} is missing")
    lookup = class_lookup(DOTA_CLASSES)
    writers = {}
    with atomic_output(out, args.overwrite) as tmp:
        for split, d in splits.items():
            (tmp / "images" / split).mkdir(parents=True)
            w = convert_split(split, d, tmp, args, lookup)
            w.write(tmp)
            writers[split] = w
    return summary_table(writers, f"DOTA v1.0 -> {out}" + ("" if args.no_split else f" ({args.window} px patches, {args.overlap} px overlap)"))


def build_parser():
    p = base_parser(__doc__)
    p.add_argument("--window", type=int, default=1024, help="patch side in pixels")
    p.add_argument("--overlap", type=int, default=200, help="overlap of neighbouring patches in pixels")
    p.add_argument("--keep-fraction", type=float, default=0.7, help="min. fraction of a box inside a patch")
    p.add_argument("--no-split", action="store_true", help="keep whole images (no patches)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(convert, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
