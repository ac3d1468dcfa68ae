"""The pieces tune builds on: dataset splits as data, --k truncation, presets that set assembly/k/top_cls_num."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("name", "field", "train_value"),
    [
        ("pascal_voc", "split_file", "ImageSets/Segmentation/train.txt"),
        ("pascal_context59", "split_file", "ImageSets/SegmentationContext/train.txt"),
        ("ade20k", "img_dir", "images/training"),
        ("coco_stuff", "ann_dir", "annotations/train2017"),
        ("cityscapes", "img_dir", "leftImg8bit/train"),
        ("pc459", "ann_dir", "annotations_detectron2/pc459_train"),
    ],
)
def test_bundled_datasets_describe_their_train_split(name, field, train_value):
    from llmseg.datasets import get_dataset

    val = get_dataset(name)
    train = val.with_split("train")
    assert val.split == "val" and train.split == "train" and val.splits == ["val", "train"]
    assert getattr(train.layout, field) == train_value != getattr(val.layout, field)
    assert train.layout.root == val.layout.root and train.classes == val.classes
    assert val.with_split("val") is val


def test_a_user_dataset_folder_declares_splits_and_unknown_ones_are_named(tmp_path):
    from llmseg.datasets import DatasetError, get_dataset

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "classes.txt").write_text("background\ncat\n")
    facts = {"layout": "mmseg", "data_dir": "mine", "img_dir": "img/val", "ann_dir": "ann/val",
             "splits": {"train": {"img_dir": "img/train", "ann_dir": "ann/train"}}}
    (folder / "dataset.json").write_text(json.dumps(facts))
    spec = get_dataset(str(folder))
    assert spec.with_split("train").layout.img_dir == "img/train"
    with pytest.raises(DatasetError, match=r"no split 'test' \(it knows: val, train\).*dataset.json"):
        spec.with_split("test")
    facts["splits"] = {"train": {"img_folder": "x"}}
    (folder / "dataset.json").write_text(json.dumps(facts))
    with pytest.raises(DatasetError, match="splits.train.img_folder"):
        get_dataset(str(folder))


def test_runs_of_two_splits_do_not_share_a_checkpoint(tmp_path):
    from llmseg.datasets import get_dataset
    from llmseg.stage2.engine.distributed import DistInfo
    from llmseg.stage2.engine.runner import RunConfig, _fingerprint

    spec = get_dataset("demo")
    info = DistInfo()
    cfg = RunConfig()
    assert _fingerprint(spec, tmp_path, cfg, {}, info) != _fingerprint(spec.with_split("train"), tmp_path, cfg, {}, info)


def test_k_keeps_each_class_first_subclasses():
    from llmseg.datasets import get_dataset
    from llmseg.errors import ConfigError
    from llmseg.labelset import load_label_set
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET
    from llmseg.stage2.methods import build_method

    spec = get_dataset("demo")
    full = load_label_set(CURATED_LABEL_SET, list(spec.classes))
    method = build_method(MethodConfig(backbone="demo-clip", label_set=str(CURATED_LABEL_SET), k=1), spec.classes, "demo")
    names = method.names.names
    assert names == [full.subclasses(c)[0] for c in spec.classes]
    assert method.describe()["k"] == 1
    with pytest.raises(ConfigError, match="--k 2 keeps the first K subclasses of a label set"):
        build_method(MethodConfig(backbone="demo-clip", k=2), spec.classes, "demo")


def test_a_preset_sets_assembly_k_and_top_cls_num_of_llm_supervision(tmp_path):
    from llmseg.errors import ConfigError
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.methods import with_preset_fields

    path = tmp_path / "seed-tuned.json"
    path.write_text(json.dumps({"name": "seed-tuned", "method": "llm-supervision", "default": {"top_cls_num": 7},
                                "datasets": {"demo": {"assembly": "max", "k": 2}}}))
    config = MethodConfig(method="llm-supervision", preset=str(path))
    filled = with_preset_fields(config, "demo")
    assert (filled.top_cls_num, filled.assembly, filled.k) == (7, "max", 2)
    other = with_preset_fields(config, "pascal_voc")
    assert (other.top_cls_num, other.assembly, other.k) == (7, None, None)
    explicit = with_preset_fields(config.model_copy(update={"assembly": "mean"}), "demo")
    assert explicit.assembly == "mean"  # what the user gives wins over the preset
    from llmseg.datasets import get_dataset
    from llmseg.stage2.methods import build_method

    names_only = build_method(MethodConfig(method="llm-supervision", backbone="demo-clip", preset=str(path)),
                              get_dataset("demo").classes, "demo")  # the preset's K is ignored without a label set
    assert names_only.describe()["k"] is None
    with pytest.raises(ConfigError, match="is for method 'llm-supervision', not --method dense"):
        with_preset_fields(MethodConfig(preset=str(path)), "demo")
