#!/usr/bin/env python
"""Convert the KAIST multispectral pedestrian benchmark (paired visible + LWIR frames) to COCO.

Dataset: S. Hwang, J. Park, N. Kim, Y. Choi, I. S. Kweon, "Multispectral Pedestrian Detection:
Benchmark Dataset and Baseline", CVPR 2015. 95k aligned 640 x 512 visible/thermal frame pairs from
12 sequences (set00-set11). Download by hand from https://soonminhwang.github.io/rgbt-ped-detection/
(links in the repository SoonminHwang/rgbt-ped-detection) and extract into RAW:

    RAW/images/set00/V000/visible/I00000.jpg   RAW/images/set00/V000/lwir/I00000.jpg
    RAW/annotations/set00/V000/I00000.txt      (Piotr's bbGt version 3 text files)
    RAW/imageSets/train-all-02.txt  test-all-20.txt   (lines like 'set00/V000/I01217')

An annotation file starts with ``% bbGt version=3``; each further line is ``label x y w h occ ...``
(box left/top/width/height in pixels). Label mapping, following the benchmark's evaluation protocol
(one class 'person'; everything else is an ignore region):

    person                       -> person, iscrowd 0 (iscrowd 1 when heavily occluded, occ = 2)
    people, cyclist, person?     -> person, iscrowd 1 (ignore regions: COCOeval neither rewards nor
                                    penalises detections on them)

Height-based subsets ("reasonable": height >= 55 px) are an evaluation choice, not applied here.
Splits: ``train`` from ``--train-list`` (default imageSets/train-all-02.txt), ``test`` from
``--test-list`` (default imageSets/test-all-20.txt).

Output (paired detection format): ``file_name`` is the LWIR frame, ``paired_file_name`` the visible one:

    OUT/annotations/instances_{train,test}.json
    OUT/images/{train,test}/set00_V000_I01217_lwir.jpg   .../set00_V000_I01217_visible.jpg

Usage: python data_scripts/prepare_kaist.py --root RAW --out OUT [--overwrite] [--copy]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from rskd_tutorial.data.convert import (
    CocoWriter, ConversionError, atomic_output, base_parser, image_size, place_image, read_split_list,
    read_text, run_main, summary_table,
)

KAIST_CLASSES = ("person",)
IGNORE_LABELS = ("people", "cyclist", "person?")


def parse_bbgt(path: Path) -> list[tuple[str, tuple[float, float, float, float], int]]:
    """``[(label, (x1, y1, x2, y2), occlusion)]`` of a bbGt v3 file."""
    lines = read_text(path).splitlines()
    if not lines or not lines[0].startswith("% bbGt"):
        raise ConversionError(path, "malformed bbGt file: first line must be '% bbGt version=3'")
    out = []
    for n, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 6:
            raise ConversionError(path, f"line {n}: expected 'label x y w h occ ...', got {line.strip()!r}")
        try:
            x, y, w, h = (float(v) for v in parts[1:5])
            occ = int(float(parts[5]))
        except ValueError:
            raise ConversionError(path, f"line {n}: non-numeric box in {line.strip()!r}") from None
        out.append((parts[0], (x, y, x + w, y + h), occ))
    return out


def _key(entry: str, list_file: Path) -> tuple[str, str, str]:
    m = re.fullmatch(r"(set\d+)[/_\\](V\d+)[/_\\](I\d+)(\.\w+)?", entry.strip())
    if m is None:
        raise ConversionError(list_file, f"entry {entry!r} is not like 'set00/V000/I01217'")
    return m.group(1), m.group(2), m.group(3)


def convert(args) -> str:
    root, out = Path(args.root), Path(args.out)
    for d in ("images", "annotations"):
        if not (root / d).is_dir():
            raise ConversionError(root, f"expected images/setXX/VYYY/{{visible,lwir}} and annotations/setXX/VYYY: {d}/ is missing")
    lists = {"train": root / "imageSets" / args.train_list, "test": root / "imageSets" / args.test_list}
    writers = {}
    with atomic_output(out, args.overwrite) as tmp:
        for split, lf in lists.items():
            w = CocoWriter(KAIST_CLASSES, split)
            for entry in read_split_list(lf):
                s, v, i = _key(entry, lf)
                ann = root / "annotations" / s / v / f"{i}.txt"
                if not ann.is_file():
                    raise ConversionError(lf, f"lists {entry!r} but its annotation {ann} is missing")
                lwir = root / "images" / s / v / "lwir" / f"{i}.jpg"
                vis = root / "images" / s / v / "visible" / f"{i}.jpg"
                W, H = image_size(lwir, named_by=ann)
                image_size(vis, named_by=ann)
                stem = f"{s}_{v}_{i}"
                rel, prel = f"{split}/{stem}_lwir.jpg", f"{split}/{stem}_visible.jpg"
                place_image(lwir, tmp / "images" / rel, args.copy)
                place_image(vis, tmp / "images" / prel, args.copy)
                iid = w.add_image(rel, W, H, paired_file_name=prel)
                for label, box, occ in parse_bbgt(ann):
                    if label == "person":
                        crowd = int(occ >= 2)
                    elif label in IGNORE_LABELS:
                        crowd = 1
                    else:
                        raise ConversionError(ann, f"unknown label {label!r} (expected person, people, cyclist, person?)")
                    w.add_box(iid, "person", box, iscrowd=crowd, source=ann)
            w.write(tmp)
            writers[split] = w
    return summary_table(writers, f"KAIST -> {out} (iscrowd = ignore regions: people, cyclist, person?, heavy occlusion)")


def build_parser():
    p = base_parser(__doc__)
    p.add_argument("--train-list", default="train-all-02.txt", help="file in RAW/imageSets/")
    p.add_argument("--test-list", default="test-all-20.txt", help="file in RAW/imageSets/")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(convert, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
