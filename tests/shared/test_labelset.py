"""Every validation rule of the label-set format, on files in the seed's exact format."""

import json

import pytest
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.datasets import get_dataset
from llmseg.labelset import (
    LabelSet,
    LabelSetError,
    LabelSetMeta,
    clip_token_counter,
    load_label_set,
    load_meta,
    meta_path_for,
    normalize_subclass,
    save_label_set,
    validate_label_set,
)

runner = CliRunner()


def codes(report, severity=None):
    return sorted({i.code for i in report.issues if severity is None or i.severity == severity})


def by_code(report, code):
    return [i for i in report.issues if i.code == code]


def test_seed_format_loads_unchanged_in_class_order(voc_classes, write_json):
    data = {name: [f"a {name}"] for name in voc_classes}
    data["background"] = ["background"]  # the seed gives background a single entry
    path = write_json("top5.json", data)
    label_set = load_label_set(path, voc_classes)
    assert label_set.classes == voc_classes
    assert label_set.subclasses("background") == ["background"]
    names, owners = label_set.flat_names()
    assert names[0] == "background" and owners[:3] == [0, 1, 2]


def test_seed_defects_are_reported_per_class(voc_classes, seed_style_voc):
    report = validate_label_set(seed_style_voc(voc_classes), voc_classes)
    assert report.errors == []
    assert report.exit_code == 1
    normalise = {(i.cls, i.message) for i in by_code(report, "needs-normalisation")}
    assert ("background", "'Natural background ' normalises to 'Natural background'") in normalise
    assert ("aeroplane", "'Commercial_Jetliner' normalises to 'Commercial Jetliner'") in normalise
    [dup] = by_code(report, "duplicate")
    assert dup.cls == "aeroplane" and "'fighter jet'" in dup.message
    [shared] = by_code(report, "shared-subclass")
    assert "minibus" in shared.message and "'bus'" in shared.message and "'car'" in shared.message
    assert [i.cls for i in by_code(report, "parentheses")] == ["aeroplane"]
    assert by_code(report, "parentheses")[0].severity == "info"


def test_fix_normalises_and_drops_duplicates(voc_classes, seed_style_voc):
    report = validate_label_set(seed_style_voc(voc_classes), voc_classes)
    fixed = report.fixed
    assert list(fixed) == voc_classes
    assert fixed["background"][0] == "Natural background"
    assert fixed["aeroplane"] == ["Commercial Jetliner", "fighter jet", "propeller plane (small)", "glider"]
    again = validate_label_set(fixed, voc_classes)
    assert codes(again, "warning") == ["shared-subclass"]  # not auto-fixable: which class keeps it is a choice


def test_missing_extra_and_out_of_order_keys_are_errors(voc_classes):
    good = {name: [f"x {name}"] for name in voc_classes}
    missing = dict(good)
    del missing["cat"]
    report = validate_label_set(missing, voc_classes)
    assert [(i.code, i.cls) for i in report.errors] == [("missing-class", "cat")]
    assert report.exit_code == 2 and report.fixed is None

    extra = dict(good, **{"Cat ": ["tabby"]})
    report = validate_label_set(extra, voc_classes)
    [issue] = report.errors
    assert issue.code == "extra-class" and issue.cls == "Cat " and "did you mean 'cat'" in issue.message

    order = list(voc_classes)
    order[1], order[2] = order[2], order[1]
    swapped = {name: good[name] for name in order}
    report = validate_label_set(swapped, voc_classes)
    [issue] = report.errors
    assert issue.code == "key-order" and "position 1 holds 'bicycle'" in issue.message
    assert list(report.fixed) == voc_classes  # --fix restores the dataset's order


@pytest.mark.parametrize(
    ("value", "code", "detail"),
    [
        ([], "empty-list", "has no subclasses"),
        ("tabby", "not-a-list", "got str"),
        (["tabby", 3], "not-a-string", "entry 1 is 3"),
        (["tabby", None], "not-a-string", "entry 1 is None"),
        (["tabby", "  \t"], "empty-entry", "entry 1 is empty"),
    ],
)
def test_bad_values_are_errors_naming_the_class(voc_classes, value, code, detail):
    data = {name: [f"x {name}"] for name in voc_classes}
    data["cat"] = value
    report = validate_label_set(data, voc_classes)
    [issue] = report.errors
    assert (issue.code, issue.cls) == (code, "cat") and detail in issue.message
    assert report.exit_code == 2


def test_subclass_equal_to_another_class_name_warns(voc_classes):
    data = {name: [f"x {name}"] for name in voc_classes}
    data["cat"] = ["tabby", "Dog"]
    [issue] = by_code(validate_label_set(data, voc_classes), "equals-other-class")
    assert issue.cls == "cat" and "class 'dog'" in issue.message


def test_control_characters_and_spaces_normalise():
    assert normalize_subclass("golden\u00a0\tretriever\x00 ") == "golden retriever"
    assert normalize_subclass("cafe\u0301_au_lait") == "caf\u00e9 au lait"  # NFC + underscores
    assert normalize_subclass("a\u200bb") == "a b"


def test_too_long_for_the_text_encoder_warns(voc_classes):
    data = {name: [f"x {name}"] for name in voc_classes}
    data["cat"] = ["tabby", " ".join(["extraordinarily"] * 60)]
    report = validate_label_set(data, voc_classes, token_counter=clip_token_counter(), longest_template="a photo of a {}.")
    [issue] = by_code(report, "too-long")
    assert issue.cls == "cat" and "over the text encoder's 77" in issue.message
    import open_clip

    counter = clip_token_counter()
    for text in ("a photo of a cat.", "a jpeg corrupted photo of a golden retriever."):
        assert counter(text) == int((open_clip.tokenize([text])[0] != 0).sum())  # open_clip's own tokenize


def test_clean_file_exit_code_zero(voc_classes):
    data = {name: [f"x {name}"] for name in voc_classes}
    assert validate_label_set(data, voc_classes).exit_code == 0
    assert validate_label_set(["not", "an", "object"], voc_classes).exit_code == 2


def test_save_and_meta_roundtrip(tmp_path, voc_classes):
    label_set = LabelSet({name: [f"x {name}"] for name in voc_classes})
    meta = LabelSetMeta(generator="openai", model="gpt-4o-mini", k=5, prompt_id="visual.v1", sampling={"temperature": 0})
    path = save_label_set(tmp_path / "top5.gpt-4o-mini.json", label_set, meta)
    assert meta_path_for(path).name == "top5.gpt-4o-mini.meta.json"
    loaded = load_meta(path)
    assert loaded.model == "gpt-4o-mini" and loaded.sampling == {"temperature": 0}
    assert loaded.model_extra["label_set_sha256"]
    assert load_label_set(path, voc_classes).root == label_set.root
    assert LabelSet({"a": ["b"]}).with_class_names().root == {"a": ["a", "b"]}
    assert LabelSet({"a": ["A", "b"]}).with_class_names().root == {"a": ["A", "b"]}


def test_load_refuses_a_broken_file_naming_it(tmp_path, voc_classes):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(LabelSetError, match="broken.json: not valid UTF-8 JSON"):
        load_label_set(path)
    path.write_text(json.dumps({"background": ["x"]}))
    with pytest.raises(LabelSetError, match="class 'aeroplane': missing"):
        load_label_set(path, voc_classes)


# ----------------------------------------------------------------------------- the CLI


def test_cli_exit_codes_and_fix(write_json, tmp_path, voc_classes, seed_style_voc):
    clean = write_json("clean.json", {name: [f"x {name}"] for name in voc_classes})
    result = runner.invoke(app, ["validate", str(clean), "--dataset", "pascal_voc"])
    assert result.exit_code == 0, result.output
    assert "0 errors, 0 warnings" in result.output

    seed = write_json("seed.json", seed_style_voc(voc_classes))
    out = tmp_path / "fixed" / "seed.fixed.json"
    result = runner.invoke(app, ["validate", str(seed), "-d", "pascal_voc", "--fix", str(out)])
    assert result.exit_code == 1, result.output
    assert "class 'aeroplane'" in result.output and "[duplicate]" in result.output
    fixed = json.loads(out.read_text())
    assert fixed["aeroplane"][0] == "Commercial Jetliner" and list(fixed) == voc_classes

    bad = write_json("bad.json", {"background": []})
    result = runner.invoke(app, ["validate", str(bad), "-d", "pascal_voc", "--fix", str(tmp_path / "no.json")])
    assert result.exit_code == 2
    assert "class 'background': has no subclasses" in result.output
    assert not (tmp_path / "no.json").exists()


def test_cli_accepts_a_user_classes_file(tmp_path, write_json):
    classes = tmp_path / "mine" / "classes.txt"
    classes.parent.mkdir()
    classes.write_text("cat\ndog\n")
    path = write_json("mine.json", {"cat": ["tabby"], "dog": ["tabby"]})
    result = runner.invoke(app, ["validate", str(path), "--classes-file", str(classes), "--no-check-length"])
    assert result.exit_code == 1 and "[shared-subclass]" in result.output


def test_cli_names_a_missing_file():
    result = runner.invoke(app, ["validate", "nowhere.json", "-d", "pascal_voc"])
    assert result.exit_code == 2
    assert "nowhere.json" in result.output


def test_context_and_coco_seed_files_with_single_background(tmp_path):
    for name in ("pascal_context", "coco_object"):
        classes = list(get_dataset(name).classes)
        data = {c: [f"kind of {c}"] for c in classes}
        data["background"] = ["background"]
        report = validate_label_set(data, classes)
        assert report.exit_code == 0, [str(i) for i in report.issues]
