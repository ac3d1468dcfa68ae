"""Readers, synthetic layouts, COCO converters and `data check`."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from llmseg.datasets import bundled_datasets, get_dataset
from llmseg.stage2.data import (
    BenchmarkDataset,
    DataError,
    FolderDataset,
    list_samples,
    load_image,
    load_label,
)
from llmseg.stage2.data.check import check_dataset
from llmseg.stage2.data.convert import convert
from llmseg.stage2.synthetic import write_synthetic_benchmark

# where one sample of each benchmark must sit (MMSeg layout, as README.md lists it)
EXPECTED_FILES = {
    "pascal_voc": ["VOCdevkit/VOC2012/JPEGImages/{s}.jpg", "VOCdevkit/VOC2012/SegmentationClass/{s}.png",
                   "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"],
    "pascal_context": ["VOCdevkit/VOC2010/JPEGImages/{s}.jpg", "VOCdevkit/VOC2010/SegmentationClassContext/{s}.png",
                       "VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt"],
    "coco_stuff": ["coco_stuff164k/images/val2017/{s}.jpg", "coco_stuff164k/annotations/val2017/{s}_labelTrainIds.png"],
    "coco_object": ["coco_stuff164k/images/val2017/{s}.jpg", "coco_stuff164k/annotations/val2017/{s}_instanceTrainIds.png"],
    "cityscapes": ["cityscapes/leftImg8bit/val/{s}_leftImg8bit.png", "cityscapes/gtFine/val/{s}_gtFine_labelTrainIds.png"],
    "ade20k": ["ADEChallengeData2016/images/validation/{s}.jpg", "ADEChallengeData2016/annotations/validation/{s}.png"],
    # the open-vocabulary field's detectron2 layouts (16-bit TIFF labels)
    "ade847": ["ADE20K_2021_17_01/images_detectron2/validation/{s}.jpg",
               "ADE20K_2021_17_01/annotations_detectron2/validation/{s}.tif"],
    "pc459": ["VOCdevkit/VOC2010/JPEGImages/{s}.jpg", "VOCdevkit/VOC2010/annotations_detectron2/pc459_val/{s}.tif"],
}
EXPECTED_FILES["pascal_voc20"] = EXPECTED_FILES["pascal_voc"]
EXPECTED_FILES["pascal_context59"] = EXPECTED_FILES["pascal_context"]


@pytest.mark.parametrize("name", bundled_datasets())
def test_synthetic_layout_and_reader(name, tmp_path):
    stems = write_synthetic_benchmark(name, tmp_path, n_images=3, size=(20, 24), seed=1)
    for pattern in EXPECTED_FILES[name]:
        for stem in stems:
            assert (tmp_path / pattern.format(s=stem)).is_file(), pattern.format(s=stem)
    spec = get_dataset(name)
    ds = BenchmarkDataset(spec, tmp_path)
    assert [r.stem for r in ds.samples] == stems and len(ds) == 3  # unlisted extras not picked up
    sizes = set()
    for i in range(len(ds)):
        item = ds[i]
        image, label = item["image"], item["label"]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert label.dtype == np.int64 and label.shape == image.shape[:2]
        valid = label[label != spec.ignore_index]  # 255, or 65535 for ade847 / pc459
        assert valid.min() >= 0 and valid.max() < spec.num_classes
        sizes.add(image.shape)
    assert len(sizes) > 1  # image sizes vary within a dataset
    assert BenchmarkDataset(spec, tmp_path, limit=2).samples == ds.samples[:2]
    if name == "cityscapes":
        assert all("/" in s for s in stems)  # city sub-folders


def test_palette_png_decodes_to_indices_not_colours(tmp_path):
    index = np.array([[0, 1, 2], [15, 255, 3]], np.uint8)
    img = Image.frombytes("P", (3, 2), index.tobytes())
    palette = np.random.default_rng(0).integers(0, 256, size=(256, 3)).astype(np.uint8)
    img.putpalette(palette.reshape(-1).tolist())
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_label(tmp_path / "p.png"), index)
    np.testing.assert_array_equal(
        load_label(tmp_path / "p.png", reduce_zero_label=True), [[255, 0, 1], [14, 255, 2]]
    )
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="colour image"):
        load_label(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="label not found"):
        load_label(tmp_path / "missing.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")


def test_dataset_reports_or_raises_errors(tmp_path):
    stems = write_synthetic_benchmark("ade20k", tmp_path, 2, (16, 16))
    spec = get_dataset("ade20k")
    os.remove(tmp_path / f"ADEChallengeData2016/annotations/validation/{stems[0]}.png")
    with pytest.raises(DataError, match=f"{stems[0]}.png"):
        BenchmarkDataset(spec, tmp_path)[0]
    item = BenchmarkDataset(spec, tmp_path, errors="report")[0]
    assert "label not found" in item["error"] and "image" not in item
    with pytest.raises(DataError, match="split file not found"):
        list_samples(get_dataset("pascal_voc"), tmp_path)


def test_folder_dataset(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(tmp_path / "sub" / "b.png")
    (tmp_path / "notes.txt").write_text("x")
    ds = FolderDataset(tmp_path)
    assert [s.stem for s in ds.samples] == ["a", "sub/b"]
    assert ds[1]["image"].shape == (7, 6, 3) and "label" not in ds[1]
    assert [s.stem for s in FolderDataset(tmp_path, recursive=False).samples] == ["a"]
    assert [s.stem for s in FolderDataset([tmp_path / "a.jpg"]).samples] == ["a"]
    with pytest.raises(DataError, match="no such image"):
        FolderDataset(tmp_path / "nope")


def _coco_mapping_direct(raw: int) -> int:
    """The 182 -> 171 table written out from its definition."""
    unused = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
    if raw == 255 or raw in unused:
        return 255
    return raw - sum(1 for u in unused if u < raw)


def test_convert_coco_stuff_and_object(tmp_path):
    root = tmp_path / "coco_stuff164k"
    ann = root / "annotations" / "val2017"
    ann.mkdir(parents=True)
    raw = np.arange(256, dtype=np.uint8)
    raw = np.where(raw < 182, raw, 255).astype(np.uint8).reshape(16, 16)
    Image.fromarray(raw).save(ann / "000000000001.png")
    Image.fromarray(raw[::-1].copy()).save(ann / "000000000002.png")

    report = convert("coco_stuff", root, workers=2, progress=False)
    assert len(report.written) == 2 and not report.errors
    stuff = np.array(Image.open(ann / "000000000001_labelTrainIds.png"))
    want = np.vectorize(_coco_mapping_direct)(raw.astype(int))
    np.testing.assert_array_equal(stuff, want)
    assert stuff[raw == 0].tolist() == [0] and stuff[raw == 181].tolist() == [170] and stuff[raw == 12].tolist() == [11]
    assert sorted(np.unique(stuff[stuff != 255]).tolist()) == list(range(171))

    mtime = (ann / "000000000001_labelTrainIds.png").stat().st_mtime_ns
    again = convert("coco_stuff", root, workers=0, progress=False)
    assert len(again.skipped) == 2 and not again.written  # idempotent
    assert (ann / "000000000001_labelTrainIds.png").stat().st_mtime_ns == mtime

    report = convert("coco_object", root, workers=0, progress=False)
    assert len(report.written) == 2
    obj = np.array(Image.open(ann / "000000000001_instanceTrainIds.png"))
    want_obj = np.where((stuff < 80), stuff.astype(int) + 1, 0)
    np.testing.assert_array_equal(obj, want_obj)
    assert obj.max() == 80 and obj.min() == 0 and not (obj == 255).any()
    # converted files are not mistaken for raw maps on a second coco_stuff run
    assert len(convert("coco_stuff", root, workers=0, progress=False).skipped) == 2


def test_convert_reports_bad_values(tmp_path):
    ann = tmp_path / "annotations" / "val2017"
    ann.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(ann / "x.png")
    report = convert("coco_stuff", tmp_path, workers=0, progress=False)
    assert len(report.errors) == 1 and "x.png" in report.errors[0] and "200" in report.errors[0]
    with pytest.raises(DataError, match="annotations"):
        convert("coco_stuff", tmp_path / "nothing", workers=0, progress=False)


def test_check_dataset_finds_problems_by_file(tmp_path):
    stems = write_synthetic_benchmark("pascal_context59", tmp_path, 4, (16, 20))
    spec = get_dataset("pascal_context59")
    assert check_dataset(spec, tmp_path, workers=0, progress=False).ok
    base = tmp_path / "VOCdevkit/VOC2010"
    os.remove(base / "SegmentationClassContext" / f"{stems[0]}.png")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(base / "SegmentationClassContext" / f"{stems[1]}.png")
    bad = np.array(Image.open(base / "SegmentationClassContext" / f"{stems[2]}.png"))
    bad[0, 0] = 77  # PC59 raw labels go up to 59
    Image.fromarray(bad).save(base / "SegmentationClassContext" / f"{stems[2]}.png")
    report = check_dataset(spec, tmp_path, workers=2, progress=False)
    assert report.num_samples == 4 and len(report.problems) == 3
    files = {os.path.basename(p): m for p, m in report.problems}
    assert "label not found" in files[f"{stems[0]}.png"]
    assert "differs from image" in files[f"{stems[1]}.png"]
    assert "76" in files[f"{stems[2]}.png"] and "reduce_zero_label" in files[f"{stems[2]}.png"]
