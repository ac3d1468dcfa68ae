"""Tiny synthetic benchmarks written in each dataset's exact on-disk layout (its dataset.json's facts).

Used by the tests, the demo and the benchmarks: no real dataset can be downloaded here. Label
maps are random rectangles of random classes (stored as the benchmark stores them: VOC as a
palette PNG with 255 borders, Context/ADE/Cityscapes as greyscale PNGs, COCO as raw
stuffthingmaps plus the derived `_labelTrainIds` / `_instanceTrainIds` files); images are
the class colours plus noise. Image sizes vary from image to image on purpose.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from llmseg.datasets import DatasetSpec, get_dataset
from llmseg.io import atomic_path
from llmseg.stage2.pictures.palettes import voc_palette
from llmseg.stage2.pictures.visualize import save_label_png

from .data.convert import (
    COCO_UNUSED_THING_IDS,
    OBJECT_SUFFIX,
    RAW_SUFFIX,
    STUFF_SUFFIX,
    coco_object_table,
    coco_stuff_table,
)
from .data.layouts import layout_reader


def _random_label(rng: np.random.Generator, h: int, w: int, values: np.ndarray, borders: int | None) -> np.ndarray:
    label = np.full((h, w), rng.choice(values), np.int64)
    for _ in range(int(rng.integers(2, 6))):
        y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        y1, x1 = int(rng.integers(y0 + 3, h + 1)), int(rng.integers(x0 + 3, w + 1))
        label[y0:y1, x0:x1] = rng.choice(values)
        if borders is not None:  # VOC marks object boundaries with 255
            label[y0:y1, x0] = borders
            label[y0:y1, x1 - 1] = borders
            label[y0, x0:x1] = borders
            label[y1 - 1, x0:x1] = borders
    return label


def _image_for(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    colours = voc_palette(256).astype(np.int64)
    colours[0] = (90, 90, 90)
    image = colours[label % 256] + rng.integers(-12, 13, size=(*label.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _save(img: Image.Image, path: Path) -> None:
    suffix = path.suffix.lower()
    fmt = "JPEG" if suffix in (".jpg", ".jpeg") else "TIFF" if suffix in (".tif", ".tiff") else "PNG"
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _raw_values(spec: DatasetSpec, storage: str) -> np.ndarray:
    """Label values as stored on disk, before reduce_zero_label / conversion."""
    if storage == "coco":  # raw stuffthingmaps 0..181 never use the 11 unannotated thing ids
        return np.array([v for v in range(182) if v not in COCO_UNUSED_THING_IDS])
    return np.arange(spec.num_classes + (1 if spec.reduce_zero_label else 0))


def write_synthetic_benchmark(
    name: str | DatasetSpec,
    root: str | os.PathLike,
    n_images: int = 4,
    size: int | tuple[int, int] = (48, 64),
    seed: int = 0,
    *,
    extra_unlisted: int = 1,
) -> list[str]:
    """Write `n_images` validation samples of dataset `name` (a name, folder or spec) under data root `root`.

    Folders, suffixes and the split file come from the dataset's layout facts (dataset.json), the
    stem naming and label storage from its layout reader. Returns the stems in evaluation order.
    Split-file layouts also get `extra_unlisted` images that the split file does not list (a reader
    must not pick them up). `size` is the base (H, W); image i is (H + 8 * (i % 2), W + 4 * (i % 3)).
    """
    spec = name if isinstance(name, DatasetSpec) else get_dataset(name)
    reader = layout_reader(spec)
    layout, storage, ignore = reader.layout, reader.label_storage, spec.ignore_index
    base_h, base_w = (size, size) if isinstance(size, int) else size
    if base_h < 8 or base_w < 8:
        raise ValueError("synthetic images must be at least 8x8")
    rng = np.random.default_rng(seed)
    base = spec.data_dir(root)
    img_dir, ann_dir = base / layout.img_dir, base / layout.ann_dir
    values = _raw_values(spec, storage)
    stems: list[str] = []
    total = n_images + (extra_unlisted if layout.split_file else 0)
    for i in range(total):
        stem = reader.stem(i)
        h, w = base_h + 8 * (i % 2), base_w + 4 * (i % 3)
        raw = _random_label(rng, h, w, values, borders=ignore if storage == "palette" else None)
        if storage == "coco":
            raw[rng.random((h, w)) < reader.unlabeled_fraction] = 255  # unlabeled pixels, visible in the image
        image = _image_for(raw, rng)
        _save(Image.fromarray(image), img_dir / f"{stem}{layout.img_suffix}")
        if storage == "palette":
            save_label_png(ann_dir / f"{stem}{layout.seg_map_suffix}", raw, voc_palette())
        elif storage == "coco":
            folder, leaf = ann_dir / Path(stem).parent, Path(stem).name
            _save(Image.fromarray(raw.astype(np.uint8)), folder / f"{leaf}{RAW_SUFFIX}")
            stuff = coco_stuff_table()[raw]
            _save(Image.fromarray(stuff), folder / f"{leaf}{STUFF_SUFFIX}")
            _save(Image.fromarray(coco_object_table()[stuff]), folder / f"{leaf}{OBJECT_SUFFIX}")
        else:
            if reader.unlabeled_fraction:  # unlabeled pixels the image does not show (Cityscapes' void)
                raw[rng.random((h, w)) < reader.unlabeled_fraction] = ignore
            dtype = np.uint16 if storage == "tiff16" else np.uint8  # 16-bit TIFF ids: ade847, pc459
            _save(Image.fromarray(raw.astype(dtype)), ann_dir / f"{stem}{layout.seg_map_suffix}")
        if i < n_images:
            stems.append(stem)
    if layout.split_file:
        split = base / layout.split_file
        listed = sorted(stems, reverse=True)  # split order differs from sorted order on purpose
        with atomic_path(split) as tmp:
            tmp.write_text("\n".join(listed) + "\n", encoding="utf-8")
        return listed
    return sorted(stems)
