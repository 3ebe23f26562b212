#!/usr/bin/env python
"""Convert SSDD (SAR Ship Detection Dataset, PASCAL-VOC release) to the package's COCO layout.

Dataset: T. Zhang et al., "SAR Ship Detection Dataset (SSDD): Official Release and Comprehensive Data
Analysis", Remote Sensing 13(18):3690, 2021 (first published by J. Li et al., BIGSARDATA 2017).
1,160 images, 2,456 ships, one class. Download by hand from
https://github.com/TianwenZhang0825/Official-SSDD (links in its README) and extract into RAW:

    RAW/Annotations/000001.xml ...            (PASCAL-VOC horizontal boxes, class 'ship')
    RAW/JPEGImages/000001.jpg ...
    RAW/ImageSets/Main/train.txt  test.txt    (one image id per line)
    RAW/ImageSets/Main/test_inshore.txt  test_offshore.txt   (optional; also inshore.txt/offshore.txt)

Without ``ImageSets/Main`` the official rule of the 2021 release is applied: images whose number ends
in 1 or 9 are test images (232), the others train (928).

Output (splits train, test, and test_inshore / test_offshore when those lists exist):

    OUT/annotations/instances_<split>.json   OUT/images/<split>/<id>.jpg (symlinks)

Usage: python data_scripts/prepare_ssdd.py --root RAW --out OUT [--overwrite] [--copy]
"""

from __future__ import annotations

import sys
from pathlib import Path

from rskd_tutorial.data.convert import (
    CocoWriter, ConversionError, atomic_output, base_parser, class_lookup, convert_voc_split,
    read_split_list, run_main, summary_table,
)

SSDD_CLASSES = ("ship",)


def _official_split(ann_dir: Path) -> dict[str, list[str]]:
    ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
    if not ids:
        raise ConversionError(ann_dir, "holds no .xml annotations")
    test = [i for i in ids if i[-1:] in ("1", "9")]
    return {"train": [i for i in ids if i not in set(test)], "test": test}


def convert(args) -> str:
    root, out = Path(args.root), Path(args.out)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    for d in (ann_dir, img_dir):
        if not d.is_dir():
            raise ConversionError(root, f"expected the PASCAL-VOC layout: {d.name}/ is missing")
    lists = root / "ImageSets" / "Main"
    split_files: dict[str, Path] = {}
    if lists.is_dir():
        ids = {s: read_split_list(lists / f"{s}.txt") for s in ("train", "test")}
        split_files = {s: lists / f"{s}.txt" for s in ("train", "test")}
        for split, names in (("test_inshore", ("test_inshore.txt", "inshore.txt")),
                             ("test_offshore", ("test_offshore.txt", "offshore.txt"))):
            f = next((lists / n for n in names if (lists / n).is_file()), None)
            if f is not None:
                ids[split] = read_split_list(f)
                split_files[split] = f
    else:
        ids = _official_split(ann_dir)
        split_files = {s: ann_dir for s in ids}
    lookup = class_lookup(SSDD_CLASSES)
    writers = {}
    with atomic_output(out, args.overwrite) as tmp:
        for split, names in ids.items():
            w = CocoWriter(SSDD_CLASSES, split)
            convert_voc_split(w, names, ann_dir, [img_dir], tmp / "images", args.copy, lookup, split_files[split])
            w.write(tmp)
            writers[split] = w
    return summary_table(writers, f"SSDD -> {out}")


def main(argv: list[str] | None = None) -> int:
    return run_main(convert, base_parser(__doc__), argv)


if __name__ == "__main__":
    sys.exit(main())
