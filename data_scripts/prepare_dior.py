#!/usr/bin/env python
"""Convert DIOR (horizontal boxes) to the package's COCO layout.

Dataset: K. Li, G. Wan, G. Cheng, L. Meng, J. Han, "Object detection in optical remote sensing images:
A survey and a new benchmark", ISPRS J. Photogramm. Remote Sens. 159:296-307, 2020. 23,463 images of
800 x 800 px, 20 classes. Download by hand from the authors' DIOR page (linked from
https://gcheng-nwpu.github.io/ ; Google Drive / Baidu mirrors) and extract the archives into RAW:

    RAW/Annotations/Horizontal Bounding Boxes/00001.xml   (older releases: RAW/Annotations/00001.xml)
    RAW/JPEGImages-trainval/00001.jpg ... 11725.jpg
    RAW/JPEGImages-test/11726.jpg ... 23463.jpg
    RAW/ImageSets/Main/train.txt  val.txt  test.txt       (one image id per line)

Output (splits train, val, test, and trainval = train + val, the split the DS2D2 paper and code train on;
classes in the order the DS2D2 code uses):

    OUT/annotations/instances_{train,val,trainval,test}.json   OUT/images/{train,val,test}/<id>.jpg (symlinks)

``trainval`` reuses the train and val image files (no copies); its image and annotation ids are renumbered
so that both are unique.

Usage: python data_scripts/prepare_dior.py --root RAW --out OUT [--overwrite] [--copy]
"""

from __future__ import annotations

import sys
from pathlib import Path

from rskd_tutorial.data.convert import (
    CocoWriter, ConversionError, atomic_output, base_parser, class_lookup, convert_voc_split, merge_splits,
    read_split_list, run_main, summary_table,
)

DIOR_CLASSES = (
    "Expressway-Service-area", "Expressway-toll-station", "airplane", "airport", "baseballfield",
    "basketballcourt", "bridge", "chimney", "dam", "golffield", "groundtrackfield", "harbor", "overpass",
    "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle", "windmill",
)


def convert(args) -> str:
    root, out = Path(args.root), Path(args.out)
    if not root.is_dir():
        raise ConversionError(root, "DIOR root not found")
    ann_dir = next((d for d in (root / "Annotations" / "Horizontal Bounding Boxes", root / "Annotations")
                    if d.is_dir() and any(d.glob("*.xml"))), None)
    if ann_dir is None:
        raise ConversionError(root, "no annotations: expected 'Annotations/Horizontal Bounding Boxes/*.xml' or 'Annotations/*.xml'")
    lists = root / "ImageSets" / "Main"
    trainval = [root / "JPEGImages-trainval", root / "JPEGImages-trainval" / "JPEGImages-trainval", root / "JPEGImages"]
    test = [root / "JPEGImages-test", root / "JPEGImages-test" / "JPEGImages-test", root / "JPEGImages"]
    plan = {"train": trainval, "val": trainval, "test": test}
    ids = {split: read_split_list(lists / f"{split}.txt") for split in plan}
    lookup = class_lookup(DIOR_CLASSES)
    writers = {}
    with atomic_output(out, args.overwrite) as tmp:
        for split, dirs in plan.items():
            w = CocoWriter(DIOR_CLASSES, split)
            convert_voc_split(w, ids[split], ann_dir, [d for d in dirs if d.is_dir()], tmp / "images",
                              args.copy, lookup, lists / f"{split}.txt")
            w.write(tmp)
            writers[split] = w
        trainval = merge_splits([writers["train"], writers["val"]], "trainval")
        trainval.write(tmp)
    return (summary_table(writers, f"DIOR -> {out}") + f"\ntrainval = train + val: {len(trainval.images)} images, "
            f"{len(trainval.annotations)} boxes (annotations/instances_trainval.json, ids renumbered)")


def main(argv: list[str] | None = None) -> int:
    return run_main(convert, base_parser(__doc__), argv)


if __name__ == "__main__":
    sys.exit(main())
