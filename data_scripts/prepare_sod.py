#!/usr/bin/env python
"""Convert an optical remote-sensing salient-object dataset (ORSSD, EORSSD, ORSI-4199) to image/mask folders.

Datasets (download by hand, extract into RAW):

* ORSSD: C. Li, R. Cong, J. Hou, S. Zhang, Y. Qian, S. Kwong, "Nested Network with Two-Stream Pyramid
  for Salient Object Detection in Optical Remote Sensing Images", IEEE TGRS 57(11), 2019.
  800 images (600 train / 200 test): https://li-chongyi.github.io/proj_optical_saliency.html
* EORSSD: Q. Zhang, R. Cong, C. Li, M.-M. Cheng, Y. Fang, X. Cao, Y. Zhao, S. Kwong, "Dense Attention
  Fluid Network for Salient Object Detection in Optical Remote Sensing Images", IEEE TIP 30, 2021.
  2,000 images (1,400 / 600): https://github.com/rmcong/EORSSD-dataset
* ORSI-4199: Z. Tu, C. Wang, C. Li, M. Fan, H. Zhao, B. Luo, "ORSI Salient Object Detection via
  Multiscale Joint Region and Boundary Model", IEEE TGRS 60, 2022. 4,199 images (2,000 / 2,199):
  https://github.com/wchao1213/ORSI-SOD

Accepted raw layouts (the releases differ; for each split S in train, test the first match is used):

    images:  RAW/S-images/  RAW/S_images/  RAW/S-image/  RAW/S/images/  RAW/S/Images/  RAW/S/image/
             RAW/S/Image/   RAW/S/img/     RAW/S/imgs/
    masks:   RAW/S-labels/  RAW/S_labels/  RAW/S-label/  RAW/S-masks/   RAW/S/labels/  RAW/S/GT/
             RAW/S/gt/      RAW/S/masks/   RAW/S/Masks/  RAW/S/mask/    RAW/S/label/   RAW/S/Labels/
    (ORSSD/EORSSD ship train-images/ train-labels/ test-images/ test-labels/; ORSI-4199 train/ and
    test/ with image and ground-truth sub-folders)

Images and masks are matched by file stem (``0001.jpg`` <-> ``0001.png``). An image without its mask or a
mask without its image is an error naming the file (exit 2); ``--skip-unpaired`` converts the pairs only
and lists every file it left out. Masks are binarised at 128 and written as 0/255 PNG; images are
symlinked (``--copy`` copies).

Output:  OUT/{train,test}/images/<name>.<ext>   OUT/{train,test}/masks/<name>.png

Usage: python data_scripts/prepare_sod.py --dataset {orssd,eorssd,orsi4199} --root RAW --out OUT [--overwrite] [--copy]
       [--skip-unpaired]
"""

from __future__ import annotations

import sys
from pathlib import Path

from rskd_tutorial.data.convert import (
    ConversionError, atomic_output, base_parser, find_existing, image_size, place_image, run_main,
    write_mask_png,
)

EXPECTED = {"orssd": (600, 200), "eorssd": (1400, 600), "orsi4199": (2000, 2199)}
IMAGE_DIRS = ("{s}-images", "{s}_images", "{s}-image", "{s}/images", "{s}/Images", "{s}/image", "{s}/Image",
              "{s}/img", "{s}/imgs")
MASK_DIRS = ("{s}-labels", "{s}_labels", "{s}-label", "{s}-masks", "{s}/labels", "{s}/GT", "{s}/gt", "{s}/masks",
             "{s}/Masks", "{s}/mask", "{s}/label", "{s}/Labels")
EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _files(d: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(d.iterdir()):
        if p.suffix.lower() in EXTS and not p.name.startswith("."):
            if p.stem in out:
                raise ConversionError(p, f"two files share the name {p.stem!r} in {d}")
            out[p.stem] = p
    return out


def convert(args) -> str:
    root, out = Path(args.root), Path(args.out)
    if not root.is_dir():
        raise ConversionError(root, f"{args.dataset} root not found")
    rows: list[tuple[str, int, float, int]] = []
    skipped: list[str] = []
    with atomic_output(out, args.overwrite) as tmp:
        for split in ("train", "test"):
            idir = find_existing(root, [c.format(s=split) for c in IMAGE_DIRS], f"{split} image folder")
            mdir = find_existing(root, [c.format(s=split) for c in MASK_DIRS], f"{split} mask folder")
            images, masks = _files(idir), _files(mdir)
            if not images:
                raise ConversionError(idir, "holds no images")
            unpaired = _unpaired(images, masks, idir, mdir, args.skip_unpaired)
            skipped.extend(unpaired)
            paired = {stem: ip for stem, ip in images.items() if stem in masks}
            if not paired:
                raise ConversionError(idir, f"no image has a mask in {mdir}")
            fg = 0.0
            for stem, ip in paired.items():
                w, h = image_size(ip)
                dst = tmp / split / "masks" / f"{stem}.png"
                mw, mh, frac = write_mask_png(masks[stem], dst)
                if (mw, mh) != (w, h):
                    raise ConversionError(masks[stem], f"mask is {mw}x{mh} but its image {ip.name} is {w}x{h}")
                place_image(ip, tmp / split / "images" / ip.name, args.copy)
                fg += frac
            rows.append((split, len(paired), fg / len(paired), len(unpaired)))
    exp = EXPECTED[args.dataset]
    lines = [f"{args.dataset} -> {out}", f"{'split':8}{'pairs':>8}{'expected':>10}{'mean fg':>9}{'skipped':>9}"]
    for (split, n, f, extra), e in zip(rows, exp):
        lines.append(f"{split:8}{n:>8}{e:>10}{f:>9.3f}{extra:>9}")
    lines.extend(f"skipped (--skip-unpaired): {line}" for line in skipped)
    return "\n".join(lines)


def _unpaired(images: dict[str, Path], masks: dict[str, Path], idir: Path, mdir: Path, skip: bool) -> list[str]:
    """One line per image without a mask and per mask without an image; without ``skip`` the first one is a
    :class:`ConversionError` naming the file."""
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if not skip:
        hint = "; --skip-unpaired converts the pairs only"
        if lonely_images:
            raise ConversionError(images[lonely_images[0]], f"has no mask in {mdir} "
                                  f"({len(lonely_images)} images lack one{hint})")
        if lonely_masks:
            raise ConversionError(masks[lonely_masks[0]], f"has no image in {idir} "
                                  f"({len(lonely_masks)} masks lack one{hint})")
    return ([f"{images[s]} (no mask in {mdir})" for s in lonely_images]
            + [f"{masks[s]} (no image in {idir})" for s in lonely_masks])


def build_parser():
    p = base_parser(__doc__)
    p.add_argument("--dataset", required=True, choices=sorted(EXPECTED), help="which release RAW holds")
    p.add_argument("--skip-unpaired", action="store_true",
                   help="convert the image/mask pairs only, listing every image without a mask and mask without an "
                        "image (default: the first one is an error, exit 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(convert, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
