"""Read benchmark images and label maps; which files form a dataset is its layout's job (layouts.py).

Labels are class indices, never colours: a palette PNG ('P' mode) decodes to its indices
through `np.array`, a greyscale PNG to its values. `reduce_zero_label` (VOC20, PC59, ADE)
maps 0 -> 255 (ignore) and k -> k - 1 at read time, as MMSegmentation does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from llmseg.datasets import DatasetSpec

from .layouts import layout_reader
from .types import DataError, SampleRef

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# What PIL raises for a file it cannot or will not decode: truncated or corrupt data (OSError,
# ValueError, SyntaxError) and a header claiming more pixels than PIL's limit (DecompressionBombError,
# a plain Exception subclass), which is one bad file to report, never the end of a folder run.
IMAGE_READ_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def list_samples(spec: DatasetSpec, data_root: str | os.PathLike, limit: int | None = None) -> list[SampleRef]:
    """The dataset's evaluation samples, as its layout's reader lists them (split-file order or sorted paths)."""
    return layout_reader(spec).list_samples(data_root, limit)


def load_image(path: str | os.PathLike, *, exif_transpose: bool = False) -> np.ndarray:
    """RGB uint8 [H, W, 3]; raises DataError naming the file when missing or corrupt.

    `exif_transpose` turns a photo the way its EXIF orientation tag says (what a viewer shows): right
    for a user's phone photos, wrong for benchmarks, whose labels are aligned with the stored pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            shown = ImageOps.exif_transpose(img) if exif_transpose else img
            return np.asarray(shown.convert("RGB"), dtype=np.uint8).copy()
    except IMAGE_READ_ERRORS as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def load_label(path: str | os.PathLike, reduce_zero_label: bool = False, ignore_index: int = 255) -> np.ndarray:
    """Class-index map int64 [H, W] (palette PNGs give indices, not colours)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                raise DataError(f"label {path} is a colour image (mode {img.mode}); expected class indices")
            label = np.array(img)
    except DataError:
        raise
    except IMAGE_READ_ERRORS as exc:
        raise DataError(f"cannot read label {path}: {exc}") from exc
    if label.ndim != 2:
        raise DataError(f"label {path} has shape {label.shape}; expected a single-channel map")
    label = label.astype(np.int64)
    if reduce_zero_label:
        zero = label == 0
        label = label - 1
        label[zero] = ignore_index
        label[label == ignore_index - 1] = ignore_index  # 255 stays 255
    return label


def label_range_problem(label: np.ndarray, num_classes: int, ignore_index: int, reduce_zero_label: bool = False) -> str | None:
    """Why a label map holds values that are no class and not `ignore_index` (None: it does not).

    Such a label cannot be scored; `evaluate` refuses it (naming it) or skips it with --skip-bad.
    """
    bad = (label != ignore_index) & ((label < 0) | (label >= num_classes))
    if not bad.any():
        return None
    values = sorted(np.unique(label[bad]).tolist())
    shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
    after = " (after reduce_zero_label)" if reduce_zero_label else ""
    return f"{int(bad.sum())} pixels with values outside 0..{num_classes - 1} and {ignore_index}{after}: {shown}"


class BenchmarkDataset:
    """A torch-style map dataset over a benchmark's validation split (MMSeg layout).

    Items are dicts: image (uint8 HxWx3 RGB), label (int64 HxW, reduce_zero_label applied),
    stem, image_path, label_path, index. With errors="report" a bad sample comes back as a dict
    with an "error" message (and no image/label) instead of raising, so a DataLoader worker
    does not die and the runner can stop or skip with the file named.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        data_root: str | os.PathLike = "data",
        *,
        limit: int | None = None,
        errors: str = "raise",
        samples: list[SampleRef] | None = None,
    ) -> None:
        if errors not in ("raise", "report"):
            raise ValueError(f"errors must be 'raise' or 'report', got {errors!r}")
        self.spec: DatasetSpec | None = spec  # None for a FolderDataset (user images, no labels)
        self.data_root = Path(data_root)
        self.errors = errors
        self.samples = samples if samples is not None else list_samples(spec, data_root, limit)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, ref: SampleRef) -> dict[str, Any]:
        image = load_image(ref.image_path)
        item: dict[str, Any] = {
            "stem": ref.stem,
            "image_path": str(ref.image_path),
            "label_path": str(ref.label_path) if ref.label_path else None,
            "image": image,
        }
        if ref.label_path is not None:
            spec = self.spec
            assert spec is not None  # only a benchmark's samples have labels
            label = load_label(ref.label_path, spec.reduce_zero_label, spec.ignore_index)
            if label.shape != image.shape[:2]:
                raise DataError(
                    f"size mismatch: image {ref.image_path} is {image.shape[1]}x{image.shape[0]} "
                    f"but label {ref.label_path} is {label.shape[1]}x{label.shape[0]} (WxH)"
                )
            problem = label_range_problem(label, spec.num_classes, spec.ignore_index, spec.reduce_zero_label)
            if problem is not None:
                raise DataError(f"label {ref.label_path}: {problem}")
            item["label"] = label
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.samples[index]
        try:
            item = self.load(ref)
        except DataError as exc:
            if self.errors == "raise":
                raise
            item = {
                "stem": ref.stem,
                "image_path": str(ref.image_path),
                "label_path": str(ref.label_path) if ref.label_path else None,
                "error": str(exc),
            }
        item["index"] = index
        return item


class FolderDataset(BenchmarkDataset):
    """User images from a folder (or a list of files), no labels; same item format."""

    def __init__(
        self,
        paths: str | os.PathLike | list[str | os.PathLike],
        *,
        recursive: bool = True,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        errors: str = "raise",
    ) -> None:
        if errors not in ("raise", "report"):
            raise ValueError(f"errors must be 'raise' or 'report', got {errors!r}")
        files: list[tuple[str, Path]] = []
        items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        for entry in items:
            entry = Path(entry)
            if entry.is_dir():
                pattern = entry.rglob("*") if recursive else entry.glob("*")
                for p in sorted(pattern):
                    if p.is_file() and p.suffix.lower() in extensions:
                        files.append((p.relative_to(entry).with_suffix("").as_posix(), p))
            elif entry.is_file():
                files.append((entry.stem, entry))
            else:
                raise DataError(f"no such image or folder: {entry}")
        if not files:
            raise DataError(f"no images ({', '.join(extensions)}) found in {', '.join(map(str, items))}")
        self.spec = None
        self.errors = errors
        self.samples = [SampleRef(stem, path, None) for stem, path in files]
