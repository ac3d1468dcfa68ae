"""Streaming segmentation metrics exactly as MMSegmentation computes them (docs/methods.md, "The metric").

A confusion matrix conf[t, p] (int64, on the model's device) is accumulated with one
`bincount` per image over the pixels whose label is not the ignore index; it has one extra
column for predictions outside 0..C-1 (only possible with strict=False, used when scoring other
programs' PNGs: such pixels count in the label area and in no class's prediction area, as
MMSeg's histogram does). From it:
intersection = diag, label area = row sums, prediction area = column sums,
union = label + prediction - intersection; IoU = I / U (NaN where U = 0),
Acc = I / label area (NaN where the class never occurs in the labels),
mIoU / mAcc = NaN-skipping means, aAcc = sum I / sum label area. Never a per-image average.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


class SegMetric:
    """Accumulates a [C, C + 1] confusion matrix (rows = ground truth, columns = prediction, last = none).

    strict (default): a predicted id outside 0..C-1 raises; otherwise it lands in the last column.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: Any = "cpu", strict: bool = True) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.device = torch.device(device)
        self.strict = strict
        self.confusion = torch.zeros((num_classes, num_classes + 1), dtype=torch.int64, device=self.device)
        self.num_images = 0

    def reset(self) -> None:
        self.confusion.zero_()
        self.num_images = 0

    def _as_tensor(self, array: Any):
        if isinstance(array, np.ndarray):
            array = torch.from_numpy(np.ascontiguousarray(array))
        return array.to(self.device, non_blocking=True).long().reshape(-1)

    def update(self, pred: Any, target: Any) -> None:
        """Add one image (or a batch of equally shaped images): pred and target of the same shape."""
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(target.shape)}")
        p, t = self._as_tensor(pred), self._as_tensor(target)
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        c = self.num_classes
        if t.numel():
            lo, hi = torch.aminmax(t)
            if int(lo) < 0 or int(hi) >= c:
                raise ValueError(f"label values must be in 0..{c - 1} or {self.ignore_index}; found {int(lo)}..{int(hi)}")
            lo, hi = torch.aminmax(p)
            if int(lo) < 0 or int(hi) >= c:
                if self.strict:
                    raise ValueError(f"predicted class ids must be in 0..{c - 1}; found {int(lo)}..{int(hi)}")
                p = torch.where((p < 0) | (p >= c), c, p)
            self.confusion += torch.bincount(t * (c + 1) + p, minlength=c * (c + 1)).reshape(c, c + 1)
        self.num_images += 1

    def merge(self, other: SegMetric) -> SegMetric:
        """Add another metric's counts into this one (e.g. results of another worker)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge metrics with {other.num_classes} and {self.num_classes} classes")
        self.confusion += other.confusion.to(self.device)
        self.num_images += other.num_images
        return self

    def all_reduce(self) -> None:
        """Sum the confusion matrix and image count over all torch.distributed ranks (in place)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        dist.all_reduce(self.confusion, op=dist.ReduceOp.SUM)
        count = torch.tensor([self.num_images], dtype=torch.int64, device=self.confusion.device)
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
        self.num_images = int(count.item())

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "num_images": self.num_images,
            "confusion": self.confusion.cpu().numpy().tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(f"checkpoint has {state['num_classes']} classes, the metric {self.num_classes}")
        conf = torch.tensor(state["confusion"], dtype=torch.int64)
        if tuple(conf.shape) != (self.num_classes, self.num_classes + 1):
            raise ValueError(f"checkpoint confusion matrix has shape {tuple(conf.shape)}")
        self.confusion = conf.to(self.device)
        self.num_images = int(state["num_images"])

    def compute(self) -> dict[str, Any]:
        """Fractions in [0, 1]: mIoU, mAcc, aAcc, per-class IoU/Acc lists (NaN = absent), areas."""
        return summarize_confusion(self.confusion.cpu().numpy(), self.num_images)


def summarize_confusion(confusion: np.ndarray, num_images: int = 0) -> dict[str, Any]:
    """The MMSegmentation metrics from a [C, C] or [C, C + 1] confusion matrix (rows = ground truth)."""
    conf = np.asarray(confusion, dtype=np.float64)
    c = conf.shape[0]
    inter = np.diag(conf[:, :c])
    area_label = conf.sum(axis=1)
    area_pred = conf[:, :c].sum(axis=0)
    union = area_label + area_pred - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        acc = np.where(area_label > 0, inter / area_label, np.nan)
    total = area_label.sum()
    return {
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "aAcc": float(inter.sum() / total) if total > 0 else math.nan,
        "IoU": iou.tolist(),
        "Acc": acc.tolist(),
        "area_intersect": inter.astype(np.int64).tolist(),
        "area_label": area_label.astype(np.int64).tolist(),
        "area_pred": area_pred.astype(np.int64).tolist(),
        "num_pixels": int(total),
        "num_images": int(num_images),
    }


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else math.nan
