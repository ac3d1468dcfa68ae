"""Converters that derive the benchmarks' label files from the raw COCO-Stuff annotations.

- coco_stuff: raw stuffthingmaps (0..181, 255 unlabeled) -> `*_labelTrainIds.png` (0..170, 255)
  with the standard 182 -> 171 table: the 11 COCO thing ids that have no annotations
  (0-based 11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90) become 255, the other 171 ids keep their
  order and are renumbered 0..170.
- coco_object: `*_labelTrainIds.png` -> `*_instanceTrainIds.png` (81 classes): the 80 thing train
  ids 0..79 -> 1..80, every stuff id (80..170) and unlabeled (255) -> 0 = background, as the seed
  does (the seed calls this benchmark "coco_stuff").
- ade847: ADE20K-Full (ADE20K_2021_17_01) validation, as the open-vocabulary field prepares it (CAT-Seg's
  prepare_ade20k_full.py): every images/ADE/validation/**/ADE_val_*.jpg with its *_seg.png; the object
  class of a pixel is (R // 10) * 256 + G of the seg PNG, mapped to the 847 train ids by the raw ids in
  label_sets/ade847/ade20k_full_ids.txt (line = train id), everything else 65535; an image whose short
  side is over 512 is resized to 512 (image bilinear, label nearest, cv2); the image is re-saved as
  JPEG (Pillow's default quality) to images_detectron2/validation/, the label as a 16-bit TIFF to
  annotations_detectron2/validation/.
Each output is written atomically; an existing output with identical pixels is left alone, so a
second run is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from llmseg.datasets import Layout, get_dataset
from llmseg.io import atomic_path

from .pool import parallel_map
from .readers import DataError

COCO_UNUSED_THING_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
RAW_SUFFIX = ".png"  # the raw stuffthingmaps: <stem>.png
CONVERTERS = ("coco_stuff", "coco_object", "ade847")  # each writes the label files of the dataset of that name
ADE847_MAX_SHORT_SIDE = 512


def _layout(dataset: str) -> Layout:
    layout = get_dataset(dataset).layout
    if layout is None:  # pragma: no cover - the bundled dataset.json has one
        raise DataError(f"dataset '{dataset}' has no layout in its dataset.json")
    return layout


# the converted files' names, from the datasets' own layout facts (label_sets/<name>/dataset.json)
STUFF_SUFFIX = _layout("coco_stuff").seg_map_suffix
OBJECT_SUFFIX = _layout("coco_object").seg_map_suffix


def coco_stuff_table() -> np.ndarray:
    """Lookup table [256] uint8: raw stuffthingmap id -> COCO-Stuff-171 train id (255 = ignore)."""
    table = np.full(256, 255, np.uint8)
    kept = [i for i in range(182) if i not in COCO_UNUSED_THING_IDS]
    assert len(kept) == 171
    for train_id, raw in enumerate(kept):
        table[raw] = train_id
    return table


def coco_object_table() -> np.ndarray:
    """Lookup table [256] uint8: COCO-Stuff-171 train id -> COCO-Object-81 id (0 = background)."""
    table = np.zeros(256, np.uint8)
    table[:80] = np.arange(1, 81, dtype=np.uint8)
    return table


@dataclass
class ConvertReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _read_values(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{path}: unexpected image mode {img.mode} for a label map")
            return np.array(img)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def ade847_table() -> dict[int, int]:
    """Raw ADE20K-2021 object class id -> ADE-847 train id (the dataset folder's ade20k_full_ids.txt)."""
    from llmseg.datasets import get_dataset

    spec = get_dataset("ade847")
    path = spec.classes_file.parent / "ade20k_full_ids.txt"
    ids = [int(line) for line in path.read_text(encoding="utf-8").split()]
    if len(ids) != spec.num_classes:
        raise DataError(f"{path}: {len(ids)} raw ids for the {spec.num_classes} classes of ade847")
    return {raw: train for train, raw in enumerate(ids)}


def _ade847_size(h: int, w: int) -> tuple[int, int] | None:
    """The (h, w) the field resizes to (short side 512 when it is longer), or None to keep the size."""
    top = ADE847_MAX_SHORT_SIDE
    if w >= h > top:
        return top, round(w / float(h) * top)
    if h >= w > top:
        return round(h / float(w) * top), top
    return None


def _convert_ade847(src: str, dst: str) -> tuple[str, str, str]:
    import cv2

    image_src = Path(src)
    seg_path = image_src.with_name(image_src.name[: -len(".jpg")] + "_seg.png")
    label_dst = Path(dst)  # ROOT/annotations_detectron2/validation/<stem>.tif
    layout = _layout("ade847")
    image_dst = label_dst.parents[len(Path(layout.ann_dir).parts)] / layout.img_dir / image_src.name
    pictures = []
    for path in (seg_path, image_src):
        try:
            with Image.open(path) as picture:
                picture.load()
                pictures.append(np.asarray(picture.convert("RGB") if path == seg_path else picture))
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
    seg, image = pictures
    if seg.shape[:2] != image.shape[:2]:
        raise DataError(f"{seg_path} is {seg.shape[1]}x{seg.shape[0]} but {image_src} is {image.shape[1]}x{image.shape[0]}")
    raw = (seg[:, :, 0].astype(np.int32) // 10) * 256 + seg[:, :, 1].astype(np.int32)
    size = _ade847_size(*raw.shape)
    if size is not None:
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        raw = cv2.resize(raw, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    out = np.full(raw.shape, 65535, np.uint16)
    table = ade847_table()
    for value in np.unique(raw).tolist():
        if value in table:
            out[raw == value] = table[value]
    if label_dst.is_file() and image_dst.is_file():
        try:
            with Image.open(label_dst) as existing:
                if np.array_equal(np.array(existing), out):
                    return ("skipped", dst, "")
        except (OSError, ValueError, SyntaxError):
            pass
    with atomic_path(image_dst) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG")
    with atomic_path(label_dst) as tmp:
        Image.fromarray(out).save(tmp, format="TIFF")
    return ("written", dst, "")


def _convert_one(task: tuple[str, str, str]) -> tuple[str, str, str]:
    """(kind, src, dst) -> (status, dst, message); runs in a worker process."""
    kind, src, dst = task
    try:
        if kind == "ade847":
            return _convert_ade847(src, dst)
        values = _read_values(Path(src)).astype(np.int64)
        if kind == "coco_stuff":
            bad = (values > 181) & (values != 255)
            if bad.any():
                raise DataError(f"{src}: values outside 0..181 and 255: {sorted(np.unique(values[bad]).tolist())[:10]}")
            out = coco_stuff_table()[values]
        else:
            bad = (values > 170) & (values != 255)
            if bad.any():
                raise DataError(f"{src}: values outside 0..170 and 255: {sorted(np.unique(values[bad]).tolist())[:10]}")
            out = coco_object_table()[values]
        target = Path(dst)
        if target.is_file():
            try:
                with Image.open(target) as existing:
                    if np.array_equal(np.array(existing), out):
                        return ("skipped", dst, "")
            except (OSError, ValueError, SyntaxError):
                pass  # unreadable old output: overwrite it
        with atomic_path(target) as tmp:
            Image.fromarray(out).save(tmp, format="PNG")
        return ("written", dst, "")
    except DataError as exc:
        return ("error", dst, str(exc))


def find_conversion_tasks(kind: str, root: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Every (kind, source, target) under ROOT/annotations (all splits found there)."""
    if kind not in CONVERTERS:
        raise DataError(f"unknown converter '{kind}'; choose one of {', '.join(CONVERTERS)}")
    root = Path(root)
    layout = _layout(kind)
    if kind == "ade847":
        raw = root / "images" / "ADE" / "validation"
        if not raw.is_dir():
            raise DataError(f"{root} has no images/ADE/validation/ folder (expected DATA_ROOT/{layout.root} as unpacked)")
        ann = root / layout.ann_dir
        tasks = [(kind, str(p), str(ann / f"{p.stem}{layout.seg_map_suffix}"))
                 for p in sorted(raw.rglob("ADE_val_*.jpg")) if p.with_name(p.stem + "_seg.png").is_file()]
        if not tasks:
            raise DataError(f"no ADE_val_*.jpg with a *_seg.png beside it under {raw}")
        return tasks
    ann_folder = Path(layout.ann_dir).parts[0]  # every split under it: annotations/{train,val}2017
    ann = root / ann_folder
    if not ann.is_dir():
        raise DataError(f"{root} has no {ann_folder}/ folder (expected DATA_ROOT/{layout.root})")
    tasks = []
    for path in sorted(ann.rglob("*.png")):
        name = path.name
        if name.startswith("."):
            continue
        if kind == "coco_stuff":
            if name.endswith(STUFF_SUFFIX) or name.endswith(OBJECT_SUFFIX):
                continue
            dst = path.with_name(name[: -len(RAW_SUFFIX)] + STUFF_SUFFIX)
        else:  # coco_object is derived from coco_stuff's train-id files
            if not name.endswith(STUFF_SUFFIX):
                continue
            dst = path.with_name(name[: -len(STUFF_SUFFIX)] + OBJECT_SUFFIX)
        tasks.append((kind, str(path), str(dst)))
    if not tasks:
        wanted = "raw stuffthingmaps (*.png)" if kind == "coco_stuff" else f"*{STUFF_SUFFIX} (run 'convert coco_stuff' first)"
        raise DataError(f"no {wanted} found under {ann}")
    return tasks


def convert(kind: str, root: str | os.PathLike, *, workers: int | None = None, progress: bool = True) -> ConvertReport:
    """Run one converter over ROOT (DATA_ROOT/coco_stuff164k, or DATA_ROOT/ADE20K_2021_17_01), in parallel, idempotently."""
    tasks = find_conversion_tasks(kind, root)
    report = ConvertReport()
    for status, dst, message in parallel_map(_convert_one, tasks, workers=workers, desc=f"convert {kind}", progress=progress):
        if status == "written":
            report.written.append(dst)
        elif status == "skipped":
            report.skipped.append(dst)
        else:
            report.errors.append(message)
    return report
