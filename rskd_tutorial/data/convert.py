"""Shared machinery of the real-dataset converters in ``data_scripts/``.

The scripts stay thin: they read one dataset's raw layout and call these helpers, which

* validate boxes (``x2 <= x1`` is an error; a box reaching outside the image is clipped and counted),
* build COCO json (``CocoWriter``) in the package's on-disk format (see ``rskd_tutorial.data.coco``),
* write into a temporary directory next to ``OUT`` and rename it at the end (``atomic_output``), so
  an interrupted or failed run never leaves a half-written dataset, and an existing ``OUT`` is only
  replaced with ``--overwrite``,
* report bad input as ONE line on stderr naming the file and the defect, exit code 2 (``run_main``),
* print a summary table: images and boxes per split and class.

``data_scripts`` import this module; nothing in the package imports ``data_scripts``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from PIL import Image, UnidentifiedImageError

from .errors import DatasetFormatError

__all__ = [
    "ConversionError", "CocoWriter", "VocObject", "VocRecord", "atomic_output", "base_parser",
    "find_existing", "image_size", "parse_voc_xml", "place_image", "read_json", "read_split_list",
    "read_text", "run_main", "summary_table", "write_mask_png",
]


class ConversionError(Exception):
    """Bad raw input: ``path`` is the offending file, ``defect`` one line saying what is wrong."""

    def __init__(self, path: str | Path, defect: str) -> None:
        self.path = str(path)
        self.defect = " ".join(str(defect).split())  # one line, whatever the cause text holds
        super().__init__(f"{self.path}: {self.defect}")


# ----------------------------------------------------------------------------------------- reading
def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file (a BOM is allowed); undecodable bytes are a ConversionError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConversionError(path, "file not found") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConversionError(path, f"undecodable text: byte 0x{raw[e.start]:02x} at offset {e.start} is not UTF-8") from None


def read_json(path: str | Path) -> object:
    """Parse a JSON file; malformed JSON is a ConversionError naming line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConversionError(path, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def read_split_list(path: str | Path) -> list[str]:
    """Non-empty, stripped lines of a split list (``#`` comments ignored); an empty list is an error."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(path, "split list not found")
    names = [ln.strip() for ln in read_text(path).splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ConversionError(path, "empty split list (no image names)")
    return names


@dataclass
class VocObject:
    name: str
    box: tuple[float, float, float, float]   # xmin, ymin, xmax, ymax as written in the file
    difficult: bool = False


@dataclass
class VocRecord:
    path: Path
    filename: str | None
    width: int | None
    height: int | None
    objects: list[VocObject] = field(default_factory=list)


def parse_voc_xml(path: str | Path) -> VocRecord:
    """Parse a PASCAL-VOC annotation (``<object><name/><bndbox><xmin/>...</bndbox></object>``)."""
    path = Path(path)
    text = read_text(path)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ConversionError(path, f"malformed XML: {e}") from None

    def _num(node: ET.Element, tag: str, what: str) -> float:
        el = node.find(tag)
        if el is None or el.text is None or not el.text.strip():
            raise ConversionError(path, f"{what} lacks <{tag}>")
        try:
            return float(el.text.strip())
        except ValueError:
            raise ConversionError(path, f"{what} has non-numeric <{tag}> {el.text.strip()!r}") from None

    size = root.find("size")
    width = height = None
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        width, height = int(_num(size, "width", "<size>")), int(_num(size, "height", "<size>"))
    fn = root.findtext("filename")
    rec = VocRecord(path=path, filename=fn.strip() if fn else None, width=width, height=height)
    for i, obj in enumerate(root.iter("object")):
        what = f"object {i + 1}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ConversionError(path, f"{what} has no <name>")
        bb = obj.find("bndbox")
        if bb is None:
            raise ConversionError(path, f"{what} ({name}) has no <bndbox>")
        box = tuple(_num(bb, t, f"{what} ({name})") for t in ("xmin", "ymin", "xmax", "ymax"))
        diff = (obj.findtext("difficult") or "0").strip()
        rec.objects.append(VocObject(name=name, box=box, difficult=diff not in ("0", "", "false")))
    return rec


def image_size(path: str | Path, named_by: str | Path | None = None) -> tuple[int, int]:
    """``(width, height)`` from the image header. A missing image is reported against ``named_by``."""
    path = Path(path)
    if not path.is_file():
        if named_by is not None:
            raise ConversionError(named_by, f"names image {path.name} which is missing (expected {path})")
        raise ConversionError(path, "image not found")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise ConversionError(path, f"cannot read image: {e}") from None


def find_existing(root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first of ``root/candidate`` that exists, else a ConversionError listing them all."""
    for c in candidates:
        p = root / c
        if p.exists():
            return p
    raise ConversionError(root, f"{what} not found; expected one of: " + ", ".join(candidates))


# ----------------------------------------------------------------------------------------- writing
class CocoWriter:
    """Collect one split as COCO json: images, validated boxes, categories in the official order."""

    def __init__(self, categories: Sequence[str], split: str) -> None:
        self.categories = list(categories)
        self.split = split
        self._cat_id = {c: i + 1 for i, c in enumerate(self.categories)}
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self._sizes: dict[int, tuple[int, int]] = {}
        self.clipped = 0
        self.dropped = 0
        self.skipped_classes: dict[str, int] = {}
        self.notes: dict[str, int] = {}   # extra summary rows, e.g. boxes cut by DOTA windows

    def add_image(self, file_name: str, width: int, height: int, **extra: object) -> int:
        """Register an image (``file_name`` relative to ``OUT/images``); returns its id."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width),
                            "height": int(height), **extra})
        self._sizes[image_id] = (int(width), int(height))
        return image_id

    def add_box(self, image_id: int, category: str | int, xyxy: Sequence[float], *, iscrowd: int = 0,
                source: str | Path = "", count_clip: bool = True) -> bool:
        """Add a box (xyxy, absolute pixels). Returns False when it was dropped.

        ``x2 <= x1`` or ``y2 <= y1`` raises ConversionError naming ``source``; a box that reaches
        outside the image is clipped (counted in ``clipped`` unless ``count_clip=False``, as for
        boxes cut by a DOTA window), one entirely outside is dropped (counted in ``dropped``).
        """
        cat = category if isinstance(category, int) else self._cat_id.get(category)
        if cat is None or not 1 <= cat <= len(self.categories):
            raise ConversionError(source, f"unknown class {category!r} (known: {', '.join(self.categories)})")
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        if not all(v == v and abs(v) != float("inf") for v in (x1, y1, x2, y2)):
            raise ConversionError(source, f"box {[x1, y1, x2, y2]} has a non-finite coordinate")
        if x2 <= x1 or y2 <= y1:
            which = "x2<=x1" if x2 <= x1 else "y2<=y1"
            raise ConversionError(source, f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] ({self.categories[cat - 1]}) has {which}")
        W, H = self._sizes[image_id]
        cx1, cy1, cx2, cy2 = min(max(x1, 0.0), W), min(max(y1, 0.0), H), min(max(x2, 0.0), W), min(max(y2, 0.0), H)
        if cx2 <= cx1 or cy2 <= cy1:
            self.dropped += count_clip
            return False
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            self.clipped += count_clip
        w, h = cx2 - cx1, cy2 - cy1
        self.annotations.append({
            "id": len(self.annotations) + 1, "image_id": image_id, "category_id": cat,
            "bbox": [round(cx1, 2), round(cy1, 2), round(w, 2), round(h, 2)],
            "area": round(w * h, 2), "iscrowd": int(bool(iscrowd)),
        })
        return True

    def skip_class(self, name: str) -> None:
        """Count an object of a class this conversion does not keep (shown in the summary)."""
        self.skipped_classes[name] = self.skipped_classes.get(name, 0) + 1

    def to_dict(self) -> dict:
        return {
            "info": {"description": f"split {self.split}", "version": "1.0"},
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i + 1, "name": c, "supercategory": "none"} for i, c in enumerate(self.categories)],
        }

    def write(self, out_root: str | Path) -> Path:
        """Write ``out_root/annotations/instances_<split>.json``."""
        path = Path(out_root) / "annotations" / f"instances_{self.split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)
        return path

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per class: ``(boxes, of which iscrowd)``."""
        out = {c: [0, 0] for c in self.categories}
        for a in self.annotations:
            c = out[self.categories[a["category_id"] - 1]]
            c[0] += 1
            c[1] += a["iscrowd"]
        return {k: (v[0], v[1]) for k, v in out.items()}


def place_image(src: str | Path, dst: str | Path, copy: bool = False) -> None:
    """Put ``src`` at ``dst``: an absolute symlink by default, a copy with ``copy=True``."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(os.path.abspath(src), dst)


def write_mask_png(src: str | Path, dst: str | Path, threshold: int = 128) -> tuple[int, int, float]:
    """Read a mask in any format, binarise at ``threshold``, write a 0/255 PNG; returns (w, h, fg fraction)."""
    import numpy as np

    src = Path(src)
    try:
        with Image.open(src) as im:
            a = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as e:
        raise ConversionError(src, f"cannot read mask: {e}") from None
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    m = a >= threshold
    Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).save(dst, compress_level=1)
    return a.shape[1], a.shape[0], float(m.mean())


@contextlib.contextmanager
def atomic_output(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``out``; on success it replaces ``out`` in one rename.

    An existing ``out`` is an error unless ``overwrite``; on any exception the temporary directory is
    removed and ``out`` is left as it was.
    """
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise ConversionError(out, "output already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise ConversionError(out, "output exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.partial-{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{tag}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


# -------------------------------------------------------------------------------------- reporting
def merge_splits(writers: Sequence[CocoWriter], split: str) -> CocoWriter:
    """One split made of others (DIOR's ``trainval`` = ``train`` + ``val``, as the papers train): the same image
    files (``file_name`` unchanged, nothing copied), image and annotation ids renumbered so that both are
    unique in the merged json; an image listed in two of the splits is a :class:`ConversionError`."""
    if not writers:
        raise ValueError("merge_splits needs at least one split")
    merged = CocoWriter(writers[0].categories, split)
    seen: dict[str, str] = {}
    for w in writers:
        if w.categories != merged.categories:
            raise ValueError(f"splits {writers[0].split} and {w.split} have different categories")
        new_id = {}
        for im in w.images:
            stem = Path(im["file_name"]).stem
            if stem in seen:
                raise ConversionError(im["file_name"], f"is listed in both {seen[stem]} and {w.split}; "
                                                       f"cannot merge them into {split}")
            seen[stem] = w.split
            extra = {k: v for k, v in im.items() if k not in ("id", "file_name", "width", "height")}
            new_id[im["id"]] = merged.add_image(im["file_name"], im["width"], im["height"], **extra)
        for a in w.annotations:
            merged.annotations.append({**a, "id": len(merged.annotations) + 1, "image_id": new_id[a["image_id"]]})
        merged.clipped += w.clipped
        merged.dropped += w.dropped
    return merged


def summary_table(writers: dict[str, CocoWriter], title: str = "") -> str:
    """Images and boxes per split and class (``n`` or ``n (c crowd)``), clipped and dropped boxes."""
    splits = list(writers)
    cats = next(iter(writers.values())).categories if writers else []
    rows: list[tuple[str, list[str]]] = []
    rows.append(("images", [str(len(w.images)) for w in writers.values()]))
    rows.append(("images without boxes", [
        str(len(w.images) - len({a["image_id"] for a in w.annotations})) for w in writers.values()]))

    def _fmt(n: int, c: int) -> str:
        return f"{n} ({c} crowd)" if c else str(n)

    tot = [(len(w.annotations), sum(a["iscrowd"] for a in w.annotations)) for w in writers.values()]
    rows.append(("boxes", [_fmt(n, c) for n, c in tot]))
    for c in cats:
        rows.append((f"  {c}", [_fmt(*w.counts()[c]) for w in writers.values()]))
    rows.append(("boxes clipped to the image", [str(w.clipped) for w in writers.values()]))
    rows.append(("boxes outside the image (dropped)", [str(w.dropped) for w in writers.values()]))
    skipped = sorted({k for w in writers.values() for k in w.skipped_classes})
    for k in skipped:
        rows.append((f"  not kept: {k}", [str(w.skipped_classes.get(k, 0)) for w in writers.values()]))
    for k in sorted({k for w in writers.values() for k in w.notes}):
        rows.append((k, [str(w.notes.get(k, 0)) for w in writers.values()]))
    w0 = max(len(r[0]) for r in rows) + 2
    widths = [max(len(s), *(len(r[1][i]) for r in rows)) + 2 for i, s in enumerate(splits)]
    lines = [title] if title else []
    lines.append("".ljust(w0) + "".join(s.rjust(wd) for s, wd in zip(splits, widths)))
    for name, vals in rows:
        lines.append(name.ljust(w0) + "".join(v.rjust(wd) for v, wd in zip(vals, widths)))
    return "\n".join(lines)


def base_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every converter shares: ``--root --out [--overwrite] [--copy]``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path, help="the raw dataset as downloaded and extracted")
    p.add_argument("--out", required=True, type=Path, help="output directory (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")
    return p


def run_main(convert: Callable[[argparse.Namespace], str], parser: argparse.ArgumentParser,
             argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``convert(args)`` and print its summary; bad input -> one stderr line, 2."""
    args = parser.parse_args(argv)
    try:
        summary = convert(args)
    except (ConversionError, DatasetFormatError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:
        where = e.filename if e.filename is not None else ""
        print(f"error: {where}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(summary)
    return 0


# ------------------------------------------------------------------------------ shared recipes
def class_lookup(categories: Sequence[str], aliases: dict[str, str] | None = None) -> Callable[[str], str | None]:
    """Case- and separator-insensitive class-name lookup (``Storage-Tank`` -> ``storagetank``)."""
    def norm(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())

    table = {norm(c): c for c in categories}
    for k, v in (aliases or {}).items():
        table[norm(k)] = v
    return lambda name: table.get(norm(name))


def convert_voc_split(writer: CocoWriter, ids: Sequence[str], ann_dir: Path, image_dirs: Sequence[Path],
                      out_images: Path, copy: bool, lookup: Callable[[str], str | None],
                      split_file: Path, ext: str = ".jpg") -> None:
    """Add one split of a PASCAL-VOC layout (``ann_dir/<id>.xml`` + an image in ``image_dirs``).

    VOC coordinates are used as written (``x1 = xmin``, ``x2 = xmax``, the mmdetection >= 2.0
    convention); ``<difficult>1</difficult>`` becomes ``iscrowd = 1``; the image's real size comes
    from its header (the XML ``<size>`` is sometimes wrong in the wild).
    """
    for id_ in ids:
        xml = ann_dir / f"{id_}.xml"
        if not xml.is_file():
            raise ConversionError(split_file, f"lists {id_!r} but its annotation {xml} is missing")
        rec = parse_voc_xml(xml)
        candidates = [d / f"{id_}{ext}" for d in image_dirs]
        if rec.filename:
            candidates += [d / rec.filename for d in image_dirs]
        img = next((c for c in candidates if c.is_file()), None)
        if img is None:
            raise ConversionError(xml, f"names image {rec.filename or id_ + ext} which is missing "
                                       f"(looked in {', '.join(str(d) for d in image_dirs)})")
        w, h = image_size(img)
        rel = f"{writer.split}/{img.name}"
        place_image(img, out_images / rel, copy)
        image_id = writer.add_image(rel, w, h)
        for obj in rec.objects:
            cat = lookup(obj.name)
            if cat is None:
                raise ConversionError(xml, f"unknown class {obj.name!r} (known: {', '.join(writer.categories)})")
            writer.add_box(image_id, cat, obj.box, iscrowd=int(obj.difficult), source=xml)


def convert_coco_split(writer: CocoWriter, ann_file: Path, image_dirs: Sequence[Path], out_images: Path,
                       copy: bool, lookup: Callable[[str], str | None], skip_unknown: bool = False,
                       pairing: Callable[[dict], tuple[Path, str] | None] | None = None) -> None:
    """Validate a COCO json of a real release and re-write it through ``writer``.

    Every image must exist in one of ``image_dirs`` (``file_name`` relative to it); boxes are xywh;
    categories are mapped by name with ``lookup`` (unknown ones raise, or are counted and skipped
    with ``skip_unknown``). ``pairing(image_entry)`` may return ``(rgb_path, rgb_rel)`` to attach a
    ``paired_file_name``.
    """
    data = read_json(ann_file)
    if not isinstance(data, dict):
        raise ConversionError(ann_file, "top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ConversionError(ann_file, f"missing or non-list '{key}'")
    cat_name = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise ConversionError(ann_file, f"category entry {c!r} lacks 'id' or 'name'")
        cat_name[c["id"]] = str(c["name"])
    new_id: dict = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ConversionError(ann_file, f"image entry {im!r} lacks 'id' or 'file_name'")
        src = next((d / im["file_name"] for d in image_dirs if (d / im["file_name"]).is_file()), None)
        if src is None:
            raise ConversionError(ann_file, f"names image {im['file_name']} which is missing "
                                            f"(looked in {', '.join(str(d) for d in image_dirs)})")
        w, h = image_size(src)
        rel = f"{writer.split}/{Path(im['file_name']).name}"
        place_image(src, out_images / rel, copy)
        extra = {}
        if pairing is not None:
            pr = pairing(im)
            if pr is not None:
                place_image(pr[0], out_images / pr[1], copy)
                extra["paired_file_name"] = pr[1]
        new_id[im["id"]] = writer.add_image(rel, w, h, **extra)
    for a in data["annotations"]:
        if not isinstance(a, dict) or any(k not in a for k in ("image_id", "category_id", "bbox")):
            raise ConversionError(ann_file, f"annotation {a!r} lacks image_id/category_id/bbox")
        if a["image_id"] not in new_id:
            raise ConversionError(ann_file, f"annotation {a.get('id')} names unknown image_id {a['image_id']}")
        if a["category_id"] not in cat_name:
            raise ConversionError(ann_file, f"annotation {a.get('id')} has unknown category_id {a['category_id']}")
        bb = a["bbox"]
        if not (isinstance(bb, list) and len(bb) == 4 and all(isinstance(v, (int, float)) for v in bb)):
            raise ConversionError(ann_file, f"annotation {a.get('id')} has bbox {bb!r}, expected [x, y, w, h]")
        name = cat_name[a["category_id"]]
        cat = lookup(name)
        if cat is None:
            if skip_unknown:
                writer.skip_class(name)
                continue
            raise ConversionError(ann_file, f"annotation {a.get('id')} has class {name!r} not in {', '.join(writer.categories)}")
        x, y, w, h = (float(v) for v in bb)
        writer.add_box(new_id[a["image_id"]], cat, (x, y, x + w, y + h), iscrowd=int(a.get("iscrowd", 0)),
                       source=f"{ann_file} (annotation {a.get('id')})")
