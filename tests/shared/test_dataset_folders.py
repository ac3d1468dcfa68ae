"""Datasets as data folders: every bundled dataset.json validates and holds the benchmarks' facts;
a user's folder is a dataset; a bad dataset.json names the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmseg.datasets import (
    DEFAULT_TOP_CLS_NUM,
    DatasetError,
    DatasetFile,
    bundled_datasets,
    dataset_background,
    dataset_top_cls_num,
    find_dataset,
    get_dataset,
    list_datasets,
    read_dataset_file,
)
from llmseg.resources import label_sets_dir

# the MMSeg layouts (folders under the data root) and the seed's top_cls_num (docs/methods.md, "LLM-supervision")
LAYOUTS = {
    "pascal_voc": ("voc", "VOCdevkit/VOC2012", "JPEGImages", "SegmentationClass", ".jpg", ".png", "ImageSets/Segmentation/val.txt"),
    "pascal_voc20": ("voc", "VOCdevkit/VOC2012", "JPEGImages", "SegmentationClass", ".jpg", ".png", "ImageSets/Segmentation/val.txt"),
    "pascal_context": ("context", "VOCdevkit/VOC2010", "JPEGImages", "SegmentationClassContext", ".jpg", ".png",
                       "ImageSets/SegmentationContext/val.txt"),
    "pascal_context59": ("context", "VOCdevkit/VOC2010", "JPEGImages", "SegmentationClassContext", ".jpg", ".png",
                         "ImageSets/SegmentationContext/val.txt"),
    "coco_object": ("coco_object", "coco_stuff164k", "images/val2017", "annotations/val2017", ".jpg", "_instanceTrainIds.png", None),
    "coco_stuff": ("coco_stuff", "coco_stuff164k", "images/val2017", "annotations/val2017", ".jpg", "_labelTrainIds.png", None),
    "cityscapes": ("cityscapes", "cityscapes", "leftImg8bit/val", "gtFine/val", "_leftImg8bit.png", "_gtFine_labelTrainIds.png", None),
    "ade20k": ("ade20k", "ADEChallengeData2016", "images/validation", "annotations/validation", ".jpg", ".png", None),
}
TOP_CLS_NUM = {"pascal_voc": 10, "pascal_context": 30, "coco_object": 10}
DOMAINS = {"cityscapes": "urban street scenes from a car's front camera", "ade20k": "indoor and outdoor scenes"}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_bundled_dataset_json_validates_and_holds_the_facts(name):
    path = label_sets_dir() / name / "dataset.json"
    facts = read_dataset_file(path)
    assert DatasetFile.model_validate(json.loads(path.read_text())) == facts
    spec = get_dataset(name)
    assert spec.source == path
    layout = spec.layout
    assert (layout.name, layout.root, layout.img_dir, layout.ann_dir, layout.img_suffix, layout.seg_map_suffix,
            layout.split_file) == LAYOUTS[name]
    assert spec.top_cls_num == TOP_CLS_NUM.get(name, DEFAULT_TOP_CLS_NUM) == dataset_top_cls_num(name)
    assert spec.domain == DOMAINS.get(name, "natural photographs")
    assert spec.ignore_index == 255
    assert dataset_background(name) is spec.background_is_zero is (spec.background == 0)


def test_bundled_set_and_defaults():
    # ade847 and pc459 (16-bit TIFF labels, ignore 65535): their facts in tests/engine/test_large_benchmarks.py
    assert set(bundled_datasets()) == set(LAYOUTS) | {"ade847", "pc459"}
    assert DEFAULT_TOP_CLS_NUM == 10
    assert dataset_top_cls_num(None) == dataset_top_cls_num("no_such_dataset") == 10
    assert dataset_background("no_such_dataset") is None and find_dataset(None) is None


def _folder(tmp_path: Path, facts: dict | None, classes=("background", "kettle", "toaster"), name="kitchen") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    if facts is not None:
        (folder / "dataset.json").write_text(json.dumps(facts), encoding="utf-8")
    return folder


KITCHEN = {
    "layout": "mmseg", "data_dir": "kitchen_v1", "img_dir": "img", "ann_dir": "ann", "img_suffix": ".png",
    "background": None, "reduce_zero_label": True, "domain": "kitchen counters seen from above",
    "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]], "top_cls_num": 2,
}


def test_a_folder_is_a_dataset(tmp_path):
    folder = _folder(tmp_path, KITCHEN)
    spec = get_dataset(str(folder))
    assert spec.name == "kitchen" and spec.classes == ("background", "kettle", "toaster")
    assert spec.source == folder / "dataset.json" and spec.classes_file == folder / "classes.txt"
    assert spec.data_dir("data") == Path("data/kitchen_v1")
    assert (spec.layout.name, spec.layout.img_dir, spec.layout.img_suffix, spec.layout.split_file) == ("mmseg", "img", ".png", None)
    assert spec.reduce_zero_label and not spec.background_is_zero  # the file, not the class name, decides
    assert spec.domain == "kitchen counters seen from above" and spec.top_cls_num == 2
    assert spec.palette == ((1, 2, 3), (4, 5, 6), (7, 8, 9))
    assert get_dataset(folder) == spec  # a Path works too
    # once loaded by path, the name finds it (what the methods look up by)
    assert find_dataset("kitchen") == spec and dataset_top_cls_num("kitchen") == 2 and dataset_background("kitchen") is False
    assert "kitchen" in list_datasets()


def test_a_folder_without_dataset_json_is_a_class_list(tmp_path):
    folder = _folder(tmp_path, None, name="pantry")
    spec = get_dataset(str(folder))
    assert spec.layout is None and spec.source is None and spec.background_is_zero
    with pytest.raises(DatasetError, match="no on-disk layout"):
        spec.data_dir()


def test_private_label_sets_folder_keeps_the_shipped_facts(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(tmp_path))
    spec = get_dataset("pascal_context")
    assert spec.top_cls_num == 30 and spec.layout.name == "context" and spec.num_classes == 60


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        get_dataset(str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"reduce_zero_label": "maybe"}, "reduce_zero_label", "boolean"),
        ({"ignore_index": 70000}, "ignore_index", "less than or equal to 65535"),  # 65535: the 16-bit TIFF benchmarks
        ({"top_cls_num": 0}, "top_cls_num", "greater than or equal to 1"),
        ({"data_dir": None}, "data_dir", "required with layout 'mmseg'"),
        ({"background": 2}, "background", "must be 0 or null"),
        ({"palette": [[0, 0, 0], [1, 1, 1]]}, "palette", "2 colours for the 3 classes"),
        ({"palette": [[0, 0, 0], [1, 1, 1], [256, 0, 0]]}, "palette", "colour 2 is [256, 0, 0]"),
        ({"palette": [[0, 0, 0], [1, 1], [2, 2, 2]]}, "palette", "colour 1 is [1, 1]"),
    ],
)
def test_bad_dataset_json_names_file_and_field(tmp_path, change, field, message):
    folder = _folder(tmp_path, {**KITCHEN, **change})
    with pytest.raises(DatasetError) as info:
        get_dataset(str(folder))
    text = str(info.value)
    assert str(folder / "dataset.json") in text and f"field '{field}'" in text and message in text


def test_dataset_json_that_is_not_json_or_not_an_object(tmp_path):
    folder = _folder(tmp_path, None)
    (folder / "dataset.json").write_text("{layout: voc", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"dataset\.json is not valid JSON"):
        get_dataset(str(folder))
    (folder / "dataset.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DatasetError, match="expected a JSON object"):
        get_dataset(str(folder))
