"""Issue 21 item 21 (stage two): dataset.json with a repeated key and classes.txt with a line
breaking character inside a line are refused with the file and the field or line named, instead
of silently keeping the last value or splitting a class in two."""

from __future__ import annotations

import re

import pytest


def test_a_repeated_dataset_json_key_is_refused(demo_folder):
    from llmseg.datasets import DatasetError, get_dataset

    path = demo_folder / "dataset.json"
    text = path.read_text()
    path.write_text(text.replace('"background": 0,', '"background": 0, "background": null,', 1))
    with pytest.raises(DatasetError, match=rf"{path}: field 'background' is given twice"):
        get_dataset(demo_folder)


def test_a_repeated_key_inside_splits_is_refused(demo_folder):
    from llmseg.datasets import DatasetError, read_dataset_file

    path = demo_folder / "dataset.json"
    text = path.read_text()
    path.write_text(text.replace('"split_file": "ImageSets/Segmentation/train.txt"',
                                 '"split_file": "a.txt", "split_file": "ImageSets/Segmentation/train.txt"', 1))
    with pytest.raises(DatasetError, match="field 'split_file' is given twice"):
        read_dataset_file(path)


def test_a_deeply_nested_dataset_json_is_a_named_error(tmp_path):
    from llmseg.datasets import DatasetError, read_dataset_file

    path = tmp_path / "dataset.json"
    path.write_text('{"description": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DatasetError, match=str(path)):
        read_dataset_file(path)


@pytest.mark.parametrize(("char", "code"), [("\x85", "U+0085"), ("\x0c", "U+000C"), ("\r", "U+000D"), ("\u2028", None), ("\x1e", "U+001E")])
def test_a_line_break_inside_a_class_line_does_not_make_two_classes(tmp_path, char, code):
    from llmseg.datasets import DatasetError, read_classes_file

    path = tmp_path / "classes.txt"
    path.write_text(f"background\ncat{char}dog\nbird\n", encoding="utf-8")
    if code is None:  # U+2028 is no control character: one (odd) class name, never two
        assert read_classes_file(path) == ["background", f"cat{char}dog", "bird"]
        return
    with pytest.raises(DatasetError, match=rf"{path}:2: class name .* holds the control character {re.escape(code)}"):
        read_classes_file(path)


def test_classes_txt_keeps_crlf_and_a_byte_order_mark(tmp_path):
    from llmseg.datasets import DatasetSpec, read_classes_file

    path = tmp_path / "classes.txt"
    path.write_bytes("\ufeffbackground\r\ncat \r\n\r\n".encode())
    assert read_classes_file(path) == ["background", "cat"]
    assert DatasetSpec.from_classes_file(path).background == 0
