"""Registry of the eight standard benchmarks: class names, label conventions, on-disk layout.

Class names are data (`label_sets/<dataset>/classes.txt`, line index = label id, in
MMSegmentation's order); everything else about a benchmark is in `BENCHMARKS` below.
A user-defined dataset is just a `classes.txt` (see `DatasetSpec.from_classes_file`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import LlmsegError
from .resources import label_sets_dir

IGNORE_INDEX = 255


class DatasetError(LlmsegError, ValueError):
    """A dataset name, class file or layout problem; the message names the culprit."""


@dataclass(frozen=True)
class Layout:
    """Where a benchmark's validation images and labels sit under the data root (MMSeg layout)."""

    root: str  # folder under the data root, e.g. "VOCdevkit/VOC2012"
    img_dir: str
    ann_dir: str
    img_suffix: str = ".jpg"
    seg_map_suffix: str = ".png"
    split_file: str | None = None  # list of stems; None = every image under img_dir (recursively)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know about one dataset."""

    name: str
    classes: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    background_is_zero: bool = False  # class 0 is "background" (VOC21, PC60, COCO-Object)
    reduce_zero_label: bool = False  # label 0 -> ignore, k -> k-1 when reading (VOC20, PC59, ADE)
    layout: Layout | None = None
    domain: str = "natural photographs"
    classes_file: Path | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def data_dir(self, data_root: str | Path = "data") -> Path:
        if self.layout is None:
            raise DatasetError(f"dataset '{self.name}' has no on-disk layout registered")
        return Path(data_root) / self.layout.root

    @classmethod
    def from_classes_file(cls, path: str | Path, name: str | None = None, **kwargs) -> DatasetSpec:
        """A user-defined dataset: its name defaults to the class file's folder name."""
        path = Path(path)
        classes = read_classes_file(path)
        background = classes[0].strip().lower() == "background"
        return cls(
            name=name or path.parent.name or path.stem,
            classes=tuple(classes),
            background_is_zero=kwargs.pop("background_is_zero", background),
            classes_file=path,
            **kwargs,
        )


def read_classes_file(path: str | Path) -> list[str]:
    """One class name per line; blank trailing lines ignored; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"class file {path} is not UTF-8: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    classes: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise DatasetError(f"{path}:{number}: empty class name")
        if name in seen:
            raise DatasetError(f"{path}:{number}: class '{name}' repeats line {seen[name]}")
        seen[name] = number
        classes.append(name)
    if not classes:
        raise DatasetError(f"class file {path} lists no classes")
    return classes


_VOC12 = "VOCdevkit/VOC2012"
_VOC10 = "VOCdevkit/VOC2010"
_COCO = "coco_stuff164k"

# Per-benchmark facts (protocols.md section 1). Class names come from classes.txt.
BENCHMARKS: dict[str, dict] = {
    "pascal_voc": dict(
        background_is_zero=True,
        layout=Layout(_VOC12, "JPEGImages", "SegmentationClass", split_file="ImageSets/Segmentation/val.txt"),
    ),
    "pascal_voc20": dict(
        reduce_zero_label=True,
        layout=Layout(_VOC12, "JPEGImages", "SegmentationClass", split_file="ImageSets/Segmentation/val.txt"),
    ),
    "pascal_context": dict(
        background_is_zero=True,
        layout=Layout(_VOC10, "JPEGImages", "SegmentationClassContext", split_file="ImageSets/SegmentationContext/val.txt"),
    ),
    "pascal_context59": dict(
        reduce_zero_label=True,
        layout=Layout(_VOC10, "JPEGImages", "SegmentationClassContext", split_file="ImageSets/SegmentationContext/val.txt"),
    ),
    "coco_object": dict(
        background_is_zero=True,
        layout=Layout(_COCO, "images/val2017", "annotations/val2017", seg_map_suffix="_instanceTrainIds.png"),
    ),
    "coco_stuff": dict(
        layout=Layout(_COCO, "images/val2017", "annotations/val2017", seg_map_suffix="_labelTrainIds.png"),
    ),
    "cityscapes": dict(
        domain="urban street scenes from a car's front camera",
        layout=Layout(
            "cityscapes",
            "leftImg8bit/val",
            "gtFine/val",
            img_suffix="_leftImg8bit.png",
            seg_map_suffix="_gtFine_labelTrainIds.png",
        ),
    ),
    "ade20k": dict(
        domain="indoor and outdoor scenes",
        reduce_zero_label=True,
        layout=Layout("ADEChallengeData2016", "images/validation", "annotations/validation"),
    ),
}


def list_datasets() -> list[str]:
    """The registered benchmarks plus any folder of `label_sets/` that has a classes.txt."""
    names = list(BENCHMARKS)
    root = label_sets_dir()
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if (folder / "classes.txt").is_file() and folder.name not in names:
                names.append(folder.name)
    return names


def get_dataset(name: str, classes_file: str | Path | None = None) -> DatasetSpec:
    """Look a dataset up by name; `classes_file` overrides (or defines) its class list."""
    facts = BENCHMARKS.get(name, {})
    path = Path(classes_file) if classes_file else label_sets_dir() / name / "classes.txt"
    if not path.is_file():
        known = ", ".join(list_datasets())
        hint = "" if classes_file else f"; known datasets: {known}; or pass a classes file"
        raise DatasetError(f"no class file for dataset '{name}': {path} does not exist{hint}")
    spec = DatasetSpec.from_classes_file(path, name=name)
    if facts:
        spec = replace(spec, **{"background_is_zero": False, **facts})
    return spec
