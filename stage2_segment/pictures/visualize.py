"""Pictures of a segmentation: colour overlays with a legend, palette PNGs, subclass maps.

The legend sits beside the photo (never over it) and lists the classes present with their
share of the image's pixels, largest first. Label values outside 0..C-1 (255 = ignore, -1 =
none) are left uncoloured and out of the legend. Only numpy and PIL: no torch here, so the
engine can draw pictures in its CPU workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from llmseg.io import atomic_path
from llmseg.stage2.pictures.palettes import full_palette, palette_for

BOUNDARY_COLOR = (255, 255, 255)
LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_TEXT = (0, 0, 0)


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or an HxWx3 uint8 array -> a C-contiguous HxWx3 uint8 array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be an HxWx3 uint8 array, got shape {array.shape} dtype {array.dtype}")
    return np.ascontiguousarray(array)


def _check_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"label map has shape {labels.shape}, the image is {shape}")
    return labels.astype(np.int64, copy=False)


def area_shares(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """{id: share of the image's pixels} for every id in 0..num_classes-1 that occurs, largest first."""
    flat = np.asarray(labels).reshape(-1).astype(np.int64)
    valid = flat[(flat >= 0) & (flat < num_classes)]
    if valid.size == 0:
        return {}
    counts = np.bincount(valid, minlength=num_classes)
    order = sorted(np.flatnonzero(counts).tolist(), key=lambda i: (-counts[i], i))
    return {int(i): float(counts[i]) / flat.size for i in order}


def colorize(labels: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label map -> (HxWx3 uint8 colours, HxW bool 'has a class') using colours[id]."""
    labels = np.asarray(labels).astype(np.int64)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    valid = (labels >= 0) & (labels < len(colors))
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    out[valid] = colors[labels[valid]]
    return out, valid


def boundary_mask(labels: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Pixels where the label changes to a right or lower neighbour, grown to `thickness`."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    horizontal = labels[:, 1:] != labels[:, :-1]
    vertical = labels[1:, :] != labels[:-1, :]
    edge[:, :-1] |= horizontal
    edge[:-1, :] |= vertical
    grown = edge.copy()
    for _ in range(max(0, thickness - 1)):
        step = grown.copy()
        step[1:, :] |= grown[:-1, :]
        step[:-1, :] |= grown[1:, :]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown


def _rgb(color: np.ndarray) -> tuple[int, int, int]:
    """One palette row as plain ints."""
    return int(color[0]), int(color[1]), int(color[2])


def legend_font(image_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font, sized to the image (bitmap fallback when FreeType is missing)."""
    size = int(min(28, max(11, round(image_height / 28))))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType
        return ImageFont.load_default()


@dataclass(frozen=True)
class LegendEntry:
    name: str
    color: tuple[int, int, int]
    share: float

    @property
    def text(self) -> str:
        percent = 100.0 * self.share
        return f"{self.name}  <0.1%" if 0.0 < percent < 0.05 else f"{self.name}  {percent:.1f}%"


def render_legend(entries: Sequence[LegendEntry], min_height: int, font=None) -> Image.Image:
    """A white panel with one swatch + 'name  share%' row per entry, in columns if they do not fit."""
    font = font or legend_font(min_height)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows = list(entries) or [LegendEntry("(no class)", LEGEND_BACKGROUND, 0.0)]
    texts = [e.text if entries else e.name for e in rows]
    boxes = [probe.textbbox((0, 0), t, font=font) for t in texts]
    # Pillow types text boxes as floats; an integer-sized font (legend_font) gives ints
    line = int(max(max(b[3] for b in boxes), probe.textbbox((0, 0), "Hg", font=font)[3]))
    pad = max(4, line // 3)
    row_h = line + pad
    swatch = line
    height = max(min_height, min(len(rows), 10) * row_h + pad)
    per_column = max(1, (height - pad) // row_h)
    columns = math.ceil(len(rows) / per_column)
    text_w = int(max(b[2] for b in boxes))
    column_w = pad + swatch + pad + text_w + pad
    panel = Image.new("RGB", (columns * column_w + pad, height), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for index, (entry, text) in enumerate(zip(rows, texts, strict=True)):
        x = (index // per_column) * column_w + pad
        y = (index % per_column) * row_h + pad
        if entries:
            draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=entry.color, outline=LEGEND_TEXT)
        draw.text((x + swatch + pad, y), text, fill=LEGEND_TEXT, font=font)
    return panel


def _beside(picture: Image.Image, panel: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (picture.width + panel.width, max(picture.height, panel.height)), LEGEND_BACKGROUND)
    canvas.paste(picture, (0, 0))
    canvas.paste(panel, (picture.width, 0))
    return canvas


def _blend(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float, boundaries: bool) -> Image.Image:
    painted, valid = colorize(labels, colors)
    out = image.astype(np.float32)
    out[valid] = (1.0 - alpha) * out[valid] + alpha * painted[valid].astype(np.float32)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if boundaries:
        thickness = max(1, round(min(labels.shape) / 256))
        out[boundary_mask(labels, thickness)] = BOUNDARY_COLOR
    return Image.fromarray(out)


def overlay(
    image: Image.Image | np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray | None = None,
    *,
    dataset: str | None = None,
    alpha: float = 0.5,
    boundaries: bool = True,
    legend: bool = True,
) -> Image.Image:
    """The photo with class colours blended in, class boundaries drawn and a legend to the right.

    `palette`: [C, 3] colours (default: `palette_for(class_names, dataset)`). The result is the
    image's size plus the legend panel's width (and height, if the legend is taller).
    """
    rgb = as_rgb_array(image)
    labels = _check_labels(labels, rgb.shape[:2])
    colors = palette_for(list(class_names), dataset) if palette is None else np.asarray(palette, np.uint8)
    if len(colors) < len(class_names):
        raise ValueError(f"palette has {len(colors)} colours for {len(class_names)} classes")
    picture = _blend(rgb, labels, colors, alpha, boundaries)
    if not legend:
        return picture
    shares = area_shares(labels, len(class_names))
    entries = [LegendEntry(class_names[i], _rgb(colors[i]), s) for i, s in shares.items()]
    return _beside(picture, render_legend(entries, rgb.shape[0]))


def comparison(
    image: Image.Image | np.ndarray,
    maps: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    palette: np.ndarray | None = None,
    *,
    dataset: str | None = None,
    alpha: float = 0.5,
    gap: int = 4,
) -> Image.Image:
    """Side by side, titled: the image, then each (title, label map) blended in one palette, then one legend.

    The legend lists every class present in any of the maps with its share in the last one (the
    prediction, by convention: `evaluate --save-vis` passes ground truth, prediction). Ids outside
    0..C-1 (255 = ignore) stay uncoloured in every panel.
    """
    rgb = as_rgb_array(image)
    colors = palette_for(list(class_names), dataset) if palette is None else np.asarray(palette, np.uint8)
    if len(colors) < len(class_names):
        raise ValueError(f"palette has {len(colors)} colours for {len(class_names)} classes")
    checked = [(title, _check_labels(labels, rgb.shape[:2])) for title, labels in maps]
    panels = [("image", Image.fromarray(rgb))] + [(t, _blend(rgb, m, colors, alpha, True)) for t, m in checked]
    font = legend_font(rgb.shape[0])
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_h = int(probe.textbbox((0, 0), "Hg", font=font)[3]) + 6  # an int for an integer-sized font
    present: set[int] = set()
    for _, labels in checked:
        present |= set(area_shares(labels, len(class_names)))
    last = area_shares(checked[-1][1], len(class_names)) if checked else {}
    order = sorted(present, key=lambda i: (-last.get(i, 0.0), i))
    entries = [LegendEntry(class_names[i], _rgb(colors[i]), last.get(i, 0.0)) for i in order]
    legend = render_legend(entries, rgb.shape[0], font=font)
    width = sum(p.width + gap for _, p in panels) + legend.width
    canvas = Image.new("RGB", (width, title_h + max(rgb.shape[0], legend.height)), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for title, panel in panels:
        draw.text((x + 2, 2), title, fill=LEGEND_TEXT, font=font)
        canvas.paste(panel, (x, title_h))
        x += panel.width + gap
    canvas.paste(legend, (x, title_h))
    return canvas


def subclass_overlay(
    image: Image.Image | np.ndarray,
    subclass: np.ndarray,
    subclass_names: Sequence[str],
    owners: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    palette: np.ndarray | None = None,
    *,
    alpha: float = 0.5,
    boundaries: bool = True,
) -> Image.Image:
    """Which subclass won at each pixel (-1 = none, left uncoloured), with its own legend.

    `subclass` indexes the flat label-set name list; with `owners` (the class index of each
    flat name) and `class_names`, legend rows read "subclass (class)".
    """
    rgb = as_rgb_array(image)
    subclass = _check_labels(subclass, rgb.shape[:2])
    names = list(subclass_names)
    colors = palette_for(names) if palette is None else np.asarray(palette, np.uint8)
    picture = _blend(rgb, subclass, colors, alpha, boundaries)
    entries = []
    for index, share in area_shares(subclass, len(names)).items():
        label = names[index]
        if owners is not None and class_names is not None:
            label = f"{label} ({class_names[owners[index]]})"
        entries.append(LegendEntry(label, _rgb(colors[index]), share))
    return _beside(picture, render_legend(entries, rgb.shape[0]))


def label_png(labels: np.ndarray, colors: np.ndarray, ignore_index: int = 255) -> Image.Image:
    """A 'P'-mode image holding the class id of each pixel, with the class colours attached.

    Ids must lie in 0..255 (-1 is stored as `ignore_index`); the pixel value IS the class id.
    """
    labels = np.asarray(labels).astype(np.int64)
    labels = np.where(labels < 0, ignore_index, labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"a palette PNG holds ids 0..255, the label map has {int(labels.min())}..{int(labels.max())}")
    data = np.ascontiguousarray(labels.astype(np.uint8))
    picture = Image.frombytes("P", (data.shape[1], data.shape[0]), data.tobytes())
    picture.putpalette(full_palette(colors, ignore_index).reshape(-1).tolist())
    return picture


MAX_PALETTE_CLASSES = 255  # a 'P'-mode PNG holds ids 0..255, and 255 is its "no class" value
IGNORE_16BIT = 65535  # "no class" in 16-bit label maps, as in the ade847 / pc459 TIFF labels


def label_png16(labels: np.ndarray, ignore_index: int = IGNORE_16BIT) -> Image.Image:
    """A 16-bit greyscale image holding the class id of each pixel (-1 stored as `ignore_index`).

    For class lists a palette cannot hold (ade847, pc459, a user's 300 classes): the pixel value is
    still the class id, read back by `np.array(Image.open(path))` or `llmseg score`.
    """
    labels = np.asarray(labels).astype(np.int64)
    labels = np.where(labels < 0, ignore_index, labels)
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"a 16-bit PNG holds ids 0..65535, the label map has {int(labels.min())}..{int(labels.max())}")
    return Image.fromarray(np.ascontiguousarray(labels.astype(np.uint16)))


def label_picture(labels: np.ndarray, colors: np.ndarray, num_classes: int) -> Image.Image:
    """The label map of a `num_classes` class list: a palette PNG when the ids fit one, else 16-bit grey.

    Chosen by the class count, not by the ids one image happens to hold, so every label map of a
    run has the same format; past 255 classes a class id would meet the palette's "no class" 255.
    """
    if num_classes > MAX_PALETTE_CLASSES:
        return label_png16(labels)
    return label_png(labels, colors)


def save_image(path: str | os.PathLike[str], picture: Image.Image) -> Path:
    """Write a PIL image atomically (format from the suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    return path


def save_label_png(path: str | Path, labels: np.ndarray, colors: np.ndarray, ignore_index: int = 255) -> Path:
    """Write a label map as a palette PNG, atomically."""
    return save_image(path, label_png(labels, colors, ignore_index))


def titled_panels(
    panels: Sequence[tuple[str, Image.Image]],
    classes: Sequence[str],
    colours: np.ndarray,
    shown: Sequence[int],
    *,
    title_h: int = 20,
    legend_w: int = 190,
    gap: int = 4,
) -> Image.Image:
    """Panels side by side, each under its title, and a colour legend of the `shown` classes on the right.

    One layout for every side-by-side picture (demo run, compare): picture | ground truth | predictions.
    """
    font = legend_font(max(p.height for _, p in panels))
    height = max(max(p.height for _, p in panels), 6 + 20 * len(shown)) + title_h
    canvas = Image.new("RGB", (sum(p.width + gap for _, p in panels) + legend_w, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for title, panel in panels:
        draw.text((x + 2, 2), title, fill=(0, 0, 0), font=font)
        canvas.paste(panel.convert("RGB"), (x, title_h))
        x += panel.width + gap
    for row, index in enumerate(shown):
        y = title_h + 6 + 20 * row
        draw.rectangle((x, y, x + 12, y + 12), fill=tuple(int(v) for v in colours[index]), outline=(0, 0, 0))
        draw.text((x + 18, y), classes[index], fill=(0, 0, 0), font=font)
    return canvas
