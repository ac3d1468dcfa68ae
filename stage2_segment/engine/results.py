"""Result files of a run (`metrics.json`, `metrics.md`), prediction PNGs and overlays.

metrics.json holds percentages (0-100, like MMSegmentation's logs and the papers), `null`
for classes absent from both labels and predictions, and everything needed to reproduce the
number: settings, the method's own description, label-set / checkpoint hashes, versions, device.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from llmseg.datasets import file_name_problem, relative_path_problem
from llmseg.io import atomic_write_json, atomic_write_text, ensure_folder, sha256_file
from llmseg.redact import redact_urls
from llmseg.resources import resolve_label_set_path
from llmseg.stage2.data.readers import DataError
from llmseg.stage2.pictures.palettes import voc_palette
from llmseg.stage2.pictures.visualize import comparison, label_png16, overlay, save_image, save_label_png

PACKAGES = ("llmseg", "torch", "torchvision", "numpy", "pillow", "open_clip_torch", "timm", "transformers", "pydensecrf2")


def _pct(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(100.0 * value, 4)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "host": socket.gethostname()}
    try:
        if str(device).startswith("cuda") and torch.cuda.is_available():
            dev = torch.device(device)
            info["gpu"] = torch.cuda.get_device_name(dev)
            info["cuda"] = torch.version.cuda
    except Exception as exc:  # noqa: BLE001 - device info is best effort, never fatal
        info["gpu_error"] = str(exc)
    return info


def file_fingerprint(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """{path, sha256} of a local file; None when no path; {path, sha256: None} for a non-file (a tag)."""
    if not path:
        return None
    p = Path(str(path))
    if p.is_file():
        return {"path": str(p.resolve()), "sha256": sha256_file(p)}
    return {"path": str(path), "sha256": None}


def _find_path(sources: list[dict[str, Any]], *keys: str) -> str | None:
    """The first path-like value under one of `keys` (a string, or a dict with a "path")."""
    for source in sources:
        for key in keys:
            value = source.get(key)
            if isinstance(value, dict):
                value = value.get("path")
            if isinstance(value, str | os.PathLike) and str(value):
                return str(value)
    return None


def _label_set_fingerprint(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        path = str(resolve_label_set_path(path))
    except Exception:  # noqa: BLE001 - an unresolvable path is still recorded as given
        pass
    return file_fingerprint(path)


def build_report(
    *,
    spec,
    summary: dict[str, Any],
    method_description: dict[str, Any] | None,
    settings: dict[str, Any],
    extra_info: dict[str, Any] | None,
    skipped: list[dict[str, str]],
    wall_time_s: float,
    images_this_session: int,
    device: str,
    resumed: bool,
) -> dict[str, Any]:
    """The metrics.json document."""
    description = dict(method_description or {})
    extra = dict(extra_info or {})
    sources = [description, extra, extra.get("method_config") or {}]
    label_set = _find_path(sources, "label_set_path", "label_set")
    checkpoint = _find_path(sources, "checkpoint_path", "checkpoint")
    pretrained = _find_path(sources, "pretrained_path", "pretrained")
    per_class = [
        {"class": name, "IoU": _pct(iou), "Acc": _pct(acc), "label_pixels": int(lab), "pred_pixels": int(pred)}
        for name, iou, acc, lab, pred in zip(
            spec.classes, summary["IoU"], summary["Acc"], summary["area_label"], summary["area_pred"], strict=True
        )
    ]
    return {
        "dataset": spec.name,
        "split": spec.split,
        "num_classes": spec.num_classes,
        "units": "percent",
        "mIoU": _pct(summary["mIoU"]),
        "mAcc": _pct(summary["mAcc"]),
        "aAcc": _pct(summary["aAcc"]),
        "num_images": summary["num_images"],
        "num_pixels": summary["num_pixels"],
        "num_skipped": len(skipped),
        "skipped": skipped,
        "per_class": per_class,
        "method": description,
        "settings": settings,
        "extra": extra,
        "label_set": _label_set_fingerprint(label_set),
        "checkpoint": file_fingerprint(checkpoint),
        "pretrained": file_fingerprint(pretrained),
        "versions": package_versions(),
        "device": device_info(device),
        "wall_time_s": round(wall_time_s, 3),
        "images_per_s": round(images_this_session / wall_time_s, 4) if wall_time_s > 0 else None,
        "images_this_session": images_this_session,
        "resumed": resumed,
        "command": [redact_urls(arg) for arg in sys.argv],  # a weights URL may carry user:pw@ or ?token=
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "confusion_matrix": None,  # filled by write_results when asked
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    method = report.get("method") or {}
    title = method.get("name") or method.get("method") or "run"
    lines = [
        f"# {report['dataset']}: {title}",
        "",
        "| mIoU | mAcc | aAcc | images | skipped | wall time (s) | images/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {_fmt(report['mIoU'])} | {_fmt(report['mAcc'])} | {_fmt(report['aAcc'])} | {report['num_images']} | "
        f"{report['num_skipped']} | {report['wall_time_s']:.1f} | {report['images_per_s'] or 0:.3f} |",
        "",
        "Percentages, MMSegmentation's definition (dataset-level intersections and unions; '-' = class absent",
        "from both labels and predictions, left out of the means).",
        "",
        "| id | class | IoU | Acc |",
        "|---:|---|---:|---:|",
    ]
    for i, row in enumerate(report["per_class"]):
        lines.append(f"| {i} | {row['class']} | {_fmt(row['IoU'])} | {_fmt(row['Acc'])} |")
    if report["skipped"]:
        lines += ["", "## Skipped files", ""]
        lines += [f"- `{item['stem']}`: {item['error']}" for item in report["skipped"]]
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | os.PathLike, report: dict[str, Any], confusion: np.ndarray | None = None) -> Path:
    """(confusion.json +) metrics.md + metrics.json, each atomically. Returns metrics.json's path.

    metrics.json comes last, so its presence means the set is whole (compare and tune reuse a
    folder by it); a full disk part-way leaves no metrics.json and the rerun writes them all.
    """
    out = ensure_folder(out_dir)
    if confusion is not None:
        atomic_write_json(out / "confusion.json", {"rows": "label", "columns": "prediction (last = none)",
                                                    "matrix": np.asarray(confusion).tolist()}, indent=None)
        report = {**report, "confusion_matrix": "confusion.json"}
    atomic_write_text(out / "metrics.md", render_markdown(report))
    return atomic_write_json(out / "metrics.json", report)


def prediction_path(pred_dir: str | os.PathLike, stem: str, seg_map_suffix: str = ".png") -> Path:
    """Where `--save-pred` writes (and `score` first looks for) the PNG of sample `stem`.

    The stem and suffix come from data (a split file, dataset.json): one that would leave `pred_dir`
    is refused here too, whatever listed it.
    """
    what, problem = f"the stem {stem!r}", relative_path_problem(stem)
    if problem is None:
        what, problem = f"the suffix {seg_map_suffix!r}", file_name_problem(seg_map_suffix)
    if problem is not None:
        raise DataError(f"no prediction file for sample {stem!r} under {pred_dir}: {what} {problem}")
    return Path(pred_dir) / f"{stem}{seg_map_suffix}"


def save_prediction(pred_dir: str | os.PathLike, stem: str, labels: np.ndarray, seg_map_suffix: str = ".png") -> Path:
    """Palette PNG (VOC colours), pixel value = class id, named like the label file.

    A `.tif` label suffix (ade847, pc459: class ids past 255) gets a 16-bit greyscale TIFF of the ids;
    a PNG label map holding an id past 255 (a dataset of more classes stored as PNG) a 16-bit PNG.
    """
    path = prediction_path(pred_dir, stem, seg_map_suffix)
    if seg_map_suffix.lower() in (".tif", ".tiff"):
        ids = np.asarray(labels).astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() > 65535):
            raise ValueError(f"a 16-bit TIFF holds ids 0..65535, the label map has {int(ids.min())}..{int(ids.max())}")
        return save_image(path, Image.fromarray(ids.astype(np.uint16)))
    ids = np.asarray(labels)
    if ids.size and int(ids.max()) > 255:
        return save_image(path, label_png16(ids))
    return save_label_png(path, labels, voc_palette())


def save_overlay(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, class_names, dataset: str | None,
                 truth: np.ndarray | None = None) -> Path:
    """`--save-vis`: image | ground truth | prediction in the dataset's palette (the overlay alone without `truth`)."""
    if truth is None:
        return save_image(path, overlay(image, labels, list(class_names), dataset=dataset))
    return save_image(path, comparison(image, [("ground truth", truth), ("prediction", labels)], list(class_names),
                                       dataset=dataset))
