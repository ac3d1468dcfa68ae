"""build_method: the seed's label-set format unchanged, defaults, reuse, describe, errors."""

from __future__ import annotations

import json

import pytest

from llmseg.io import sha256_file
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods import build_method

VOC = ["background", "aeroplane", "bicycle", "bird"]


@pytest.fixture
def seed_label_set(tmp_path):
    """The seed's released format: keys in class order, background with one entry, real defects kept."""
    data = {
        "background": ["background"],
        "aeroplane": ["Commercial_Jetliner", "fighter jet", "propeller plane (small)", "fighter jet", "glider "],
        "bicycle": ["mountain bike", "road bike", "bmx", "tandem", "cruiser"],
        "bird": ["sparrow", "eagle", "parrot", "penguin", "owl"],
    }
    path = tmp_path / "top5.json"
    path.write_text(json.dumps(data, indent=4))
    return path, data


def test_seed_label_set_loads_unchanged(tiny_openclip, seed_label_set):
    path, data = seed_label_set
    backbone = tiny_openclip()
    config = MethodConfig(random_weights=True, label_set=str(path), templates="single", preset="sclip")
    method = build_method(config, VOC, dataset="pascal_voc", backbone=backbone)
    flat = [s for subs in data.values() for s in subs]
    assert method.names.names == flat  # no reordering, dedup or normalisation at use time
    assert method.names.owners == [0] + [1] * 5 + [2] * 5 + [3] * 5
    assert method.assembly == "max"
    info = method.describe()
    assert info["label_set"] == str(path) and info["label_set_sha256"] == sha256_file(path)
    assert info["num_names"] == 16 and info["classes"] == VOC


def test_include_class_name_and_llm_default_assembly(tiny_openclip, seed_label_set):
    path, _ = seed_label_set
    config = MethodConfig(random_weights=True, method="llm-supervision", label_set=str(path), templates="single", include_class_name=True)
    method = build_method(config, VOC, backbone=tiny_openclip())
    assert method.assembly == "softmax"
    assert method.names.names[:3] == ["background", "aeroplane", "Commercial_Jetliner"]
    assert method.names.owners.count(0) == 1 and method.names.owners.count(1) == 6


def test_wrong_class_order_is_rejected(tiny_openclip, seed_label_set):
    path, data = seed_label_set
    with pytest.raises(ValueError, match="out of order"):
        build_method(MethodConfig(random_weights=True, label_set=str(path)), ["background", "bicycle", "aeroplane", "bird"],
                     backbone=tiny_openclip())


def test_backbone_reuse_shares_text_memory(tiny_openclip):
    backbone = tiny_openclip()
    build_method(MethodConfig(random_weights=True, templates="single"), ["cat", "dog"], backbone=backbone)
    assert len(backbone.text_memory) == 2
    build_method(MethodConfig(random_weights=True, templates="single"), ["dog", "bird"], backbone=backbone)
    assert len(backbone.text_memory) == 3


def test_config_errors(tiny_openclip, tiny_arch):
    backbone = tiny_openclip()
    with pytest.raises(ValueError, match="needs a label set"):
        build_method(MethodConfig(random_weights=True, assembly="max", templates="single"), ["a", "b"], backbone=backbone)
    with pytest.raises(ValueError, match="empty class list"):
        build_method(MethodConfig(random_weights=True), [], backbone=backbone)
    from llmseg.stage2.backbones.base import BackboneError
    from llmseg.stage2.methods import load_backbone

    with pytest.raises(BackboneError, match="unknown backbone"):
        load_backbone(MethodConfig(random_weights=True, backbone="resnet"))
    with pytest.raises(BackboneError, match="unknown architecture"):
        load_backbone(MethodConfig(random_weights=True, backbone="openclip:NoSuchArch-99"))
    m = build_method(MethodConfig(random_weights=True, backbone=f"openclip:{tiny_arch}", templates="single"), ["a", "b"])
    assert m.describe()["backbone"]["arch"] == tiny_arch and m.describe()["dense_mode"] == "sclip"
