"""Datasets are folders of data: `classes.txt` (line index = label id) plus `dataset.json` (the facts).

The eight standard benchmarks are the bundled folders `label_sets/<name>/`; a user's dataset is a
folder of the same shape anywhere on disk, so `get_dataset("pascal_voc")` and
`get_dataset("path/to/my_dataset")` return the same kind of `DatasetSpec`. `dataset.json` says
how the data sits on disk (a layout name the readers know plus folders and suffixes), the label
conventions (background, reduce_zero_label, ignore_index), the image domain for the LLM prompt,
the colour palette and llm-supervision's `top_cls_num`. A folder with only a classes.txt is a
plain class list (no on-disk layout); `DatasetSpec.from_classes_file` builds one directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path, PureWindowsPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import LlmsegError
from .io import RepeatedKeyError, refuse_repeated_keys
from .resources import label_sets_dir

IGNORE_INDEX = 255
DEFAULT_DOMAIN = "natural photographs"
DEFAULT_TOP_CLS_NUM = 10  # llm-supervision's default when a dataset names none (clamped to C by the method)
CLASSES_FILE = "classes.txt"
DEFAULT_SPLIT = "val"
SPLIT_FIELDS = ("img_dir", "ann_dir", "split_file")  # what a split may change in the layout
DATASET_FILE = "dataset.json"


class DatasetError(LlmsegError, ValueError):
    """A dataset name, class file, dataset.json or layout problem; the message names the culprit."""


def _control_character(text: str) -> str | None:
    """The first control character in `text` (C0, DEL, C1: U+0085, form feed, ...) as U+XXXX, or None."""
    for char in text:
        if unicodedata.category(char) == "Cc":
            return f"U+{ord(char):04X}"
    return None


def relative_path_problem(value: str, inside: str = "inside the dataset's folder") -> str | None:
    """Why `value` cannot name a file or folder inside a dataset's root (None: it can).

    Paths and stems that come from data (dataset.json, a split file) are confined to the folder
    they describe: an absolute path, a drive or a '..' part would read or write (`--save-pred`)
    elsewhere, and a control character is never part of a real file name. `inside` words the fix
    for the folder the path must stay in.
    """
    if not value:
        return "is empty"
    char = _control_character(value)
    if char is not None:
        return f"holds the control character {char}"
    if value.startswith(("/", "\\")) or PureWindowsPath(value).drive:
        return f"is an absolute path (or names a drive); give a path {inside}"
    if ".." in re.split(r"[\\/]", value):
        return f"holds a '..' part; give a path {inside}"
    return None


def file_name_problem(value: str) -> str | None:
    """Why `value` cannot be one plain file name (a suffix, a preset name): a separator, '..', a control character."""
    if not value:
        return "is empty"
    char = _control_character(value)
    if char is not None:
        return f"holds the control character {char}"
    if "/" in value or "\\" in value:
        return "holds a path separator; give a plain name"
    if value in (".", ".."):
        return "is not a file name"
    return None


def _relative_path(value: str | None) -> str | None:
    """Pydantic check of a path field from data (None passes)."""
    if value is not None:
        problem = relative_path_problem(value)
        if problem is not None:
            raise ValueError(f"{value!r} {problem}")
    return value


@dataclass(frozen=True)
class Layout:
    """Where a dataset's evaluation images and labels sit under the data root.

    `name` picks the reader (`llmseg.stage2.data.layouts.LAYOUTS`); the built-in ones all read
    MMSegmentation's layout: ROOT/IMG_DIR/<stem>IMG_SUFFIX with ROOT/ANN_DIR/<stem>SEG_MAP_SUFFIX.
    """

    root: str  # folder under the data root, e.g. "VOCdevkit/VOC2012" (from dataset.json: never absolute or with "..")
    img_dir: str
    ann_dir: str
    img_suffix: str = ".jpg"
    seg_map_suffix: str = ".png"
    split_file: str | None = None  # list of stems; None = every image under img_dir (recursively)
    name: str = "mmseg"


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know about one dataset."""

    name: str
    classes: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    background: int | None = None  # index of the background class (0: VOC21, PC60, COCO-Object) or None
    reduce_zero_label: bool = False  # label 0 -> ignore, k -> k-1 when reading (VOC20, PC59, ADE)
    layout: Layout | None = None
    domain: str = DEFAULT_DOMAIN
    classes_file: Path | None = None
    palette: str | tuple[tuple[int, int, int], ...] | None = None  # a palette name or one RGB per class
    top_cls_num: int = DEFAULT_TOP_CLS_NUM
    source: Path | None = None  # the dataset.json the facts came from
    extra: dict = field(default_factory=dict, compare=False)
    split: str = DEFAULT_SPLIT  # the split `layout` points at (the benchmark's evaluation split)
    other_splits: dict[str, dict[str, str]] = field(default_factory=dict, compare=False)  # name -> layout overrides

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def background_is_zero(self) -> bool:
        return self.background == 0

    def data_dir(self, data_root: str | os.PathLike[str] = "data") -> Path:
        if self.layout is None:
            where = f" ({self.source})" if self.source else ""
            raise DatasetError(
                f"dataset '{self.name}' has no on-disk layout{where}: add \"layout\" and its folders to its {DATASET_FILE}"
            )
        return Path(data_root) / self.layout.root

    @property
    def splits(self) -> list[str]:
        """The split names this dataset knows (its evaluation split first)."""
        return [self.split, *(s for s in self.other_splits if s != self.split)]

    def with_split(self, split: str) -> DatasetSpec:
        """The same dataset read from another split (e.g. train for tuning): only the layout's folders change."""
        if split == self.split:
            return self
        if split not in self.other_splits or self.layout is None:
            where = self.source or self.name
            known = ", ".join(self.splits)
            raise DatasetError(
                f"dataset '{self.name}' has no split '{split}' (it knows: {known}); describe it in {where} as "
                f'"splits": {{"{split}": {{"img_dir": ..., "ann_dir": ..., "split_file": ...}}}}'
            )
        changes = {key: value for key, value in self.other_splits[split].items() if key in SPLIT_FIELDS}
        return replace(self, layout=replace(self.layout, **changes), split=split)

    @classmethod
    def from_classes_file(cls, path: str | Path, name: str | None = None, **kwargs: Any) -> DatasetSpec:
        """A dataset from a class list alone; its name defaults to the class file's folder name.

        Class 0 counts as background when it is named "background" (override with `background=` or
        the older `background_is_zero=`).
        """
        path = Path(path)
        classes = read_classes_file(path)
        if "background_is_zero" in kwargs:
            kwargs["background"] = 0 if kwargs.pop("background_is_zero") else None
        kwargs.setdefault("background", 0 if classes[0].strip().lower() == "background" else None)
        return cls(name=name or path.parent.name or path.stem, classes=tuple(classes), classes_file=path, **kwargs)


class SplitFolders(BaseModel):
    """Where another split sits: the layout fields it changes (the rest are the evaluation split's)."""

    model_config = ConfigDict(extra="forbid")

    img_dir: str | None = None
    ann_dir: str | None = None
    split_file: str | None = None

    _inside_the_dataset = field_validator("img_dir", "ann_dir", "split_file")(_relative_path)


class DatasetFile(BaseModel):
    """The schema of `dataset.json`: validated with errors that name the file and the field."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, description="free text: what the dataset is, where its facts come from")
    layout: str | None = Field(None, description="reader of the on-disk layout, e.g. voc, context, cityscapes, mmseg")
    data_dir: str | None = Field(None, description="folder under the data root")
    img_dir: str | None = None
    ann_dir: str | None = None
    img_suffix: str = ".jpg"
    seg_map_suffix: str = ".png"
    split_file: str | None = Field(None, description="file (under data_dir) listing the stems; null: every image")
    background: int | None = Field(None, description="index of the background class: 0 or null")
    reduce_zero_label: bool = False
    # 65535 for the 16-bit TIFF benchmarks (ade847, pc459), whose class ids go past 255
    ignore_index: int = Field(IGNORE_INDEX, ge=0, le=65535)
    domain: str = Field(DEFAULT_DOMAIN, min_length=1)
    palette: str | list[list[int]] | None = Field(None, description="a palette name (voc, cityscapes, ...) or [r, g, b] per class")
    top_cls_num: int | None = Field(None, ge=1)
    split: str = Field(DEFAULT_SPLIT, min_length=1, description="name of the split the layout fields describe")
    splits: dict[str, SplitFolders] = Field(
        default_factory=dict, description="other splits (e.g. train, for `llmseg tune`): the layout fields each changes"
    )

    _inside_the_dataset = field_validator("img_dir", "ann_dir", "split_file")(_relative_path)

    @field_validator("data_dir")
    @classmethod
    def _under_the_data_root(cls, value: str | None) -> str | None:
        # a dataset.json is data, and a path from data never leaves its root: no absolute path, drive or '..';
        # a dataset kept elsewhere is reached with --data-root (or a link under the data root)
        if value is None:
            return value
        if value == "":
            raise ValueError("is empty; give the dataset's folder under the data root")
        problem = relative_path_problem(value, inside="under the data root")
        if problem is not None:
            raise ValueError(f"{value!r} {problem} (for a dataset kept elsewhere, pass --data-root or link it under the data root)")
        return value

    @field_validator("img_suffix", "seg_map_suffix")
    @classmethod
    def _plain_suffix(cls, value: str) -> str:
        problem = file_name_problem(value)
        if problem is not None:
            raise ValueError(f"{value!r} {problem} (a suffix such as .jpg or _labelTrainIds.png)")
        return value

    @field_validator("background")
    @classmethod
    def _background_is_class_zero(cls, value: int | None) -> int | None:
        if value not in (None, 0):
            raise ValueError(f"must be 0 or null (the methods treat class 0 as background), got {value}")
        return value

    @field_validator("palette")
    @classmethod
    def _rgb_colours(cls, value: str | list[list[int]] | None) -> str | list[list[int]] | None:
        if isinstance(value, list):
            for index, rgb in enumerate(value):
                if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                    raise ValueError(f"colour {index} is {rgb}: expected [r, g, b] with values 0..255")
        return value

    def missing_layout_fields(self) -> list[str]:
        """The folders a layout needs that the file leaves out."""
        if self.layout is None:
            return []
        return [key for key in ("data_dir", "img_dir", "ann_dir") if getattr(self, key) is None]

    def to_layout(self) -> Layout | None:
        if self.layout is None:
            return None
        return Layout(
            root=str(self.data_dir),
            img_dir=str(self.img_dir),
            ann_dir=str(self.ann_dir),
            img_suffix=self.img_suffix,
            seg_map_suffix=self.seg_map_suffix,
            split_file=self.split_file,
            name=self.layout,
        )


def read_classes_file(path: str | Path) -> list[str]:
    """One class name per line; blank trailing lines ignored; errors name the file and line.

    Lines end at a newline (or CRLF) only: `str.splitlines` or text mode would also break at a lone
    carriage return, U+0085, a form feed or U+2028, turning one line into two classes and shifting
    every label id after it. A control character left inside a name is refused instead. A UTF-8
    byte-order mark is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class file not found: {path}")
    try:
        lines = path.read_bytes().decode("utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"class file {path} is not UTF-8: {exc}") from exc
    except OSError as exc:
        raise DatasetError(f"cannot read class file {path}: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    classes: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip(" \t\r")
        char = _control_character(name)
        if char is not None:
            raise DatasetError(f"{path}:{number}: class name {name!r} holds the control character {char}")
        name = name.strip()
        if not name:
            raise DatasetError(f"{path}:{number}: empty class name")
        if name in seen:
            raise DatasetError(f"{path}:{number}: class '{name}' repeats line {seen[name]}")
        seen[name] = number
        classes.append(name)
    if not classes:
        raise DatasetError(f"class file {path} lists no classes")
    return classes


def read_dataset_file(path: str | Path) -> DatasetFile:
    """Parse and validate one dataset.json; every problem names the file and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=refuse_repeated_keys)
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset file not found: {path}") from exc
    except RepeatedKeyError as exc:
        raise DatasetError(f"{path}: field {exc.key!r} is given twice in one object (only one value can hold); "
                           "remove the other") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise DatasetError(f"{path}: JSON nested too deeply to be dataset facts") from exc
    except OSError as exc:
        raise DatasetError(f"cannot read dataset file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object of dataset facts, got {type(data).__name__}")
    try:
        facts = DatasetFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(file)"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"field '{where}': {message}")
        raise DatasetError(f"{path}: " + "; ".join(problems)) from exc
    missing = facts.missing_layout_fields()
    if missing:
        raise DatasetError(f"{path}: " + "; ".join(f"field '{key}': required with layout '{facts.layout}'" for key in missing))
    return facts


def _bundled_dir() -> Path | None:
    """The installed `llmseg.label_sets` folder (the shipped facts), whatever LLMSEG_LABEL_SETS says."""
    spec = importlib.util.find_spec("llmseg.label_sets")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# Datasets shipped inside a subpackage rather than label_sets/ (name -> package, folder): the demo world.
PACKAGED_DATASETS = {"demo": ("llmseg.stage2.demo", "assets")}


def _packaged_dataset_dir(name: str) -> Path | None:
    if name not in PACKAGED_DATASETS:
        return None
    package, folder = PACKAGED_DATASETS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    return path if (path / CLASSES_FILE).is_file() and (path / DATASET_FILE).is_file() else None


_LOADED: dict[str, DatasetSpec] = {}  # user folders loaded by path in this process, by dataset name


def load_dataset_folder(folder: str | Path, name: str | None = None, classes_file: str | Path | None = None,
                        facts_file: str | Path | None = None) -> DatasetSpec:
    """A dataset folder: its classes.txt (or `classes_file`) plus its dataset.json (or `facts_file`) if any."""
    folder = Path(folder)
    classes_path = Path(classes_file) if classes_file else folder / CLASSES_FILE
    facts_path = Path(facts_file) if facts_file else folder / DATASET_FILE
    classes = read_classes_file(classes_path)
    name = name or folder.resolve().name
    if not facts_path.is_file():
        return DatasetSpec.from_classes_file(classes_path, name=name)
    facts = read_dataset_file(facts_path)
    palette: str | tuple[tuple[int, int, int], ...] | None
    if isinstance(facts.palette, list):
        if len(facts.palette) != len(classes):
            raise DatasetError(
                f"{facts_path}: field 'palette': {len(facts.palette)} colours for the {len(classes)} classes of {classes_path}"
            )
        palette = tuple((r, g, b) for r, g, b in facts.palette)  # three values each: checked by DatasetFacts
    else:
        palette = facts.palette
    return DatasetSpec(
        name=name,
        classes=tuple(classes),
        ignore_index=facts.ignore_index,
        background=facts.background,
        reduce_zero_label=facts.reduce_zero_label,
        layout=facts.to_layout(),
        domain=facts.domain,
        classes_file=classes_path,
        palette=palette,
        top_cls_num=facts.top_cls_num if facts.top_cls_num is not None else DEFAULT_TOP_CLS_NUM,
        source=facts_path,
        split=facts.split,
        other_splits={name: folders.model_dump(exclude_none=True) for name, folders in facts.splits.items()},
    )


def _folder_reference(text: str) -> Path | None:
    """`text` as a dataset folder: it looks like a path, or names a folder here holding a dataset.json."""
    path = Path(text).expanduser()
    looks_like_path = "/" in text or "\\" in text or path.is_absolute() or text.startswith(".")
    if not looks_like_path and not (path / DATASET_FILE).is_file():
        return None
    if not path.is_dir():
        raise DatasetError(f"dataset folder not found: {path} (a dataset folder holds {CLASSES_FILE} and {DATASET_FILE})")
    return path


def bundled_datasets() -> list[str]:
    """The benchmarks shipped with llmseg: folders of the installed label_sets/ with a dataset.json."""
    root = _bundled_dir()
    if root is None or not root.is_dir():
        return []
    return sorted(f.name for f in root.iterdir() if (f / CLASSES_FILE).is_file() and (f / DATASET_FILE).is_file())


def list_datasets() -> list[str]:
    """The bundled benchmarks, every folder of `label_sets/` with a classes.txt, and folders loaded by path."""
    names: list[str] = []
    for root in (_bundled_dir(), label_sets_dir()):
        if root is not None and root.is_dir():
            for folder in sorted(root.iterdir()):
                if (folder / CLASSES_FILE).is_file() and folder.name not in names:
                    names.append(folder.name)
    names.extend(n for n in _LOADED if n not in names)
    return names


def get_dataset(name: str | Path, classes_file: str | Path | None = None) -> DatasetSpec:
    """A dataset by name (a folder of `label_sets/`) or by path (a folder with classes.txt + dataset.json).

    `classes_file` overrides (or, for a new name, defines) the class list; the facts still come
    from the named dataset's dataset.json when it has one.
    """
    text = str(name)
    folder_ref = _folder_reference(text)
    if folder_ref is not None:
        spec = load_dataset_folder(folder_ref, classes_file=classes_file)
        _LOADED[spec.name] = spec
        return spec
    folder = label_sets_dir() / text
    facts = folder / DATASET_FILE
    bundled = _bundled_dir()
    if not facts.is_file() and bundled is not None and (bundled / text / DATASET_FILE).is_file():
        facts = bundled / text / DATASET_FILE  # a private LLMSEG_LABEL_SETS folder keeps the shipped facts
    path = Path(classes_file) if classes_file else folder / CLASSES_FILE
    if not path.is_file() and not classes_file and bundled is not None and (bundled / text / CLASSES_FILE).is_file():
        path = bundled / text / CLASSES_FILE
    if not path.is_file():
        if not classes_file and text in _LOADED:
            return _LOADED[text]
        packaged = _packaged_dataset_dir(text)
        if not classes_file and packaged is not None:
            return load_dataset_folder(packaged, name=text)
        known = ", ".join(list_datasets())
        hint = "" if classes_file else f"; known datasets: {known}; or pass a dataset folder or a classes file"
        raise DatasetError(f"no class file for dataset '{text}': {path} does not exist{hint}")
    return load_dataset_folder(folder, name=text, classes_file=path, facts_file=facts)


def find_dataset(name: str | None) -> DatasetSpec | None:
    """The spec of a dataset with a dataset.json (bundled, in label_sets/, or loaded by path), else None.

    For code that only has a dataset's name and wants its facts if it has any (methods, palettes).
    """
    if not name:
        return None
    try:
        spec = get_dataset(name)
    except DatasetError:
        return None
    return spec if spec.source is not None else None


def dataset_top_cls_num(name: str | None) -> int:
    """llm-supervision's top_cls_num for a dataset: its dataset.json's value, else the default 10."""
    spec = find_dataset(name)
    return spec.top_cls_num if spec is not None else DEFAULT_TOP_CLS_NUM


def dataset_background(name: str | None) -> bool | None:
    """Whether class 0 is background by the dataset's facts; None when no dataset.json says (then: by name)."""
    spec = find_dataset(name)
    return None if spec is None else spec.background_is_zero
