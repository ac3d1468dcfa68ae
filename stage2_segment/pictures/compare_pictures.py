"""The pictures of `llmseg compare`: bar charts (matplotlib, optional) and side-by-side overlays (PIL).

Charts use matplotlib's object API (Figure + Agg canvas, no pyplot state), so they work headless
and in threads. Without matplotlib (the `plots` extra: pip install 'llmseg[plots]') the charts
are skipped with a note in compare.md; the overlays need only Pillow.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from llmseg.datasets import get_dataset
from llmseg.io import atomic_path
from llmseg.stage2.data.readers import list_samples, load_image, load_label
from llmseg.stage2.engine.results import prediction_path
from llmseg.stage2.pictures.palettes import palette_for
from llmseg.stage2.pictures.visualize import overlay, save_image, titled_panels

CHART_CLASSES = 10  # classes per side (gained / lost) in a delta chart


def _figure(width: float, height: float):
    # lazy import: optional dependency (matplotlib, the plots extra)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def miou_chart(summary: dict[str, Any], path: Path) -> Path:
    """One panel per dataset: grouped bars, x = variant, one bar per label set."""
    cells = summary["cells"]
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    fig = _figure(max(4.5, 3.2 * len(datasets)), 3.6)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets, strict=True):
        mine = [c for c in cells if c["dataset"] == dataset]
        variants = list(dict.fromkeys(c["variant"] for c in mine))
        sets = list(dict.fromkeys(c["label_set"] for c in mine))
        width = 0.8 / len(sets)
        for j, name in enumerate(sets):
            values = [next((c["mIoU"] or 0.0 for c in mine if c["variant"] == v and c["label_set"] == name), 0.0)
                      for v in variants]
            xs = np.arange(len(variants)) + (j - (len(sets) - 1) / 2) * width
            bars = ax.bar(xs, values, width, label=name)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(np.arange(len(variants)), variants)
        ax.set_title(dataset)
        ax.set_ylabel("mIoU (%)")
        ax.set_ylim(0, max(1.0, max((c["mIoU"] or 0.0) for c in mine) * 1.15))
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a full disk: DiskWriteError naming the chart
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path


def delta_chart(deltas: Sequence[dict[str, Any]], title: str, path: Path) -> Path:
    """Per label set: the classes that gained and lost most IoU over class names (horizontal bars)."""
    fig = _figure(4.2 * len(deltas), 0.5 + 0.28 * min(2 * CHART_CLASSES, max(len(d["per_class"]) for d in deltas)) + 1)
    axes = fig.subplots(1, len(deltas), squeeze=False)[0]
    for ax, d in zip(axes, deltas, strict=True):
        rows = d["per_class"]
        if len(rows) > 2 * CHART_CLASSES:
            rows = rows[:CHART_CLASSES] + rows[-CHART_CLASSES:]
        rows = rows[::-1]  # largest gain on top
        values = [r["delta"] for r in rows]
        ax.barh(range(len(rows)), values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
        ax.set_yticks(range(len(rows)), [r["class"] for r in rows], fontsize=7)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel("IoU difference to names (points)")
        ax.set_title(f"{d['label_set']} ({d['delta']:+.2f} mIoU)" if d["delta"] is not None else d["label_set"], fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a full disk: DiskWriteError naming the chart
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path


def side_by_side(cells: Sequence[Any], data_root: str | os.PathLike, out: Path, n: int) -> list[Path]:
    """Per dataset and variant, for its first `n` images: picture | ground truth | each label set's prediction."""
    written: list[Path] = []
    groups: dict[tuple[str, str], list[Any]] = {}
    for cell in cells:
        groups.setdefault((cell.dataset, cell.variant), []).append(cell)
    for (dataset, variant), members in groups.items():
        spec = get_dataset(dataset)
        colours = palette_for(list(spec.classes), spec)
        suffix = spec.layout.seg_map_suffix if spec.layout else ".png"
        for ref in list_samples(spec, data_root, limit=n):
            preds = [(c.label_set, prediction_path(c.out / "pred", ref.stem, suffix)) for c in members]
            preds = [(name, p) for name, p in preds if p.is_file()]
            if not preds:
                continue
            image = load_image(ref.image_path)
            scale = max(1, 256 // max(1, min(image.shape[:2])))
            grow = np.ones((scale, scale), np.int64)
            big = np.kron(image, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else image
            assert ref.label_path is not None  # a benchmark's samples have labels
            truth = load_label(ref.label_path, spec.reduce_zero_label, spec.ignore_index)
            panels = [("picture", Image.fromarray(big)),
                      ("ground truth", overlay(big, np.kron(truth, grow), spec.classes, colours, legend=False))]
            present = set(np.unique(truth).tolist())
            for name, p in preds:
                labels = load_label(p)
                present |= set(np.unique(labels).tolist())
                panels.append((name, overlay(big, np.kron(labels, grow), spec.classes, colours, legend=False)))
            shown = [i for i in range(spec.num_classes) if i in present]  # the legend: classes shown anywhere
            canvas = titled_panels(panels, spec.classes, colours, shown)
            target = out / "overlays" / dataset / variant / f"{ref.stem}.png"
            written.append(save_image(target, canvas))
    return written


def draw_all(summary: dict[str, Any], cells: Sequence[Any], data_root: str | os.PathLike, out: Path, *,
             overlays: int, plots: bool) -> tuple[list[Path], list[str]]:
    """Every picture of a grid; returns their paths and notes (e.g. charts skipped without matplotlib)."""
    pictures: list[Path] = []
    notes: list[str] = []
    if plots:
        try:
            # lazy import: optional dependency (matplotlib, the plots extra)
            import matplotlib  # noqa: F401
        except ImportError:
            notes.append("charts skipped: matplotlib is not installed (pip install 'llmseg[plots]')")
        else:
            pictures.append(miou_chart(summary, out / "compare_miou.png"))
            by_pair: dict[tuple[str, str], list[dict]] = {}
            for d in summary["deltas"]:
                if d["per_class"]:
                    by_pair.setdefault((d["dataset"], d["variant"]), []).append(d)
            for (dataset, variant), deltas in by_pair.items():
                name = f"compare_delta_{dataset}_{variant}.png".replace("/", "_")
                pictures.append(delta_chart(deltas, f"{dataset} / {variant}: per-class IoU vs class names", out / name))
    if overlays > 0:
        pictures += side_by_side(cells, data_root, out, overlays)
    return pictures, notes
