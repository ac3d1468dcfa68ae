"""Property tests of the stage-two data parsers (issue 21): split files, classes.txt and dataset.json.

Whatever bytes a file holds, it either loads or raises the project's error (an LlmsegError, which the
CLIs turn into a one-line message), never another exception; and what loads never points outside the
dataset's folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmseg.errors import LlmsegError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# the characters that broke or could break the parsers: line breaks of every kind, separators, '..', controls
TRICKY = ["\n", "\r", "\r\n", "\x85", "\x0c", "\x0b", "\x1c", "\u2028", "\u2029", "\x00", "\t", " ", "/", "\\", "..",
          ".", "C:", "~", "a", "b", "é", "猫", "\ufeff", "\x7f", "\x9b"]
tricky_text = st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=4)), max_size=30).map("".join)
file_bytes = st.one_of(
    tricky_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parsers")


def _inside(root: Path, relative: str) -> bool:
    """Whether ROOT/relative stays under ROOT once '..' parts are collapsed (no file system needed)."""
    joined = os.path.normpath(os.path.join(str(root), relative))
    return joined == str(root) or joined.startswith(str(root) + os.sep)


@SETTINGS
@given(data=file_bytes)
def test_split_file_loads_or_is_a_named_error_and_stems_stay_inside(folder, data):
    from llmseg.datasets import DatasetSpec, Layout
    from llmseg.stage2.data import list_samples
    from llmseg.stage2.engine.results import prediction_path

    root = folder / "data"
    spec = DatasetSpec(name="prop", classes=("a", "b"),
                       layout=Layout(root="ds", img_dir="img", ann_dir="ann", split_file="split.txt"))
    path = root / "ds" / "split.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    try:
        samples = list_samples(spec, root)
    except LlmsegError as exc:
        assert str(path) in str(exc)
        return
    for ref in samples:
        assert ref.stem and "\n" not in ref.stem and ref.stem == ref.stem.strip()
        assert _inside(root / "ds" / "img", os.path.relpath(ref.image_path, root / "ds" / "img"))
        assert _inside(root / "ds" / "ann", os.path.relpath(ref.label_path, root / "ds" / "ann"))
        assert _inside(folder / "pred", os.path.relpath(prediction_path(folder / "pred", ref.stem), folder / "pred"))


@SETTINGS
@given(data=file_bytes)
def test_classes_file_loads_or_is_a_named_error(folder, data):
    import unicodedata

    from llmseg.datasets import read_classes_file

    path = folder / "classes.txt"
    path.write_bytes(data)
    try:
        classes = read_classes_file(path)
    except LlmsegError as exc:
        assert str(path) in str(exc)
        return
    assert classes and len(set(classes)) == len(classes)
    for name in classes:
        assert name == name.strip() and not any(unicodedata.category(c) == "Cc" for c in name)
    # one class per newline-ended line: no other character starts a class
    lines = data.decode("utf-8-sig").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    assert len(classes) == len(lines)


PATH_FIELDS = ("data_dir", "img_dir", "ann_dir", "split_file")
SUFFIX_FIELDS = ("img_suffix", "seg_map_suffix")
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.floats(allow_nan=True), tricky_text)
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(tricky_text, inner, max_size=3)),
                          max_leaves=8)
KNOWN = ["layout", *PATH_FIELDS, *SUFFIX_FIELDS, "background", "reduce_zero_label", "ignore_index", "domain",
         "palette", "top_cls_num", "split", "splits", "description"]
BASE = {"layout": "mmseg", "data_dir": "root", "img_dir": "images", "ann_dir": "labels", "split_file": "val.txt"}
# a valid layout with some fields replaced: the loads that succeed are the ones whose paths must be checked
plausible = st.sampled_from(["images", "a/b", "val.txt", "./x", ".png", "_gtFine.png", "a..b", "x/.."])
edited_value = st.one_of(plausible, plausible, plausible, tricky_text, st.none())
edited_facts = st.fixed_dictionaries({}, optional={
    **{key: edited_value for key in (*PATH_FIELDS, *SUFFIX_FIELDS)},
    "splits": st.dictionaries(st.sampled_from(["train", "test"]),
                              st.fixed_dictionaries({}, optional={key: edited_value
                                                                  for key in ("img_dir", "ann_dir", "split_file")}),
                              max_size=2),
}).map(lambda changes: {**BASE, **changes})
random_facts = st.dictionaries(st.one_of(st.sampled_from(KNOWN), tricky_text),
                        st.one_of(tricky_text, json_value,
                                  st.dictionaries(st.sampled_from(["train", "x"]),
                                                  st.dictionaries(st.sampled_from(["img_dir", "ann_dir", "split_file"]),
                                                                  st.one_of(tricky_text, st.none()), max_size=3),
                                                  max_size=2)),
                        max_size=8)
facts = st.one_of(edited_facts, random_facts)


def _dataset_json_text(draw_facts: dict, repeat: str | None) -> str:
    text = json.dumps(draw_facts)
    if repeat is not None and draw_facts:  # the key once more (twice in one object when it was there)
        text = text[:-1] + f", {json.dumps(repeat)}: 1}}"
    return text


@SETTINGS
@given(data=facts, repeat=st.one_of(st.none(), st.sampled_from(KNOWN)), raw=st.one_of(st.none(), file_bytes))
def test_dataset_json_loads_or_is_a_named_error_and_paths_stay_inside(folder, data, repeat, raw):
    from llmseg.datasets import get_dataset

    dataset = folder / "ds"
    dataset.mkdir(exist_ok=True)
    (dataset / "classes.txt").write_text("background\nthing\n")
    source = dataset / "dataset.json"
    source.write_bytes(raw if raw is not None else _dataset_json_text(data, repeat).encode())
    try:
        spec = get_dataset(dataset)
    except LlmsegError as exc:
        assert str(source) in str(exc)
        return
    if repeat is not None and raw is None and repeat in data:
        pytest.fail(f"a repeated key {repeat!r} was accepted")
    layout = spec.layout
    if layout is None:
        return
    assert _inside(folder / "data", layout.root), layout.root
    root = folder / "data" / "root"
    for relative in (layout.img_dir, layout.ann_dir, layout.split_file or "."):
        assert _inside(root, relative), relative
    for split in spec.splits:
        other = spec.with_split(split).layout
        for relative in (other.img_dir, other.ann_dir, other.split_file or "."):
            assert _inside(root, relative), relative
    for suffix in (layout.img_suffix, layout.seg_map_suffix):
        assert "/" not in suffix and "\\" not in suffix, suffix
