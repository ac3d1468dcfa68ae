"""On-disk layouts: the name in a dataset.json's "layout" -> the reader that lists its samples.

Every built-in layout reads MMSegmentation's convention (ROOT/IMG_DIR/<stem>IMG_SUFFIX beside
ROOT/ANN_DIR/<stem>SEG_MAP_SUFFIX, stems from a split file or from every image found); they differ
in how the benchmark names its files and stores its raw labels, which the synthetic-data writer
(`llmseg.stage2.synthetic`) needs: `stem(i)` and `label_storage`.

A new layout is one module: subclass `LayoutReader` (override `list_samples`, or just the naming
facts) and decorate it with `@LAYOUTS.register("name")`; a dataset.json then says
`"layout": "name"`. Code outside the package registers the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmseg.datasets import DatasetError, DatasetSpec, Layout, relative_path_problem
from llmseg.registry import Registry

from .types import DataError, SampleRef


class LayoutReader:
    """MMSegmentation's layout: a split file of stems, or every image under IMG_DIR (recursively)."""

    # how the benchmark stores raw labels: "palette" (VOC: 'P' PNG, 255 outlines), "grey" (8-bit PNG
    # of label ids), "coco" (raw stuffthingmaps plus the converted train-id files), "tiff16" (16-bit
    # TIFF of label ids, 65535 = ignore: ade847, pc459)
    label_storage = "grey"
    unlabeled_fraction = 0.0  # synthetic data: share of pixels stored as 255 (ignore)

    def __init__(self, spec: DatasetSpec) -> None:
        if spec.layout is None:
            spec.data_dir()  # raises the "no on-disk layout" error naming the dataset
        self.spec = spec
        self.layout: Layout = spec.layout  # type: ignore[assignment]

    def stem(self, index: int) -> str:
        """The file stem of synthetic sample `index`, in the benchmark's own naming."""
        return f"{index:06d}"

    def list_samples(self, data_root: str | os.PathLike, limit: int | None = None) -> list[SampleRef]:
        spec, layout = self.spec, self.layout
        base = spec.data_dir(data_root)
        img_dir, ann_dir = base / layout.img_dir, base / layout.ann_dir
        if layout.split_file is not None:
            split = base / layout.split_file
            if not split.is_file():
                raise DataError(f"{spec.name}: split file not found: {split} (expected under --data-root {data_root})")
            stems = read_split_file(split)
        else:
            if not img_dir.is_dir():
                raise DataError(f"{spec.name}: image folder not found: {img_dir} (expected under --data-root {data_root})")
            suffix = layout.img_suffix
            stems = sorted(
                p.relative_to(img_dir).as_posix()[: -len(suffix)] for p in img_dir.rglob(f"*{suffix}") if p.is_file()
            )
        if not stems:
            where = f"in its split file {base / layout.split_file}" if layout.split_file is not None else f"under {img_dir}"
            raise DataError(f"{spec.name}: no images listed {where}")
        if limit is not None:
            stems = stems[: max(0, int(limit))]
        return [
            SampleRef(stem, img_dir / f"{stem}{layout.img_suffix}", ann_dir / f"{stem}{layout.seg_map_suffix}")
            for stem in stems
        ]


def read_split_file(path: Path) -> list[str]:
    """The stems a split file lists, one a line (blank lines skipped); each must name a file inside the dataset.

    Lines end at a newline or CRLF only (not at a lone carriage return, U+0085 or a form feed, as text
    mode or `str.splitlines` would have it), so
    such a character inside a line is refused as a control character instead of silently starting a
    new stem. A stem that is absolute or holds '..' would make `--save-pred` write outside --out:
    refused, with the file and line. A UTF-8 byte-order mark is dropped.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"split file {path} is not UTF-8: {exc}") from exc
    except OSError as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from exc
    stems: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        stem = line.strip()
        if not stem:
            continue
        problem = relative_path_problem(stem)
        if problem is not None:
            raise DataError(f"{path}:{number}: the stem {stem!r} {problem}")
        stems.append(stem)
    return stems


LAYOUTS: Registry[type[LayoutReader]] = Registry("dataset layout", group="llmseg.layouts")


@LAYOUTS.register("mmseg")
class MMSegLayout(LayoutReader):
    """Any dataset in MMSegmentation's layout with greyscale label-id PNGs."""


@LAYOUTS.register("voc")
class VOCLayout(LayoutReader):
    """PASCAL VOC 2012: JPEGImages + SegmentationClass palette PNGs, stems from ImageSets/Segmentation."""

    label_storage = "palette"

    def stem(self, index: int) -> str:
        return f"2007_{index:06d}"


@LAYOUTS.register("context")
class ContextLayout(LayoutReader):
    """PASCAL Context (VOC 2010 images): greyscale SegmentationClassContext PNGs, stems from a split file."""

    def stem(self, index: int) -> str:
        return f"2008_{index:06d}"


class _COCOLayout(LayoutReader):
    label_storage = "coco"
    unlabeled_fraction = 0.02

    def stem(self, index: int) -> str:
        return f"{index:012d}"


@LAYOUTS.register("coco_stuff")
class COCOStuffLayout(_COCOLayout):
    """COCO-Stuff 164k: images/val2017 + annotations/val2017/*_labelTrainIds.png (171 ids)."""


@LAYOUTS.register("coco_object")
class COCOObjectLayout(_COCOLayout):
    """COCO-Object: the COCO-Stuff tree, annotations/val2017/*_instanceTrainIds.png (81 ids)."""


@LAYOUTS.register("cityscapes")
class CityscapesLayout(LayoutReader):
    """Cityscapes: leftImg8bit/val/<city>/ + gtFine/val/<city>/*_gtFine_labelTrainIds.png."""

    unlabeled_fraction = 0.05
    cities = ("frankfurt", "lindau", "munster")

    def stem(self, index: int) -> str:
        city = self.cities[index % len(self.cities)]
        return f"{city}/{city}_000000_{index:06d}"


@LAYOUTS.register("ade20k")
class ADE20KLayout(LayoutReader):
    """ADEChallengeData2016: images/validation + annotations/validation (0 = other, reduced away)."""

    def stem(self, index: int) -> str:
        return f"ADE_val_{index + 1:08d}"


class _Tiff16Layout(LayoutReader):
    """The open-vocabulary field's 16-bit TIFF label ids (class ids past 255; 65535 = ignore)."""

    label_storage = "tiff16"


@LAYOUTS.register("ade847")
class ADE847Layout(_Tiff16Layout):
    """ADE20K-Full: images_detectron2/validation/*.jpg + annotations_detectron2/validation/*.tif (0..846)."""

    unlabeled_fraction = 0.03  # objects outside the 847 classes are stored as 65535

    def stem(self, index: int) -> str:
        return f"ADE_val_{index + 1:08d}"


@LAYOUTS.register("pc459")
class PC459Layout(_Tiff16Layout):
    """PASCAL Context 459: JPEGImages/*.jpg + annotations_detectron2/pc459_val/*.tif (0..458).

    The samples are the label files (as detectron2's load_sem_seg lists them): JPEGImages holds
    every VOC 2010 image, the label folder only the 5104 val ones (papers say 5105).
    """

    def stem(self, index: int) -> str:
        return f"2008_{index:06d}"

    def list_samples(self, data_root: str | os.PathLike, limit: int | None = None) -> list[SampleRef]:
        spec, layout = self.spec, self.layout
        if layout.split_file is not None:
            return super().list_samples(data_root, limit)
        base = spec.data_dir(data_root)
        img_dir, ann_dir = base / layout.img_dir, base / layout.ann_dir
        if not ann_dir.is_dir():
            raise DataError(f"{spec.name}: label folder not found: {ann_dir} (expected under --data-root {data_root})")
        suffix = layout.seg_map_suffix
        stems = sorted(p.name[: -len(suffix)] for p in ann_dir.glob(f"*{suffix}") if p.is_file())
        if not stems:
            raise DataError(f"{spec.name}: no *{suffix} label files in {ann_dir}")
        if limit is not None:
            stems = stems[: max(0, int(limit))]
        return [SampleRef(s, img_dir / f"{s}{layout.img_suffix}", ann_dir / f"{s}{suffix}") for s in stems]


def layout_reader(spec: DatasetSpec) -> LayoutReader:
    """The reader of the spec's layout; an unknown layout name is an error naming the dataset.json."""
    if spec.layout is None:
        spec.data_dir()  # raises the "no on-disk layout" DatasetError
    name = spec.layout.name  # type: ignore[union-attr]
    if name not in LAYOUTS:
        where = spec.source or Path(spec.name)
        raise DatasetError(f"{where}: field 'layout': unknown layout '{name}': use one of {', '.join(LAYOUTS.names())}")
    return LAYOUTS.get(name)(spec)
