"""Pieces both methods share: the flat name list, image tensors, index-based resizes (numpy, torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmseg.labelset import LabelSet


@dataclass(frozen=True)
class NameTable:
    """The names that get a text embedding, in LabelSet.flat_names order, and each one's class."""

    names: list[str]
    owners: list[int]
    from_label_set: bool

    @classmethod
    def build(cls, classes: Sequence[str], label_set: LabelSet | None, include_class_name: bool) -> NameTable:
        if label_set is None:
            return cls(list(classes), list(range(len(classes))), False)
        if label_set.classes != list(classes):
            raise ValueError("label set keys differ from the class list (load it with load_label_set(path, classes))")
        ls = label_set.with_class_names() if include_class_name else label_set
        names, owners = ls.flat_names()
        return cls(names, owners, True)

    def slice_of(self, cls_index: int) -> slice:
        """The contiguous block of names of one class (assembly's own grouping rule)."""
        return class_slices(self.owners, self.owners[-1] + 1)[cls_index]


def class_slices(owners: Sequence[int], num_classes: int) -> list[slice]:
    """The contiguous block of names of each class; every class needs at least one name.

    Here, torch-free, beside NameTable: the assembly rules, the dense method and NameTable.slice_of use it.
    """
    owners = [int(o) for o in owners]
    if any(b < a for a, b in zip(owners, owners[1:], strict=False)):
        raise ValueError("assembly: names must be grouped by class in class order (LabelSet.flat_names)")
    slices = []
    start = 0
    for c in range(num_classes):
        end = start
        while end < len(owners) and owners[end] == c:
            end += 1
        if end == start:
            raise ValueError(f"assembly: class {c} has no names")
        slices.append(slice(start, end))
        start = end
    if start != len(owners):
        raise ValueError(f"assembly: owners name classes beyond {num_classes - 1}")
    return slices


def has_background(classes: Sequence[str], dataset_background: bool | None) -> bool:
    """Class 0 is background: the dataset registry says so, or (no dataset) class 0 is named 'background'."""
    if dataset_background is not None:
        return dataset_background
    return bool(classes) and classes[0].strip().lower() == "background"


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output position, as OpenCV's INTER_NEAREST computes it (the seed's cv2.resize).

    OpenCV takes the scale as a double, fx = out / in, inverts it, ifx = 1 / fx, and reads source
    index floor(x * ifx), clamped to in - 1. The double rounding of 1 / (out / in) makes this differ from
    floor(x * in / out) (torch 'nearest') for some sizes: from 288, 107 of the output sizes 1..1024,
    among them 334, 448 and 640. See docs/methods.md, "LLM supervision", step 9.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"nearest_indices: sizes must be >= 1, got {in_size} -> {out_size}")
    inverse = 1.0 / (float(out_size) / float(in_size))
    return np.minimum(np.floor(np.arange(out_size, dtype=np.float64) * inverse).astype(np.int64), in_size - 1)


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes, OpenCV INTER_NEAREST indices (nearest_indices)."""
    rows = nearest_indices(array.shape[-2], height)
    cols = nearest_indices(array.shape[-1], width)
    return array[..., rows[:, None], cols[None, :]]
