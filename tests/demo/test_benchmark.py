"""The demo benchmark on disk: the exact VOC layout, readable by the engine, idempotent."""

from __future__ import annotations

import numpy as np
from PIL import Image

from llmseg.datasets import get_dataset
from llmseg.labelset import load_label_set, load_meta, validate_label_set
from llmseg.stage2.data.readers import BenchmarkDataset, list_samples, load_label
from llmseg.stage2.demo.benchmark import (
    CLASSES_FILE,
    CURATED_LABEL_SET,
    curated_subclasses,
    demo_spec,
    label_map,
    write_benchmark,
)
from llmseg.stage2.demo.generator import render_scene
from llmseg.stage2.pictures.palettes import voc_palette


def test_writes_the_voc_layout(tmp_path):
    spec = write_benchmark(tmp_path, n_images=4, seed=77, progress=False)
    root = tmp_path / "VOCdevkit" / "VOC2012"
    stems = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert stems == [f"demo_{i:05d}" for i in range(4)]
    for i, stem in enumerate(stems):
        image = Image.open(root / "JPEGImages" / f"{stem}.jpg")
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (128, 128)
        label = Image.open(root / "SegmentationClass" / f"{stem}.png")
        assert label.mode == "P"
        palette = np.array(label.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
        assert np.array_equal(palette[:3], voc_palette(3))
        values = np.array(label)
        assert set(np.unique(values)) <= {0, 1, 2, 255}
        assert np.array_equal(values, label_map(render_scene(77, i)))
    assert spec.layout == get_dataset("pascal_voc").layout
    assert spec.classes == ("background", "warm-coloured shape", "cool-coloured shape")
    assert spec.background_is_zero


def test_engine_reader_reads_it(tmp_path):
    spec = write_benchmark(tmp_path, n_images=3, seed=5, progress=False)
    refs = list_samples(spec, tmp_path)
    assert [r.stem for r in refs] == ["demo_00000", "demo_00001", "demo_00002"]
    dataset = BenchmarkDataset(spec, tmp_path)
    assert len(dataset) == 3
    item = dataset[1]
    assert item["image"].shape == (128, 128, 3) and item["label"].shape == (128, 128)
    assert np.array_equal(item["label"], load_label(refs[1].label_path))
    # JPEG keeps the picture close to the rendered one
    assert np.abs(item["image"].astype(int) - render_scene(5, 1).image.astype(int)).mean() < 4


def test_idempotent(tmp_path):
    write_benchmark(tmp_path, n_images=2, seed=1, progress=False)
    png = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/demo_00000.png"
    before = png.stat().st_mtime_ns
    write_benchmark(tmp_path, n_images=2, seed=1, progress=False)
    assert png.stat().st_mtime_ns == before
    write_benchmark(tmp_path, n_images=3, seed=1, progress=False)  # a different request rewrites
    assert len(list_samples(demo_spec(), tmp_path)) == 3


def test_classes_file_and_curated_label_set():
    spec = get_dataset("demo", classes_file=CLASSES_FILE)
    assert spec.classes == demo_spec().classes
    report = validate_label_set(load_label_set(CURATED_LABEL_SET).root, spec.classes)
    assert report.exit_code == 0, [str(i) for i in report.issues]
    assert load_label_set(CURATED_LABEL_SET, spec.classes).root == curated_subclasses()
    meta = load_meta(CURATED_LABEL_SET)
    assert meta is not None and meta.generator == "curated"
    # the coarse names never appear among the subclasses
    for subclasses in curated_subclasses().values():
        assert all(word not in s for s in subclasses for word in ("warm", "cool", "background"))


def test_rewrites_when_a_file_is_missing(tmp_path):
    write_benchmark(tmp_path, n_images=2, seed=1, progress=False)
    image = tmp_path / "VOCdevkit/VOC2012/JPEGImages/demo_00001.jpg"
    image.unlink()
    write_benchmark(tmp_path, n_images=2, seed=1, progress=False)
    assert image.is_file()
