"""Tiny synthetic benchmarks written in each benchmark's exact on-disk layout (MMSeg layout).

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

from llmseg.datasets import BENCHMARKS, DatasetError
from llmseg.io import atomic_path

from .data.convert import coco_object_table, coco_stuff_table
from .palettes import voc_palette
from .visualize import save_label_png

# raw label values on disk (before reduce_zero_label / conversion) for each layout family
_RAW_RANGE = {
    "pascal_voc": 21,
    "pascal_voc20": 21,
    "pascal_context": 60,
    "pascal_context59": 60,
    "coco_stuff": 182,
    "coco_object": 182,
    "cityscapes": 19,
    "ade20k": 151,
}
_CITIES = ("frankfurt", "lindau", "munster")


def _stem(name: str, i: int) -> str:
    if name.startswith("pascal_voc"):
        return f"2007_{i:06d}"
    if name.startswith("pascal_context"):
        return f"2008_{i:06d}"
    if name.startswith("coco"):
        return f"{i:012d}"
    if name == "ade20k":
        return f"ADE_val_{i + 1:08d}"
    city = _CITIES[i % len(_CITIES)]
    return f"{city}/{city}_000000_{i:06d}"


def _random_label(rng: np.random.Generator, h: int, w: int, values: np.ndarray, borders: bool) -> np.ndarray:
    label = np.full((h, w), rng.choice(values), np.int64)
    for _ in range(int(rng.integers(2, 6))):
        y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        y1, x1 = int(rng.integers(y0 + 3, h + 1)), int(rng.integers(x0 + 3, w + 1))
        label[y0:y1, x0:x1] = rng.choice(values)
        if borders:  # VOC marks object boundaries with 255
            label[y0:y1, x0] = 255
            label[y0:y1, x1 - 1] = 255
            label[y0, x0:x1] = 255
            label[y1 - 1, x0:x1] = 255
    return label


def _image_for(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    colours = voc_palette(256).astype(np.int64)
    colours[0] = (90, 90, 90)
    image = colours[label % 256] + rng.integers(-12, 13, size=(*label.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _save(img: Image.Image, path: Path) -> None:
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def write_synthetic_benchmark(
    name: str,
    root: str | os.PathLike,
    n_images: int = 4,
    size: int | tuple[int, int] = (48, 64),
    seed: int = 0,
    *,
    extra_unlisted: int = 1,
) -> list[str]:
    """Write `n_images` validation samples of benchmark `name` under data root `root`.

    Returns the stems in evaluation order. Split-file layouts also get `extra_unlisted` images
    that the split file does not list (a reader must not pick them up). `size` is the base
    (H, W); image i is (H + 8 * (i % 2), W + 4 * (i % 3)).
    """
    if name not in BENCHMARKS:
        raise DatasetError(f"no synthetic layout for '{name}'; known: {', '.join(BENCHMARKS)}")
    layout = BENCHMARKS[name]["layout"]
    base_h, base_w = (size, size) if isinstance(size, int) else size
    if base_h < 8 or base_w < 8:
        raise ValueError("synthetic images must be at least 8x8")
    rng = np.random.default_rng(seed)
    base = Path(root) / layout.root
    img_dir, ann_dir = base / layout.img_dir, base / layout.ann_dir
    values = np.arange(_RAW_RANGE[name])
    if name.startswith("coco"):  # raw stuffthingmaps never use the 11 unannotated thing ids
        values = np.array([v for v in values if v not in (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)])
    stems: list[str] = []
    total = n_images + (extra_unlisted if layout.split_file else 0)
    for i in range(total):
        stem = _stem(name, i)
        h, w = base_h + 8 * (i % 2), base_w + 4 * (i % 3)
        raw = _random_label(rng, h, w, values, borders=name.startswith("pascal_voc"))
        if name.startswith("coco"):
            raw[rng.random((h, w)) < 0.02] = 255  # unlabeled pixels
        image = _image_for(raw, rng)
        _save(Image.fromarray(image), img_dir / f"{stem}{layout.img_suffix}")
        if name.startswith("pascal_voc"):
            save_label_png(ann_dir / f"{stem}{layout.seg_map_suffix}", raw, voc_palette())
        elif name.startswith("coco"):
            folder = ann_dir / Path(stem).parent
            _save(Image.fromarray(raw.astype(np.uint8)), folder / f"{Path(stem).name}.png")
            stuff = coco_stuff_table()[raw]
            _save(Image.fromarray(stuff), folder / f"{Path(stem).name}_labelTrainIds.png")
            _save(Image.fromarray(coco_object_table()[stuff]), folder / f"{Path(stem).name}_instanceTrainIds.png")
        else:
            if name == "cityscapes":
                raw[rng.random((h, w)) < 0.05] = 255
            _save(Image.fromarray(raw.astype(np.uint8)), ann_dir / f"{stem}{layout.seg_map_suffix}")
        if i < n_images:
            stems.append(stem)
    if layout.split_file:
        split = base / layout.split_file
        listed = sorted(stems, reverse=True)  # split order differs from sorted order on purpose
        with atomic_path(split) as tmp:
            tmp.write_text("\n".join(listed) + "\n", encoding="utf-8")
        return listed
    return sorted(stems)
