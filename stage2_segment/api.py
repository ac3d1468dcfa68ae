"""Segment your own images from Python: `Segmenter.create(...)(image, classes=[...])`.

The same code path as `llmseg segment` and `llmseg evaluate`: one `MethodConfig`, the backbone
from `methods.load_backbone`, the method from `methods.build_method`, then `forward` and
`finish` of the engine contract, run in-process. The backbone is loaded once per Segmenter and
a method is kept per (classes, label set, dataset), so the text embeddings of a class list are
computed once however many images follow.
"""

from __future__ import annotations

import importlib
import json
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from llmseg.datasets import DatasetSpec, get_dataset
from llmseg.errors import LlmsegError
from llmseg.io import atomic_write_json, stable_hash
from llmseg.labelset import LabelSet, LabelSetError, label_set_from_json, read_label_set_json
from llmseg.resources import resolve_label_set_path
from llmseg.stage2.pictures.palettes import palette_for
from llmseg.stage2.pictures.visualize import area_shares, label_picture, overlay, save_image, subclass_overlay
from llmseg.stage2.protocols import MethodConfig, SegmentationMethod

from .data import DataError, load_image
from .methods import build_method, load_backbone
from .methods.common import NameTable

if TYPE_CHECKING:
    from .backbones.base import Backbone

# The data flow's public steps (README, "Step by step"), for callers who want the pieces rather than a
# Segmenter: label set -> text_embeddings -> dense_logits -> assemble -> DensePending.of(...).finish() -> SegMetric.
# Imported on first use (start-up time: most load torch, which this module and the CLI's start do not need;
# load_backbone, from the light methods package, is also imported above for Segmenter).
STEPS = {
    "load_backbone": "llmseg.stage2.methods",
    "resolve_dense_settings": "llmseg.stage2.methods",
    "text_embeddings": "llmseg.stage2.ops.text",
    "dense_logits": "llmseg.stage2.methods.dense",
    "image_vector": "llmseg.stage2.methods.dense",
    "DensePending": "llmseg.stage2.methods.dense",
    "assemble": "llmseg.stage2.ops.assembly",
    "image_weights": "llmseg.stage2.ops.assembly",
    "SegMetric": "llmseg.stage2.engine.metrics",
}

__all__ = ["SegmentInputError", "Segmenter", "SegmentationOutput", "output_names", "parse_classes", "resolve_label_set",
           "to_rgb", *STEPS]


def __getattr__(name: str) -> Any:
    """`from llmseg.stage2.api import dense_logits` (and the other STEPS) without importing torch eagerly."""
    if name in STEPS:
        return getattr(importlib.import_module(STEPS[name]), name)
    raise AttributeError(f"module 'llmseg.stage2.api' has no attribute '{name}'")

METHOD_CACHE_SIZE = 8


class SegmentInputError(LlmsegError, ValueError):
    """An image, class list or label set the segmenter cannot use; the message names the culprit."""


# --------------------------------------------------------------------------- inputs


def parse_classes(classes: str | Sequence[str], source: str = "classes") -> list[str]:
    """A list of names or one comma-separated string -> stripped names; empty or repeated names are errors."""
    if isinstance(classes, str):
        names = [part.strip() for part in classes.split(",")]
        if names and not names[-1]:
            names.pop()  # "cat, dog," is fine
    else:
        names = [str(part).strip() for part in classes]
    if not names:
        raise SegmentInputError(f"{source}: the class list is empty")
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name:
            raise SegmentInputError(f"{source}: class {position} is an empty name")
        if name in seen:
            raise SegmentInputError(f"{source}: class '{name}' is given twice (positions {seen[name]} and {position})")
        seen[name] = position
    return names


def resolve_label_set(
    label_set: LabelSet | Mapping[str, Sequence[str]] | str | os.PathLike | None, classes: Sequence[str]
) -> LabelSet | None:
    """None, a {class: [subclasses]} dict, a LabelSet or a path -> a LabelSet whose keys are `classes`, in order."""
    if label_set is None:
        return None
    if isinstance(label_set, LabelSet):
        raw: Any = label_set.root
        source = "label set"
    elif isinstance(label_set, Mapping):
        raw = {str(k): list(v) if isinstance(v, list | tuple) else v for k, v in label_set.items()}
        source = "label set"
    else:
        try:
            path = resolve_label_set_path(label_set)
        except FileNotFoundError as exc:
            raise SegmentInputError(str(exc)) from exc
        try:
            raw = read_label_set_json(path)
        except LabelSetError as exc:
            raise SegmentInputError(str(exc)) from exc
        source = str(path)
    try:
        return label_set_from_json(raw, list(classes), source=source)
    except LabelSetError as exc:
        raise SegmentInputError(str(exc)) from exc


def _float_to_uint8(array: np.ndarray, what: str) -> np.ndarray:
    if array.size and (np.nanmin(array) < 0.0 or np.nanmax(array) > 1.0):
        raise SegmentInputError(f"{what}: float images must lie in [0, 1], got {np.nanmin(array):.3g}..{np.nanmax(array):.3g}")
    return np.rint(np.nan_to_num(array) * 255.0).astype(np.uint8)


def to_rgb(image: Any) -> np.ndarray:
    """PIL image, numpy HxWx3 (uint8, or float in [0, 1]), torch tensor 3xHxW or HxWx3, or a path -> HxWx3 uint8.

    A path is read upright, as a photo viewer shows it (EXIF orientation applied); arrays and PIL
    images are taken as they are.
    """
    if isinstance(image, str | os.PathLike):
        try:
            return load_image(image, exif_transpose=True)
        except DataError as exc:
            raise SegmentInputError(str(exc)) from exc
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    what = type(image).__name__
    if type(image).__module__.split(".")[0] == "torch":
        tensor = image.detach().to("cpu")
        if tensor.ndim == 3 and tensor.shape[0] in (1, 3) and tensor.shape[-1] not in (1, 3):
            tensor = tensor.permute(1, 2, 0)
        elif tensor.ndim == 3 and tensor.shape[0] == 3 and tensor.shape[-1] == 3:
            tensor = tensor.permute(1, 2, 0)  # ambiguous 3xHx3: torch's channel-first convention wins
        image = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
        what = "tensor"
    if not isinstance(image, np.ndarray):
        raise SegmentInputError(f"unsupported image type {type(image).__name__}: give a PIL image, array, tensor or path")
    array = image
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise SegmentInputError(f"{what}: expected an HxWx3 image, got shape {tuple(image.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise SegmentInputError(f"{what}: the image is empty ({tuple(image.shape)})")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    array = array[:, :, :3]
    if np.issubdtype(array.dtype, np.floating):
        array = _float_to_uint8(array, what)
    elif array.dtype != np.uint8:
        raise SegmentInputError(f"{what}: expected uint8 or float pixels, got {array.dtype}")
    return np.ascontiguousarray(array)


# --------------------------------------------------------------------------- output


def output_names(stem: str, subclass: bool) -> list[str]:
    """The file names `SegmentationOutput.save(out, stem)` writes (`subclass`: with a label set).

    One list for the writer and for `llmseg segment`'s collision check, so the two cannot disagree.
    """
    names = [f"{stem}.png", f"{stem}_overlay.png"]
    if subclass:
        names.append(f"{stem}_subclass.png")
    return [*names, f"{stem}.json"]


@dataclass
class SegmentationOutput:
    """One image's segmentation plus what is needed to draw and summarise it."""

    image: np.ndarray  # [H, W, 3] uint8, the input
    labels: np.ndarray  # [H, W] int64 class ids
    scores: np.ndarray | None  # [C, H, W] float32
    subclass: np.ndarray  # [H, W] int32 index into subclass_names, -1 = none
    classes: list[str]
    subclass_names: list[str] = field(default_factory=list)
    subclass_owners: list[int] = field(default_factory=list)  # class index of each subclass name
    palette: np.ndarray | None = None  # [C, 3] uint8
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def colors(self) -> np.ndarray:
        return palette_for(self.classes) if self.palette is None else self.palette

    def overlay(self, alpha: float = 0.5, boundaries: bool = True) -> Image.Image:
        """The photo with class colours, boundaries and a legend of the classes present."""
        return overlay(self.image, self.labels, self.classes, self.colors, alpha=alpha, boundaries=boundaries)

    def subclass_overlay(self, alpha: float = 0.5, boundaries: bool = True) -> Image.Image:
        """Which subclass won at each pixel, with its own legend; needs a label set."""
        if not self.subclass_names:
            raise SegmentInputError("no subclass picture without a label set: pass label_set=...")
        return subclass_overlay(
            self.image, self.subclass, self.subclass_names, self.subclass_owners, self.classes, alpha=alpha, boundaries=boundaries
        )

    def label_image(self) -> Image.Image:
        """The label map, pixel value = class id: a 'P'-mode image with the class colours attached, or,
        past 255 classes (ade847), a 16-bit greyscale image (65535 = no class)."""
        return label_picture(self.labels, self.colors, len(self.classes))

    def summary(self) -> dict[str, Any]:
        """Classes present (largest first) with pixel share, mean score and winning subclasses."""
        height, width = self.labels.shape
        present = []
        for index, share in area_shares(self.labels, len(self.classes)).items():
            region = self.labels == index
            entry: dict[str, Any] = {"id": index, "name": self.classes[index], "pixel_share": round(share, 6)}
            if self.scores is not None:
                entry["mean_score"] = round(float(self.scores[index][region].astype(np.float64).mean()), 6)
            if self.subclass_names:
                winners = self.subclass[region]
                winners = winners[winners >= 0]
                counts = np.bincount(winners, minlength=len(self.subclass_names)) if winners.size else np.zeros(0, int)
                entry["subclasses"] = [
                    {"name": self.subclass_names[k], "share_of_class": round(float(counts[k]) / float(region.sum()), 6)}
                    for k in sorted(np.flatnonzero(counts).tolist(), key=lambda k: (-counts[k], k))
                ]
            present.append(entry)
        return {"height": int(height), "width": int(width), "classes": list(self.classes), "present": present}

    def save(self, out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
        """Write <stem>.png, <stem>_overlay.png, <stem>_subclass.png (with a label set) and <stem>.json.

        Every picture is drawn before the first file is written, so a drawing error leaves nothing behind.
        """
        out = Path(out_dir)
        label_name, overlay_name, *subclass_name, summary_name = output_names(stem, bool(self.subclass_names))
        pictures = {label_name: self.label_image(), overlay_name: self.overlay()}
        if subclass_name:
            pictures[subclass_name[0]] = self.subclass_overlay()
        summary = self.summary()
        written: dict[str, Path] = {}
        for name, picture in pictures.items():
            written[name] = save_image(out / name, picture)
        written[summary_name] = atomic_write_json(out / summary_name, summary)
        return written


# --------------------------------------------------------------------------- segmenter


def _dataset_spec(dataset: str | DatasetSpec | None) -> DatasetSpec | None:
    if dataset is None or isinstance(dataset, DatasetSpec):
        return dataset
    return get_dataset(dataset)


class Segmenter:
    """A backbone loaded once and the methods built on it, one per class list / label set."""

    def __init__(self, config: MethodConfig, backbone: Backbone | None = None) -> None:
        self.config = config
        self.backbone = backbone if backbone is not None else load_backbone(config)
        self._methods: OrderedDict[str, SegmentationMethod] = OrderedDict()

    @classmethod
    def create(
        cls,
        backbone: str = "openclip:ViT-B-16",
        *,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        method: str = "dense",
        preset: str | None = None,
        device: str = "cpu",
        **config_fields: Any,
    ) -> Segmenter:
        """Build the MethodConfig (any other field by keyword: crf=True, assembly='max', ...) and load the backbone."""
        config = MethodConfig(
            backbone=backbone,
            pretrained=pretrained,
            checkpoint=checkpoint,
            method=method,
            preset=preset,
            device=device,
            **config_fields,
        )
        return cls(config)

    def method_for(
        self,
        classes: str | Sequence[str],
        label_set: LabelSet | Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
        dataset: str | DatasetSpec | None = None,
    ) -> tuple[SegmentationMethod, list[str], LabelSet | None, DatasetSpec | None]:
        """The (cached) method for these classes and label set, with the parsed inputs."""
        spec = _dataset_spec(dataset)
        names = parse_classes(classes)
        if label_set is None and self.config.label_set is not None:
            label_set = self.config.label_set
        resolved = resolve_label_set(label_set, names)
        key = stable_hash(
            {"classes": names, "label_set": resolved.root if resolved else None, "dataset": spec.name if spec else None}
        )
        method = self._methods.get(key)
        if method is None:
            config = self.config.model_copy(update={"label_set": None})
            method = build_method(
                config, names, dataset=spec.name if spec is not None else None, backbone=self.backbone, label_set=resolved
            )
            self._methods[key] = method
            while len(self._methods) > METHOD_CACHE_SIZE:
                self._methods.popitem(last=False)
        else:
            self._methods.move_to_end(key)
        return method, names, resolved, spec

    def __call__(
        self,
        image: Any,
        classes: str | Sequence[str] | None = None,
        label_set: LabelSet | Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
        dataset: str | DatasetSpec | None = None,
    ) -> SegmentationOutput:
        """Segment one image into `classes` (or the dataset's classes), optionally with a label set."""
        spec = _dataset_spec(dataset)
        if classes is None:
            if spec is None:
                raise SegmentInputError("give classes=[...] or dataset=NAME")
            classes = list(spec.classes)
        rgb = to_rgb(image)
        method, names, resolved, spec = self.method_for(classes, label_set, spec)
        pending = method.forward([rgb])
        result = pending[0].finish()
        return self._output(method, rgb, result, names, resolved, spec)

    def _output(self, method, rgb, result, names, resolved, spec) -> SegmentationOutput:
        subclass_names: list[str] = []
        owners: list[int] = []
        if resolved is not None:
            table = getattr(method, "names", None)  # the exact list the method's subclass indices point into
            if not isinstance(table, NameTable):
                table = NameTable.build(names, resolved, self.config.include_class_name)
            subclass_names, owners = list(table.names), list(table.owners)
        height, width = rgb.shape[:2]
        subclass = result.subclass
        if subclass is None or resolved is None:  # without a label set the "names" are the classes: no subclass
            subclass = np.full((height, width), -1, dtype=np.int32)
        return SegmentationOutput(
            image=rgb,
            labels=np.asarray(result.labels).astype(np.int64),
            scores=None if result.scores is None else np.asarray(result.scores, dtype=np.float32),
            subclass=np.asarray(subclass).astype(np.int32),
            classes=names,
            subclass_names=subclass_names,
            subclass_owners=owners,
            palette=palette_for(names, spec.name if spec is not None and list(spec.classes) == names else None),
            extras=dict(result.extras),
        )

    def describe(self) -> dict[str, Any]:
        """The configuration and the backbone's identity (weights hashes)."""
        return {"config": json.loads(self.config.model_dump_json()), "backbone": self.backbone.describe()}
