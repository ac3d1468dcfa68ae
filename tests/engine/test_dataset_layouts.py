"""A new dataset is one data folder; a new on-disk layout is one registered reader; palettes from dataset.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.datasets import DatasetError, get_dataset
from llmseg.stage2.data import LAYOUTS, BenchmarkDataset, LayoutReader, SampleRef, list_samples
from llmseg.stage2.data.check import check_dataset
from llmseg.stage2.pictures.palettes import PALETTES, palette_for, voc_palette
from llmseg.stage2.synthetic import write_synthetic_benchmark

CLASSES = ("table", "mug", "spoon", "plate")


def dataset_folder(tmp_path: Path, **facts) -> Path:
    folder = tmp_path / "sets" / "cutlery"
    folder.mkdir(parents=True)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    base = {"layout": "context", "data_dir": "cutlery_v2", "img_dir": "photos", "ann_dir": "masks",
            "split_file": "lists/val.txt", "reduce_zero_label": True, "domain": "tabletop photos"}
    (folder / "dataset.json").write_text(json.dumps({**base, **facts}), encoding="utf-8")
    return folder


def _label_by_hand(path: Path, reduce_zero_label: bool) -> np.ndarray:
    raw = np.asarray(Image.open(path)).astype(np.int64)
    if not reduce_zero_label:
        return raw
    out = raw - 1
    out[raw == 0] = 255
    out[raw == 255] = 255
    return out


def test_a_new_dataset_is_one_data_folder(tmp_path):
    folder = dataset_folder(tmp_path)
    spec = get_dataset(str(folder))
    data = tmp_path / "data"
    stems = write_synthetic_benchmark(spec, data, n_images=3, size=(16, 20), seed=3)
    base = data / "cutlery_v2"
    assert (base / "lists" / "val.txt").read_text().split() == stems
    assert len(list((base / "photos").glob("*.jpg"))) == 4  # one extra image the split file does not list
    dataset = BenchmarkDataset(spec, data)
    assert [ref.stem for ref in dataset.samples] == stems
    seen = set()
    for i, stem in enumerate(stems):
        item = dataset[i]
        want = _label_by_hand(base / "masks" / f"{stem}.png", reduce_zero_label=True)
        np.testing.assert_array_equal(item["label"], want)
        assert item["image"].shape[:2] == want.shape
        seen |= set(np.unique(want).tolist())
    assert seen <= {*range(len(CLASSES)), 255} and max(seen - {255}) > 0
    assert check_dataset(spec, data, workers=0, progress=False).ok
    # the CLI takes the folder where it takes a benchmark name
    result = CliRunner().invoke(app, ["data", "check", str(folder), "--data-root", str(data), "--workers", "0",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "cutlery: 3 samples checked" in result.output and "OK" in result.output
    # a label out of range is found, with the file named
    bad = np.asarray(Image.open(base / "masks" / f"{stems[0]}.png")).copy()
    bad[0, 0] = 9
    Image.fromarray(bad).save(base / "masks" / f"{stems[0]}.png")
    report = check_dataset(spec, data, workers=0, progress=False)
    assert [Path(p).name for p, _ in report.problems] == [f"{stems[0]}.png"]


class PairsLayout(LayoutReader):
    """Images and masks side by side in one folder: <stem>.jpg + <stem>.mask.png, listed in index.json."""

    def list_samples(self, data_root, limit=None):
        base = self.spec.data_dir(data_root)
        stems = json.loads((base / "index.json").read_text())["samples"]
        folder = base / self.layout.img_dir
        return [SampleRef(s, folder / f"{s}{self.layout.img_suffix}", folder / f"{s}{self.layout.seg_map_suffix}")
                for s in stems][:limit]


@pytest.fixture
def pairs_layout():
    LAYOUTS.register("pairs")(PairsLayout)
    yield
    LAYOUTS.unregister("pairs")


def test_a_layout_registered_outside_the_package(tmp_path, pairs_layout):
    folder = dataset_folder(tmp_path, layout="pairs", data_dir="pairs", img_dir="all", ann_dir="all",
                            seg_map_suffix=".mask.png", split_file=None, reduce_zero_label=False)
    spec = get_dataset(str(folder))
    base = tmp_path / "data" / "pairs"
    (base / "all").mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {}
    for stem in ("b", "a"):
        label = rng.integers(0, len(CLASSES), size=(6, 7)).astype(np.uint8)
        Image.fromarray(rng.integers(0, 256, size=(6, 7, 3)).astype(np.uint8)).save(base / "all" / f"{stem}.jpg")
        Image.fromarray(label).save(base / "all" / f"{stem}.mask.png")
        labels[stem] = label
    (base / "index.json").write_text(json.dumps({"samples": ["b", "a"]}))
    assert [r.stem for r in list_samples(spec, tmp_path / "data")] == ["b", "a"]
    dataset = BenchmarkDataset(spec, tmp_path / "data")
    for i, stem in enumerate(["b", "a"]):
        np.testing.assert_array_equal(dataset[i]["label"], labels[stem].astype(np.int64))
    assert check_dataset(spec, tmp_path / "data", workers=0, progress=False).ok


def test_unknown_layout_names_the_dataset_json(tmp_path):
    folder = dataset_folder(tmp_path, layout="tiles")
    spec = get_dataset(str(folder))
    with pytest.raises(DatasetError, match=r"cutlery/dataset\.json: field 'layout': unknown layout 'tiles': use one of .*voc"):
        list_samples(spec, tmp_path)


def test_palettes_come_from_dataset_json(tmp_path):
    assert {"voc", "voc_no_background", "cityscapes", "distinct"} <= set(PALETTES.names())
    for name in ("pascal_voc", "pascal_voc20", "pascal_context", "pascal_context59", "coco_object", "coco_stuff",
                 "cityscapes", "ade20k"):
        spec = get_dataset(name)
        assert spec.palette in PALETTES, name
        assert palette_for(spec.classes, spec).shape == (spec.num_classes, 3)
    # the bundled files say what palettes.py used to hard-code
    assert np.array_equal(palette_for(get_dataset("pascal_context59").classes, "pascal_context59"), voc_palette(256)[1:60])
    colours = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120]]
    spec = get_dataset(str(dataset_folder(tmp_path, palette=colours)))
    assert palette_for(spec.classes, spec).tolist() == colours
    assert palette_for(spec.classes, "cutlery").tolist() == colours  # by name once loaded


def test_unknown_palette_names_the_file(tmp_path):
    spec = get_dataset(str(dataset_folder(tmp_path, palette="sunset")))
    with pytest.raises(DatasetError, match=r"dataset\.json: field 'palette': unknown palette 'sunset'"):
        palette_for(spec.classes, spec)
