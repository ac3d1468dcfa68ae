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

from llmseg.datasets import DatasetError, DatasetSpec, Layout
from llmseg.registry import Registry

from .readers import DataError, SampleRef


class LayoutReader:
    """MMSegmentation's layout: a split file of stems, or every image under IMG_DIR (recursively)."""

    # how the benchmark stores raw labels: "palette" (VOC: 'P' PNG, 255 outlines), "grey" (8-bit PNG
    # of label ids), "coco" (raw stuffthingmaps plus the converted train-id files)
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
            stems = [line.strip() for line in split.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            if not img_dir.is_dir():
                raise DataError(f"{spec.name}: image folder not found: {img_dir} (expected under --data-root {data_root})")
            suffix = layout.img_suffix
            stems = sorted(
                p.relative_to(img_dir).as_posix()[: -len(suffix)] for p in img_dir.rglob(f"*{suffix}") if p.is_file()
            )
        if not stems:
            raise DataError(f"{spec.name}: no images listed under {base}")
        if limit is not None:
            stems = stems[: max(0, int(limit))]
        return [
            SampleRef(stem, img_dir / f"{stem}{layout.img_suffix}", ann_dir / f"{stem}{layout.seg_map_suffix}")
            for stem in stems
        ]


LAYOUTS: Registry[type[LayoutReader]] = Registry("dataset layout")


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


def layout_reader(spec: DatasetSpec) -> LayoutReader:
    """The reader of the spec's layout; an unknown layout name is an error naming the dataset.json."""
    if spec.layout is None:
        spec.data_dir()  # raises the "no on-disk layout" DatasetError
    name = spec.layout.name  # type: ignore[union-attr]
    if name not in LAYOUTS:
        where = spec.source or Path(spec.name)
        raise DatasetError(f"{where}: field 'layout': unknown layout '{name}': use one of {', '.join(LAYOUTS.names())}")
    return LAYOUTS.get(name)(spec)
