"""Converters that derive the benchmarks' label files from the raw dataset releases.

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
- pc459: PASCAL Context full (459 classes) val, as the open-vocabulary field prepares it
  (cvlab-kaist/CAT-Seg datasets/prepare_pascal_context_459.py and datasets/README.md; the same steps in
  ov-seg's datasets/prepare_pascal_context.py, read in the frinfo702/ov-seg copy). ROOT is
  VOCdevkit/VOC2010 with the Context release's trainval.tar.gz unpacked into it: trainval/<stem>.mat (MATLAB v5, a `LabelMap`
  uint16 array of raw ids 1..459 indexing labels.txt, 0 = unlabeled). The val stems come from
  ROOT/pascalcontext_val.txt, the list CAT-Seg ships in its datasets/ folder (5104 stems, sorted; the
  "5105" of the papers is the count before the organisers revised the split, see
  zhanghang1989/PyTorch-Encoding issue 155 and open-mmlab/mmsegmentation issue 394, where
  MMSegmentation's own converted ImageSets/SegmentationContext/val.txt also holds 5104), or from that
  val.txt when the first is absent. Train id = raw id - 1, no table: the field's class list
  (CAT-Seg datasets/pc459.json, identical to label_sets/pc459/classes.txt) is labels.txt's order,
  checked here against labels.txt when it is present; unlabeled 0 becomes 65535, which is what the
  field's plain uint16 subtraction wraps it to (NVlabs/ODISE datasets/prepare_pascal_ctx_full_sem_seg.py
  sets it explicitly; MendelXu/SAN datasets/prepare_pcontext_sem_seg_459cls.py subtracts the same way
  but takes the val stems from trainval_merged.json). The label is saved as a 16-bit TIFF to
  annotations_detectron2/pc459_val/<stem>.tif at the image's own size; the images are neither copied
  nor resized (the benchmark reads JPEGImages in place; SAN copies them unchanged). Here, unlike the field's scripts, a listed
  stem without its .mat or its JPEG, a raw id past 459, or a labels.txt that disagrees with
  classes.txt is reported instead of silently skipped or written.
Each output is written atomically; an existing output with identical pixels is left alone, so a
second run is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from llmseg.datasets import Layout, get_dataset
from llmseg.io import atomic_path

from .pool import parallel_map
from .readers import IMAGE_READ_ERRORS, DataError

COCO_UNUSED_THING_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
RAW_SUFFIX = ".png"  # the raw stuffthingmaps: <stem>.png
CONVERTERS = ("coco_stuff", "coco_object", "ade847", "pc459")  # each writes the label files of the dataset of that name
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
    except IMAGE_READ_ERRORS as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def ade847_table() -> dict[int, int]:
    """Raw ADE20K-2021 object class id -> ADE-847 train id (the dataset folder's ade20k_full_ids.txt)."""
    spec = get_dataset("ade847")
    assert spec.classes_file is not None  # a bundled dataset: its folder holds classes.txt
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
        except IMAGE_READ_ERRORS as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
    seg, image = pictures
    if seg.shape[:2] != image.shape[:2]:
        raise DataError(f"{seg_path} is {seg.shape[1]}x{seg.shape[0]} but {image_src} is {image.shape[1]}x{image.shape[0]}")
    raw: np.ndarray = (seg[:, :, 0].astype(np.int32) // 10) * 256 + seg[:, :, 1].astype(np.int32)
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
        except IMAGE_READ_ERRORS:
            pass
    with atomic_path(image_dst) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG")
    with atomic_path(label_dst) as tmp:
        Image.fromarray(out).save(tmp, format="TIFF")
    return ("written", dst, "")


PC459_SPLIT_FILES = ("pascalcontext_val.txt", "ImageSets/SegmentationContext/val.txt")  # the first found is read
PC459_RAW_DIR = "trainval"  # the Context release's <stem>.mat files
PC459_LABELS_FILE = "labels.txt"  # "id: name" lines of the raw ids, checked when present
PC459_IGNORE = 65535


def _scipy_io():
    """scipy.io, imported only for pc459: reading MATLAB files is an optional extra."""
    try:
        import scipy.io  # lazy import: optional dependency (scipy, the convert extra)
    except ImportError as exc:
        raise DataError("converting pc459 reads the PASCAL Context .mat files with scipy, which is not installed: "
                        "pip install 'llmseg[convert]' (or pip install scipy)") from exc
    return scipy.io


def pc459_train_ids(raw: np.ndarray, source: str | os.PathLike = "LabelMap") -> np.ndarray:
    """Raw LabelMap ids (0 = unlabeled, 1..459) -> uint16 train ids 0..458, unlabeled 65535."""
    num_classes = get_dataset("pc459").num_classes
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise DataError(f"{source}: LabelMap is {raw.dtype} of shape {raw.shape}; expected a 2-D integer map")
    values = raw.astype(np.int64)
    bad = (values < 0) | (values > num_classes)
    if bad.any():
        found = sorted(np.unique(values[bad]).tolist())[:10]
        raise DataError(f"{source}: LabelMap values outside 0..{num_classes}: {found} (not the {num_classes}-class full release?)")
    return np.where(values == 0, PC459_IGNORE, values - 1).astype(np.uint16)


def read_pc459_labelmap(path: str | os.PathLike) -> np.ndarray:
    """The `LabelMap` array of one PASCAL Context .mat file; any unreadable file is a DataError naming it."""
    sio = _scipy_io()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found (the val split lists it; unpack the Context release's trainval.tar.gz)")
    try:
        mat = sio.loadmat(str(path))
    except Exception as exc:  # a parser of arbitrary bytes: whatever it raises means the file is bad
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc} (expected a MATLAB v5 .mat file)") from exc
    if "LabelMap" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: no 'LabelMap' variable (found: {', '.join(keys) or 'none'})")
    return np.asarray(mat["LabelMap"])


def check_pc459_labels(path: str | os.PathLike) -> None:
    """labels.txt must give ids 1..459 the class names of label_sets/pc459/classes.txt, in that order.

    Train id = raw id - 1 only holds for that order; names are compared ignoring case, spaces and
    punctuation. Lines without a colon are skipped, as the field's scripts skip them.
    """
    spec = get_dataset("pc459")
    path = Path(path)
    names: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if ":" not in line:
            continue
        head, name = line.split(":", 1)
        try:
            names[int(head.strip())] = name.strip()
        except ValueError as exc:
            raise DataError(f"{path}:{number}: expected 'id: name', got {line.strip()!r}") from exc
    wanted = range(1, spec.num_classes + 1)
    missing = [i for i in wanted if i not in names]
    extra = sorted(i for i in names if i > spec.num_classes or i < 0)
    if missing or extra:
        raise DataError(f"{path}: expected ids 1..{spec.num_classes} (the full list); missing {missing[:10]}, "
                        f"unexpected {extra[:10]}")

    def norm(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    wrong = [(i, names[i], spec.classes[i - 1]) for i in wanted if norm(names[i]) != norm(spec.classes[i - 1])]
    if wrong:
        shown = "; ".join(f"id {i} is '{got}' but class {i - 1} is '{want}'" for i, got, want in wrong[:5])
        raise DataError(f"{path}: {len(wrong)} names disagree with {spec.classes_file}: {shown}")


def _same_pixels(path: Path, out: np.ndarray) -> bool:
    """An existing, readable output holding exactly these pixels (so it is left alone)."""
    if not path.is_file():
        return False
    try:
        with Image.open(path) as existing:
            return bool(np.array_equal(np.array(existing), out))
    except IMAGE_READ_ERRORS:
        return False  # unreadable old output: overwrite it


def _convert_pc459(src: str, dst: str) -> tuple[str, str, str]:
    mat_path, label_dst = Path(src), Path(dst)  # ROOT/trainval/<stem>.mat -> ROOT/annotations_detectron2/pc459_val/<stem>.tif
    layout = _layout("pc459")
    root = label_dst.parents[len(Path(layout.ann_dir).parts)]
    stem = label_dst.name[: -len(layout.seg_map_suffix)]
    out = pc459_train_ids(read_pc459_labelmap(mat_path), mat_path)
    image_path = root / layout.img_dir / f"{stem}{layout.img_suffix}"
    if not image_path.is_file():
        raise DataError(f"image not found: {image_path} (its label {mat_path} would be a sample without an image)")
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except IMAGE_READ_ERRORS as exc:
        raise DataError(f"cannot read {image_path}: {exc}") from exc
    if (height, width) != out.shape:
        raise DataError(f"{mat_path}: LabelMap is {out.shape[1]}x{out.shape[0]} but {image_path} is {width}x{height}")
    if _same_pixels(label_dst, out):
        return ("skipped", dst, "")
    with atomic_path(label_dst) as tmp:
        Image.fromarray(out).save(tmp, format="TIFF")
    return ("written", dst, "")


def _pc459_tasks(root: Path, layout: Layout) -> list[tuple[str, str, str]]:
    _scipy_io()  # a missing scipy is one error before any worker starts
    raw_dir = root / PC459_RAW_DIR
    if not raw_dir.is_dir():
        raise DataError(f"{root} has no {PC459_RAW_DIR}/ folder of <stem>.mat files (unpack the PASCAL Context "
                        f"release's trainval.tar.gz into DATA_ROOT/{layout.root})")
    split = next((root / name for name in PC459_SPLIT_FILES if (root / name).is_file()), None)
    if split is None:
        raise DataError(f"{root} has no val split file: put CAT-Seg's {PC459_SPLIT_FILES[0]} there "
                        f"(or MMSegmentation's {PC459_SPLIT_FILES[1]})")
    stems = list(dict.fromkeys(line.strip() for line in split.read_text(encoding="utf-8").splitlines() if line.strip()))
    odd = [s for s in stems if "/" in s or "\\" in s or s.startswith(".")]
    if odd:
        raise DataError(f"{split}: expected image stems such as 2008_000002, got {odd[:3]}")
    if not stems:
        raise DataError(f"{split} lists no images")
    labels = root / PC459_LABELS_FILE
    if labels.is_file():
        check_pc459_labels(labels)
    ann = root / layout.ann_dir
    return [("pc459", str(raw_dir / f"{s}.mat"), str(ann / f"{s}{layout.seg_map_suffix}")) for s in stems]


def _convert_one(task: tuple[str, str, str]) -> tuple[str, str, str]:
    """(kind, src, dst) -> (status, dst, message); runs in a worker process."""
    kind, src, dst = task
    try:
        if kind == "ade847":
            return _convert_ade847(src, dst)
        if kind == "pc459":
            return _convert_pc459(src, dst)
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
            except IMAGE_READ_ERRORS:
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
    if kind == "pc459":
        return _pc459_tasks(root, layout)
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
    """Run one converter over ROOT (DATA_ROOT/coco_stuff164k, DATA_ROOT/ADE20K_2021_17_01 or
    DATA_ROOT/VOCdevkit/VOC2010), in parallel, idempotently."""
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
