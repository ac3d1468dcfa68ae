"""The dataset registry: class counts, label conventions and layouts of the eight benchmarks."""

from pathlib import Path

import pytest

from llmseg.datasets import (
    DatasetError,
    DatasetSpec,
    bundled_datasets,
    get_dataset,
    list_datasets,
    read_classes_file,
)

EXPECTED = {
    "pascal_voc": (21, True, False),
    "pascal_voc20": (20, False, True),
    "pascal_context": (60, True, False),
    "pascal_context59": (59, False, True),
    "coco_object": (81, True, False),
    "coco_stuff": (171, False, False),
    "cityscapes": (19, False, False),
    "ade20k": (150, False, True),
    "ade847": (847, False, False),
    "pc459": (459, False, False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_class_counts_and_conventions(name):
    spec = get_dataset(name)
    count, background, reduce = EXPECTED[name]
    assert spec.num_classes == count
    assert spec.background_is_zero is background
    assert spec.reduce_zero_label is reduce
    assert spec.ignore_index == (65535 if name in ("ade847", "pc459") else 255)  # 16-bit TIFF labels
    assert (spec.classes[0] == "background") is background
    assert len(set(spec.classes)) == count


def test_registry_lists_every_benchmark():
    assert set(EXPECTED) <= set(list_datasets())
    assert set(bundled_datasets()) == set(EXPECTED)


def test_voc_uses_the_seed_short_names_and_reduced_sets_drop_background():
    voc = get_dataset("pascal_voc").classes
    assert voc[11] == "table" and voc[16] == "plant" and voc[20] == "monitor"
    assert get_dataset("pascal_voc20").classes == tuple(
        {"table": "diningtable", "plant": "pottedplant", "monitor": "tvmonitor"}.get(c, c) for c in voc[1:]
    )
    assert get_dataset("pascal_context59").classes == get_dataset("pascal_context").classes[1:]
    coco_object, coco_stuff = get_dataset("coco_object").classes, get_dataset("coco_stuff").classes
    assert coco_object[1:] == coco_stuff[:80]


def test_layouts_follow_mmsegmentation():
    voc = get_dataset("pascal_voc")
    assert voc.data_dir("data") == Path("data/VOCdevkit/VOC2012")
    assert voc.layout.split_file == "ImageSets/Segmentation/val.txt"
    assert get_dataset("coco_stuff").layout.seg_map_suffix == "_labelTrainIds.png"
    assert get_dataset("cityscapes").layout.img_suffix == "_leftImg8bit.png"
    assert get_dataset("ade20k").layout.ann_dir == "annotations/validation"


def test_user_defined_dataset_is_just_a_classes_file(tmp_path):
    path = tmp_path / "kitchen" / "classes.txt"
    path.parent.mkdir()
    path.write_text("background\nkettle\ntoaster\n\n")
    spec = get_dataset("kitchen", classes_file=path)
    assert spec.classes == ("background", "kettle", "toaster")
    assert spec.background_is_zero and spec.layout is None
    assert DatasetSpec.from_classes_file(path).name == "kitchen"


def test_unknown_dataset_error_names_it_and_the_known_ones():
    with pytest.raises(DatasetError, match="no class file for dataset 'nope'.*pascal_voc"):
        get_dataset("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [("cat\n\ndog\n", r":2: empty class name"), ("cat\ndog\ncat\n", r":3: class 'cat' repeats line 1"), ("\n", "lists no classes")],
)
def test_bad_classes_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_classes_file(path)
