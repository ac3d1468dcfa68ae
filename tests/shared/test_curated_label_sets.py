"""The shipped default label sets (`label_sets/<dataset>/top5.json`) load, validate cleanly and carry provenance.

`make evaluate` uses these out of the box, so any defect here (a missing class, a duplicate,
an entry too long for CLIP, a stale sidecar hash) would silently change every benchmark number.
"""

from __future__ import annotations

import pytest

from llmseg.datasets import get_dataset
from llmseg.io import sha256_file
from llmseg.labelset import (
    clip_token_counter,
    load_label_set,
    load_meta,
    normalize_subclass,
    read_label_set_json,
    validate_label_set,
)
from llmseg.resources import label_sets_dir
from llmseg.templates import load_templates

CURATED = [
    "pascal_voc",
    "pascal_voc20",
    "pascal_context",
    "pascal_context59",
    "coco_object",
    "coco_stuff",
    "cityscapes",
    "ade20k",
]
EXPECTED_SIZES = {
    "pascal_voc": 21,
    "pascal_voc20": 20,
    "pascal_context": 60,
    "pascal_context59": 59,
    "coco_object": 81,
    "coco_stuff": 171,
    "cityscapes": 19,
    "ade20k": 150,
}


@pytest.fixture(scope="module")
def token_counter():
    return clip_token_counter()


@pytest.fixture(scope="module")
def longest_template():
    return max(load_templates("openai80"), key=len)


def _path(dataset: str):
    return label_sets_dir() / dataset / "top5.json"


@pytest.mark.parametrize("dataset", CURATED)
def test_loads_and_validates_without_warnings(dataset, token_counter, longest_template):
    classes = list(get_dataset(dataset).classes)
    assert len(classes) == EXPECTED_SIZES[dataset]
    path = _path(dataset)
    label_set = load_label_set(path, classes)
    assert label_set.classes == classes
    report = validate_label_set(
        read_label_set_json(path),
        classes,
        source=str(path),
        token_counter=token_counter,
        longest_template=longest_template,
    )
    assert report.errors == [], [str(i) for i in report.errors]
    assert report.warnings == [], [str(i) for i in report.warnings]
    assert report.issues == [], [str(i) for i in report.issues]
    assert report.exit_code == 0


@pytest.mark.parametrize("dataset", CURATED)
def test_five_distinct_well_formed_subclasses_per_class(dataset):
    classes = list(get_dataset(dataset).classes)
    class_keys = {normalize_subclass(c).casefold() for c in classes}
    label_set = load_label_set(_path(dataset), classes)
    for name, subclasses in label_set.items():
        assert len(subclasses) == 5, name
        assert len({s.casefold() for s in subclasses}) == 5, name
        for entry in subclasses:
            assert entry == normalize_subclass(entry) == entry.lower(), (name, entry)
            assert not set(entry) & set("()_"), (name, entry)
            assert 1 <= len(entry.split()) <= 4, (name, entry)
            # Not even the class's own name: the subclasses must add information over the class name.
            assert entry.casefold() not in class_keys, (name, entry)


@pytest.mark.parametrize("dataset", CURATED)
def test_sidecar_is_curated_and_matches_file(dataset):
    path = _path(dataset)
    meta = load_meta(path)
    assert meta is not None, f"{path} has no sidecar"
    assert meta.generator == "curated"
    assert meta.model is None
    assert meta.k == 5
    assert meta.dataset == dataset
    assert meta.notes and "hand-written" in meta.notes.lower()
    assert meta.model_extra["label_set_sha256"] == sha256_file(path)


@pytest.mark.parametrize(
    ("reduced", "full", "renamed"),
    [
        (
            "pascal_voc20",
            "pascal_voc",
            {"diningtable": "table", "pottedplant": "plant", "tvmonitor": "monitor"},
        ),
        ("pascal_context59", "pascal_context", {}),
    ],
)
def test_reduced_benchmarks_share_subclasses_with_full_ones(reduced, full, renamed):
    """Without background, the 20/59-class variants describe each class exactly as the full sets do."""
    small = read_label_set_json(_path(reduced))
    large = read_label_set_json(_path(full))
    for name, subclasses in small.items():
        assert subclasses == large[renamed.get(name, name)], name
