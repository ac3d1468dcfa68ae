"""SegMetric vs a direct float64 per-class formula over the whole dataset (MMSeg's definition)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmseg.stage2.data import load_label
from llmseg.stage2.engine.metrics import SegMetric, summarize_confusion
from llmseg.stage2.pictures.palettes import voc_palette
from llmseg.stage2.pictures.visualize import save_label_png


def _direct(preds, labels, num_classes, ignore=255):
    """Per-class intersection / union / areas summed over all images, by boolean masks."""
    inter = np.zeros(num_classes)
    area_p = np.zeros(num_classes)
    area_l = np.zeros(num_classes)
    for p, t in zip(preds, labels, strict=True):
        valid = t != ignore
        for c in range(num_classes):
            pc = (p == c) & valid
            tc = (t == c) & valid
            inter[c] += float((pc & tc).sum())
            area_p[c] += float(pc.sum())
            area_l[c] += float(tc.sum())
    union = area_l + area_p - inter
    iou = [inter[c] / union[c] if union[c] > 0 else math.nan for c in range(num_classes)]
    acc = [inter[c] / area_l[c] if area_l[c] > 0 else math.nan for c in range(num_classes)]
    miou = float(np.mean([v for v in iou if not math.isnan(v)]))
    macc = float(np.mean([v for v in acc if not math.isnan(v)]))
    return dict(mIoU=miou, mAcc=macc, aAcc=inter.sum() / area_l.sum(), IoU=iou, Acc=acc)


def _compare(got, want):
    assert got["mIoU"] == pytest.approx(want["mIoU"], abs=1e-12)
    assert got["mAcc"] == pytest.approx(want["mAcc"], abs=1e-12)
    assert got["aAcc"] == pytest.approx(want["aAcc"], abs=1e-12)
    np.testing.assert_allclose(got["IoU"], want["IoU"], atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got["Acc"], want["Acc"], atol=1e-12, equal_nan=True)


def _random_data(seed, num_classes, n=6):
    rng = np.random.default_rng(seed)
    preds, labels = [], []
    for i in range(n):
        h, w = int(rng.integers(5, 30)), int(rng.integers(5, 30))
        # classes 3 and 4 never appear in labels; class 4 is predicted (IoU 0, Acc NaN); 5 never anywhere
        label_values = [c for c in range(num_classes) if c not in (3, 4, 5)] + [255]
        pred_values = [c for c in range(num_classes) if c != 5]
        t = rng.choice(label_values, size=(h, w))
        p = np.where(rng.random((h, w)) < 0.5, t, rng.choice(pred_values, size=(h, w)))
        p[p == 255] = 0
        if i == 2:
            t[:] = 255  # an all-ignore image
        preds.append(p.astype(np.int64))
        labels.append(t.astype(np.int64))
    return preds, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmetric_matches_direct_formula(seed):
    c = 9
    preds, labels = _random_data(seed, c)
    metric = SegMetric(c)
    for p, t in zip(preds, labels, strict=True):
        metric.update(torch.from_numpy(p), t)  # tensors and numpy both accepted
    got = metric.compute()
    want = _direct(preds, labels, c)
    _compare(got, want)
    assert math.isnan(got["IoU"][5]) and math.isnan(got["Acc"][3])
    assert got["IoU"][4] == 0.0 and math.isnan(got["Acc"][4])  # predicted but absent: counts in mIoU, not mAcc
    assert got["num_images"] == len(preds)


def test_per_image_average_is_not_used():
    c = 3
    preds = [np.array([[0, 0, 1, 1]]), np.array([[2, 2, 2, 0]])]
    labels = [np.array([[0, 1, 1, 1]]), np.array([[2, 0, 0, 0]])]
    metric = SegMetric(c)
    for p, t in zip(preds, labels, strict=True):
        metric.update(p, t)
    _compare(metric.compute(), _direct(preds, labels, c))
    per_image = []
    for p, t in zip(preds, labels, strict=True):
        m = SegMetric(c)
        m.update(p, t)
        per_image.append(m.compute()["mIoU"])
    assert metric.compute()["mIoU"] != pytest.approx(np.mean(per_image))


def test_reduce_zero_label_path(tmp_path):
    """Labels read with reduce_zero_label: raw 0 is ignored, k -> k-1, 255 stays ignored."""
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 6, size=(12, 10))
    raw[0, :] = 255
    save_label_png(tmp_path / "l.png", raw, voc_palette())
    label = load_label(tmp_path / "l.png", reduce_zero_label=True)
    expected = np.where((raw == 0) | (raw == 255), 255, raw - 1)
    np.testing.assert_array_equal(label, expected)
    pred = rng.integers(0, 5, size=raw.shape)
    metric = SegMetric(5)
    metric.update(pred, label)
    _compare(metric.compute(), _direct([pred], [expected], 5))
    assert metric.compute()["num_pixels"] == int(((raw != 0) & (raw != 255)).sum())


def test_merge_state_dict_and_errors():
    c = 6
    preds, labels = _random_data(7, c, n=4)
    whole = SegMetric(c)
    a, b = SegMetric(c), SegMetric(c)
    for i, (p, t) in enumerate(zip(preds, labels, strict=True)):
        whole.update(p, t)
        (a if i % 2 else b).update(p, t)
    a.merge(b)
    assert torch.equal(a.confusion, whole.confusion) and a.num_images == whole.num_images
    restored = SegMetric(c)
    restored.load_state_dict(whole.state_dict())
    assert torch.equal(restored.confusion, whole.confusion)
    with pytest.raises(ValueError, match="predicted class ids"):
        whole.update(np.full((2, 2), c), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="label values"):
        whole.update(np.zeros((2, 2), int), np.full((2, 2), 7))
    with pytest.raises(ValueError, match="shape"):
        whole.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    # all-ignore only: NaN summaries, not a crash
    empty = SegMetric(c)
    empty.update(np.zeros((2, 2), int), np.full((2, 2), 255))
    assert math.isnan(empty.compute()["mIoU"]) and math.isnan(summarize_confusion(np.zeros((2, 2)))["aAcc"])


def test_non_strict_out_of_range_predictions_count_as_label_area_only():
    """Scoring foreign PNGs: a predicted 255 hits no class (MMSeg's histc drops it) but the label counts."""
    c = 4
    rng = np.random.default_rng(11)
    t = rng.integers(0, c, size=(10, 10))
    p = rng.integers(0, c, size=(10, 10))
    p[:3] = 255
    metric = SegMetric(c, strict=False)
    metric.update(p, t)
    got = metric.compute()
    _compare(got, _direct([p], [t], c))
    assert got["num_pixels"] == 100
