"""ADE20K-Full (ade847) and PASCAL Context 459 (pc459): 16-bit TIFF labels past 255 with 65535 = ignore."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.datasets import get_dataset
from llmseg.stage2.data import BenchmarkDataset, list_samples, load_image
from llmseg.stage2.data.check import check_dataset
from llmseg.stage2.engine.metrics import SegMetric
from llmseg.stage2.engine.runner import RunConfig, evaluate
from llmseg.stage2.protocols import Done, SegResult
from llmseg.stage2.synthetic import write_synthetic_benchmark

runner = CliRunner()


def test_class_lists_are_the_fields():
    ade, pc = get_dataset("ade847"), get_dataset("pc459")
    assert ade.num_classes == 847 and pc.num_classes == 459
    assert ade.classes[:3] == ("wall", "building, edifice", "sky") and ade.classes[-1] == "adding machine, totalizer, totaliser"
    assert pc.classes[:2] == ("accordion", "aeroplane") and pc.classes[-1] == "wool"
    assert ade.ignore_index == pc.ignore_index == 65535 and not ade.reduce_zero_label and not pc.reduce_zero_label
    assert ade.layout.seg_map_suffix == pc.layout.seg_map_suffix == ".tif"
    assert ade.layout.root == "ADE20K_2021_17_01" and ade.layout.img_dir == "images_detectron2/validation"
    assert pc.layout.ann_dir == "annotations_detectron2/pc459_val"


@pytest.mark.parametrize("name", ["ade847", "pc459"])
def test_synthetic_tiff_labels_read_past_255_and_check(tmp_path, name):
    stems = write_synthetic_benchmark(name, tmp_path, 4, (24, 32), seed=3)
    spec = get_dataset(name)
    refs = list_samples(spec, tmp_path)
    assert [r.stem for r in refs] == stems
    seen = set()
    for ref in refs:
        with Image.open(ref.label_path) as img:
            assert img.mode == "I;16"
            raw = np.array(img).astype(np.int64)
        item = BenchmarkDataset(spec, tmp_path, samples=[ref])[0]
        assert np.array_equal(item["label"], raw)  # no remap, no 8-bit truncation
        seen.update(np.unique(raw).tolist())
    assert max(v for v in seen if v != 65535) > 255
    if name == "ade847":
        assert 65535 in seen
    report = check_dataset(spec, tmp_path, workers=0, progress=False)
    assert report.ok and report.num_samples == 4, report.problems
    res = runner.invoke(app, ["data", "check", name, "--data-root", str(tmp_path), "--workers", "0", "--no-progress"])
    assert res.exit_code == 0 and "4 samples checked" in res.output, res.output
    # a value past the classes (and not 65535) is reported, naming the file
    bad = refs[1].label_path
    with Image.open(bad) as img:
        values = np.array(img)
    values[0, 0] = spec.num_classes
    Image.fromarray(values).save(bad, format="TIFF")
    report = check_dataset(spec, tmp_path, workers=0, progress=False)
    assert [p[0] for p in report.problems] == [str(bad)] and f"0..{spec.num_classes - 1} and 65535" in report.problems[0][1]


def test_pc459_lists_the_label_files_not_every_voc_image(tmp_path):
    stems = write_synthetic_benchmark("pc459", tmp_path, 3, (16, 16))
    spec = get_dataset("pc459")
    extra = spec.data_dir(tmp_path) / spec.layout.img_dir / "2010_999999.jpg"  # a train image without a pc459 label
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(extra)
    assert [r.stem for r in list_samples(spec, tmp_path)] == stems


def test_metric_with_847_classes_and_ignore_65535_matches_direct_formula():
    rng = np.random.default_rng(0)
    c = 847
    target = rng.integers(0, c, (40, 50))
    target[rng.random(target.shape) < 0.2] = 65535
    pred = np.where(rng.random(target.shape) < 0.5, target, rng.integers(0, c, target.shape))
    pred = np.where(pred == 65535, 255, pred)  # the ignored pixels predicted as class 255: must not count
    metric = SegMetric(c, ignore_index=65535)
    metric.update(pred, target)
    got = metric.compute()
    valid = target != 65535
    iou = []
    for k in range(c):
        inter = float(((pred == k) & (target == k) & valid).sum())
        union = float((((pred == k) | (target == k)) & valid).sum())
        iou.append(inter / union if union else np.nan)
    assert np.allclose(got["IoU"], iou, equal_nan=True)
    assert got["num_pixels"] == int(valid.sum())
    assert got["mIoU"] == pytest.approx(float(np.nanmean(iou)), abs=1e-12)


class _Truth:
    """Returns each image's label (ignored pixels as class 300), found by the image's bytes."""

    def __init__(self, lookup, num_classes):
        self.lookup, self.num_classes, self.needs_cpu = lookup, num_classes, False

    def forward(self, images):
        return [Done(SegResult(labels=self.lookup[im.tobytes()].copy())) for im in images]

    def describe(self):
        return {"name": "truth"}


def test_evaluate_and_score_ade847_round_trip_through_16bit_predictions(tmp_path):
    root = tmp_path / "data"
    write_synthetic_benchmark("ade847", root, 3, (20, 24), seed=1)
    spec = get_dataset("ade847")
    lookup, truth = {}, []
    for ref in list_samples(spec, root):
        with Image.open(ref.label_path) as img:
            label = np.array(img).astype(np.int64)
        truth.append(label)
        lookup[load_image(ref.image_path).tobytes()] = np.where(label == 65535, 300, label)
    out = tmp_path / "run"
    report = evaluate(_Truth(lookup, 847), spec, root, RunConfig(out=str(out), num_workers=0, progress=False, save_pred=True))
    assert report["mIoU"] == pytest.approx(100.0) and report["num_images"] == 3
    preds = sorted((out / "pred").glob("*.tif"))
    assert len(preds) == 3 and Image.open(preds[0]).mode == "I;16"
    res = runner.invoke(app, ["score", "--dataset", "ade847", "--pred-dir", str(out / "pred"), "--data-root", str(root),
                              "--num-workers", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    scored = json.loads((out / "score" / "metrics.json").read_text())
    assert scored["mIoU"] == pytest.approx(100.0)
    assert scored["num_pixels"] == sum(int((t != 65535).sum()) for t in truth)


def _ade_raw_tree(root, ids):
    """ADE20K_2021_17_01 as unpacked: one validation image (short side 600) and its *_seg.png."""
    folder = root / "images/ADE/validation/cultural/apse_indoor"
    folder.mkdir(parents=True)
    h, w = 600, 700
    raw = np.full((h, w), ids[0], np.int64)  # wall
    raw[100:300, 50:400] = ids[300]
    raw[350:500, 200:650] = ids[846]
    raw[0:40, 0:40] = 9999  # an object outside the 847 classes
    seg = np.zeros((h, w, 3), np.uint8)
    seg[..., 0] = (raw // 256) * 10 + 3  # R/10 -> the high part (the +3 must be floored away)
    seg[..., 1] = raw % 256
    seg[..., 2] = 7  # instance channel: ignored
    Image.fromarray(seg).save(folder / "ADE_val_00000001_seg.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        folder / "ADE_val_00000001.jpg", quality=95)
    return raw


def test_convert_ade847_from_the_raw_release(tmp_path):
    import cv2

    root = tmp_path / "ADE20K_2021_17_01"
    ids_file = get_dataset("ade847").classes_file.parent / "ade20k_full_ids.txt"
    ids = [int(v) for v in ids_file.read_text().split()]
    raw = _ade_raw_tree(root, ids)
    res = runner.invoke(app, ["data", "convert", "ade847", str(root), "--workers", "0", "--no-progress"])
    assert res.exit_code == 0 and "1 written" in res.output, res.output
    label = np.array(Image.open(root / "annotations_detectron2/validation/ADE_val_00000001.tif"))
    assert label.dtype == np.uint16 and label.shape == (512, round(700 / 600 * 512))
    small = cv2.resize(raw.astype(np.int32), (label.shape[1], 512), interpolation=cv2.INTER_NEAREST)
    lookup = {raw_id: train for train, raw_id in enumerate(ids)}
    expected = np.vectorize(lambda v: lookup.get(int(v), 65535))(small)
    assert np.array_equal(label, expected) and {0, 300, 846, 65535} <= set(np.unique(label).tolist())
    image = Image.open(root / "images_detectron2/validation/ADE_val_00000001.jpg")
    assert image.size == (label.shape[1], 512)
    again = runner.invoke(app, ["data", "convert", "ade847", str(root), "--workers", "0", "--no-progress"])
    assert "0 written, 1 already up to date" in again.output
    check = check_dataset(get_dataset("ade847"), tmp_path, workers=0, progress=False)
    assert check.ok and check.num_samples == 1, check.problems
