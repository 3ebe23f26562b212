#!/usr/bin/env python
"""Convert FLIR ADAS v2 (thermal frames, with their RGB counterparts where the release pairs them).

Dataset: Teledyne FLIR, "FLIR Thermal Dataset for Algorithm Training (ADAS), version 2", 2022:
26,442 annotated thermal and RGB frames, 15 classes (COCO-style ids). Download by hand (free
registration) from https://www.flir.com/oem/adas/adas-dataset-form/ and extract FLIR_ADAS_v2 as RAW:

    RAW/images_thermal_train/{data/*.jpg, coco.json}    RAW/images_rgb_train/{data/, coco.json}
    RAW/images_thermal_val/{data/*.jpg, coco.json}      RAW/images_rgb_val/{data/, coco.json}
    RAW/video_thermal_test/{data/, coco.json}           RAW/video_rgb_test/{data/, coco.json}   (optional)
    RAW/rgb_to_thermal_vid_map.json                     (optional: {rgb frame: thermal frame})

Splits: ``train`` (images_thermal_train) and ``val`` (images_thermal_val); ``test`` (the video test
set) when present. Only the video frames are time-synchronised RGB/thermal pairs (the train/val RGB
and thermal sets were sampled independently), so only ``test`` entries get a ``paired_file_name``
(from ``rgb_to_thermal_vid_map.json``); use ``CocoDetection(..., return_paired=True)`` on ``test``.

Classes: ``--classes person,bike,car`` (default: the 3-class subset most RGB-T papers report), or
``--classes all`` for every category of the training json (in id order). Objects of other classes
are skipped and counted in the summary.

Output:  OUT/annotations/instances_<split>.json   OUT/images/<split>/ (thermal)   OUT/images/<split>_rgb/

Usage: python data_scripts/prepare_flir.py --root RAW --out OUT [--overwrite] [--copy] [--classes ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from rskd_tutorial.data.convert import (
    CocoWriter, ConversionError, atomic_output, base_parser, class_lookup, convert_coco_split, read_json,
    run_main, summary_table,
)


def _pairing(root: Path, split: str):
    """``image entry -> (rgb path, rgb rel)`` for the video test set, from the official map."""
    cands = [root / "rgb_to_thermal_vid_map.json", root / "video_thermal_test" / "rgb_to_thermal_vid_map.json",
             root / "video_rgb_test" / "rgb_to_thermal_vid_map.json"]
    f = next((c for c in cands if c.is_file()), None)
    if f is None:
        return None
    m = read_json(f)
    if not isinstance(m, dict):
        raise ConversionError(f, "expected a JSON object {rgb frame: thermal frame}")
    inverse = {Path(str(v)).name: Path(str(k)).name for k, v in m.items()}
    rgb_dir = root / "video_rgb_test" / "data"

    def pair(im: dict):
        rgb = inverse.get(Path(im["file_name"]).name)
        if rgb is None or not (rgb_dir / rgb).is_file():
            return None
        return rgb_dir / rgb, f"{split}_rgb/{rgb}"

    return pair


def convert(args) -> str:
    root, out = Path(args.root), Path(args.out)
    if not root.is_dir():
        raise ConversionError(root, "FLIR ADAS v2 root not found")
    plan = {"train": root / "images_thermal_train", "val": root / "images_thermal_val"}
    if (root / "video_thermal_test").is_dir():
        plan["test"] = root / "video_thermal_test"
    for split, d in plan.items():
        if not (d / "coco.json").is_file():
            raise ConversionError(d, "expected coco.json and data/ (FLIR ADAS v2 layout)")
    if args.classes.strip().lower() == "all":
        cats = read_json(plan["train"] / "coco.json")
        if not isinstance(cats, dict) or not isinstance(cats.get("categories"), list):
            raise ConversionError(plan["train"] / "coco.json", "missing or non-list 'categories'")
        classes = tuple(str(c["name"]) for c in sorted(cats["categories"], key=lambda c: c["id"]))
    else:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    if not classes:
        raise ConversionError(root, "--classes is empty")
    writers = {}
    with atomic_output(out, args.overwrite) as tmp:
        for split, d in plan.items():
            w = CocoWriter(classes, split)
            pairing = _pairing(root, split) if split == "test" else None
            convert_coco_split(w, d / "coco.json", [d], tmp / "images", args.copy, class_lookup(classes),
                               skip_unknown=True, pairing=pairing)
            w.notes["images with a paired RGB frame"] = sum("paired_file_name" in im for im in w.images)
            w.write(tmp)
            writers[split] = w
    return summary_table(writers, f"FLIR ADAS v2 -> {out}")


def build_parser():
    p = base_parser(__doc__)
    p.add_argument("--classes", default="person,bike,car", help="comma-separated class names, or 'all'")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(convert, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
