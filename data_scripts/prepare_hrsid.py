#!/usr/bin/env python
"""Validate and re-write HRSID (already COCO) in the package's layout.

Dataset: S. Wei, X. Zeng, Q. Qu, M. Wang, H. Su, J. Shi, "HRSID: A High-Resolution SAR Images Dataset
for Ship Detection and Instance Segmentation", IEEE Access 8:120234-120254, 2020. 5,604 SAR images
of 800 x 800 px, 16,951 ships, one class. Download by hand from https://github.com/chaozhong2010/HRSID
and extract into RAW:

    RAW/annotations/train2017.json  RAW/annotations/test2017.json   (COCO, category 'ship')
    RAW/images/*.jpg                 (the release's JPEGImages/ or image/ folder is accepted too)

The json files are validated (every image present, boxes inside the image or clipped, known
category), the category is renamed to id 1 'ship', segmentation polygons are dropped.

Output (splits train, test):  OUT/annotations/instances_{train,test}.json   OUT/images/{train,test}/

Usage: python data_scripts/prepare_hrsid.py --root RAW --out OUT [--overwrite] [--copy]
"""

from __future__ import annotations

import sys
from pathlib import Path

from rskd_tutorial.data.convert import (
    CocoWriter, ConversionError, atomic_output, base_parser, class_lookup, convert_coco_split, run_main,
    summary_table,
)

HRSID_CLASSES = ("ship",)


def convert(args) -> str:
    root, out = Path(args.root), Path(args.out)
    if not root.is_dir():
        raise ConversionError(root, "HRSID root not found")
    image_dirs = [d for d in (root / "images", root / "JPEGImages", root / "image") if d.is_dir()]
    if not image_dirs:
        raise ConversionError(root, "no image folder: expected images/ (or JPEGImages/)")
    files = {"train": root / "annotations" / "train2017.json", "test": root / "annotations" / "test2017.json"}
    for f in files.values():
        if not f.is_file():
            raise ConversionError(f, "annotation file not found")
    writers = {}
    with atomic_output(out, args.overwrite) as tmp:
        for split, f in files.items():
            w = CocoWriter(HRSID_CLASSES, split)
            convert_coco_split(w, f, image_dirs, tmp / "images", args.copy, class_lookup(HRSID_CLASSES))
            w.write(tmp)
            writers[split] = w
    return summary_table(writers, f"HRSID -> {out}")


def main(argv: list[str] | None = None) -> int:
    return run_main(convert, base_parser(__doc__), argv)


if __name__ == "__main__":
    sys.exit(main())
