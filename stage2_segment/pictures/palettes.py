"""Colour palettes for label maps and overlays: the benchmarks' standard ones and a fixed distinct one.

Facts encoded here:
- PASCAL VOC (and PASCAL Context, whose converted labels use the same colour map): the VOC
  devkit's bit-pattern palette, where the bits of a label id are spread over the high bits of
  R, G and B (1 -> (128, 0, 0), 2 -> (0, 128, 0), 255 -> (224, 224, 192)).
- Cityscapes: the 19 train-id colours of the official cityscapesScripts label table.
- VOC20 / PC59 (background dropped) take the VOC colour of their original id, so a class keeps
  its colour across the two variants.
Which one a dataset uses is its dataset.json's "palette": a name in `PALETTES` or one [r, g, b] per class.
Everything else (ADE20K, COCO-Stuff, COCO-Object, user classes) gets `distinct_palette`: a
deterministic glasbey-style list, each colour the sRGB grid point farthest (in CIELAB) from
every colour already chosen, black and white included, lightness kept within L* 25..92. Its first colours are saturated and far
apart, which is what matters when a picture shows a handful of classes. A class list whose first
name is "background" gets black for it, as in VOC.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from llmseg.datasets import DatasetError, DatasetSpec, find_dataset
from llmseg.registry import Registry

IGNORE_COLOR = (224, 224, 192)  # VOC's colour for 255, used for "ignore" in every palette
BACKGROUND_COLOR = (0, 0, 0)

CITYSCAPES: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),  # road
    (244, 35, 232),  # sidewalk
    (70, 70, 70),  # building
    (102, 102, 156),  # wall
    (190, 153, 153),  # fence
    (153, 153, 153),  # pole
    (250, 170, 30),  # traffic light
    (220, 220, 0),  # traffic sign
    (107, 142, 35),  # vegetation
    (152, 251, 152),  # terrain
    (70, 130, 180),  # sky
    (220, 20, 60),  # person
    (255, 0, 0),  # rider
    (0, 0, 142),  # car
    (0, 0, 70),  # truck
    (0, 60, 100),  # bus
    (0, 80, 100),  # train
    (0, 0, 230),  # motorcycle
    (119, 11, 32),  # bicycle
)


def voc_palette(n: int = 256) -> np.ndarray:
    """The VOC devkit colour map: [n, 3] uint8."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        r = g = b = 0
        code = index
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        out[index] = (r, g, b)
    return out


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 [N, 3] -> CIELAB (D65) float64 [N, 3]."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    delta = 6.0 / 29.0
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4.0 / 29.0)
    return np.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1)


@lru_cache(maxsize=1)
def _distinct_table() -> np.ndarray:
    levels = np.linspace(0, 255, 16).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = _srgb_to_lab(grid)
    keep = (lab[:, 0] >= 25.0) & (lab[:, 0] <= 92.0)  # no near-black (background) or near-white (paper)
    grid, lab = grid[keep], lab[keep]
    chosen: list[int] = []
    # distance to the nearest colour already "used": black and white count as used
    nearest = np.full(len(grid), np.inf)
    for fixed in (np.array([[0, 0, 0]], np.uint8), np.array([[255, 255, 255]], np.uint8)):
        nearest = np.minimum(nearest, np.linalg.norm(lab - _srgb_to_lab(fixed), axis=1))
    for _ in range(256):
        pick = int(np.argmax(nearest))  # ties: lowest grid index, so the list is deterministic
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[pick], axis=1))
    table = grid[chosen]
    table.flags.writeable = False
    return table


def distinct_palette(n: int) -> np.ndarray:
    """n well-separated colours [n, 3] uint8, always the same list (cycled past 256)."""
    table = _distinct_table()
    return table[np.arange(n) % len(table)].copy()


def _voc(num_classes: int) -> np.ndarray:
    """VOC devkit colours of ids 0..C-1 (VOC21, PASCAL Context 60)."""
    return voc_palette(256)[:num_classes].copy()


def _voc_no_background(num_classes: int) -> np.ndarray:
    """VOC colours of ids 1..C: VOC20 / PC59 keep each class's colour from the variant with background."""
    return voc_palette(256)[1 : 1 + num_classes].copy()


def _cityscapes(num_classes: int) -> np.ndarray | None:
    """The 19 Cityscapes train-id colours (None for longer class lists)."""
    return np.array(CITYSCAPES[:num_classes], dtype=np.uint8) if num_classes <= len(CITYSCAPES) else None


def _distinct(num_classes: int) -> None:
    """The distinct palette (black for a class 0 named background): `palette_for`'s fallback."""
    return None


# A palette name in dataset.json -> a builder of [C, 3] colours (None: fall back to the distinct palette).
# A new palette is one `PALETTES.register("name")(builder)` call.
PALETTES: Registry[Callable[[int], np.ndarray | None]] = Registry("palette", group="llmseg.palettes")
for _name, _builder in (("voc", _voc), ("voc_no_background", _voc_no_background), ("cityscapes", _cityscapes),
                        ("distinct", _distinct)):
    PALETTES.register(_name)(_builder)


def dataset_palette(dataset: str | DatasetSpec, num_classes: int) -> np.ndarray | None:
    """The palette a dataset's dataset.json names ([num_classes, 3]), or None if it names none."""
    spec = dataset if isinstance(dataset, DatasetSpec) else find_dataset(dataset)
    if spec is None or spec.palette is None:
        return None
    if isinstance(spec.palette, str):
        if spec.palette not in PALETTES:
            where = spec.source or spec.name
            raise DatasetError(f"{where}: field 'palette': unknown palette '{spec.palette}': use one of "
                               f"{', '.join(PALETTES.names())} or a list of [r, g, b]")
        return PALETTES.get(spec.palette)(num_classes)
    if len(spec.palette) != num_classes:
        return None
    return np.array(spec.palette, dtype=np.uint8)


def palette_for(classes: list[str] | tuple[str, ...], dataset: str | DatasetSpec | None = None) -> np.ndarray:
    """One colour per class [C, 3] uint8: the dataset's standard palette, else the distinct one."""
    n = len(classes)
    if dataset is not None:
        standard = dataset_palette(dataset, n)
        if standard is not None:
            return standard
    if n and classes[0].strip().lower() == "background":
        return np.concatenate([np.array([BACKGROUND_COLOR], np.uint8), distinct_palette(n - 1)])
    return distinct_palette(n)


def full_palette(colors: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Pad class colours to the 256 entries of a 'P'-mode PNG, with IGNORE_COLOR at `ignore_index`."""
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(colors) > 256:
        raise ValueError(f"a palette PNG holds at most 256 colours, got {len(colors)} classes")
    out = np.zeros((256, 3), dtype=np.uint8)
    out[: len(colors)] = colors
    if len(colors) < 256:
        rest = distinct_palette(256)[len(colors) :]
        out[len(colors) :] = rest
    if 0 <= ignore_index < 256 and ignore_index >= len(colors):
        out[ignore_index] = IGNORE_COLOR
    return out
