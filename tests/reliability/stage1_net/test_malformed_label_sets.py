"""Item 21 (stage-one part) of issue 21: label-set files that must give a named error, never a traceback
or a silent choice: a key given twice, hostile nesting, `validate --fix` into a folder or onto a disk that
refuses the write, a broken sidecar."""

from __future__ import annotations

import errno
import json
import os

import pytest
from typer.testing import CliRunner

import llmseg.io
import llmseg.labelset as labelset
from llmseg.cli import app
from llmseg.labelset import LabelSetError, load_label_set, load_meta, read_label_set_json

runner = CliRunner()
GOOD = {"background": ["sky"], "cat": ["tabby cat", "kitten"], "dog": ["beagle"]}
DUPLICATE = '{"background": ["sky"], "cat": ["tabby cat"], "dog": ["beagle"], "cat": ["lion"]}'


def _validate(*args: str):
    return runner.invoke(app, ["validate", *map(str, args), "--dataset", "toy", "--no-check-length"])


def _is_named_error(result, *words: str) -> bool:
    """Exit 2 with `error: ...` naming every word, and no exception other than the exit itself."""
    return (result.exit_code == 2 and isinstance(result.exception, SystemExit)
            and "error:" in result.output and all(w in result.output for w in words))


def test_a_key_given_twice_is_refused_naming_file_and_key(tmp_path, toy):
    path = tmp_path / "dup.json"
    path.write_text(DUPLICATE, encoding="utf-8")
    with pytest.raises(LabelSetError, match=r"dup\.json: key 'cat' is given twice"):
        load_label_set(path, ["background", "cat", "dog"])
    fixed = tmp_path / "fixed.json"
    result = _validate(path, "--fix", fixed)
    assert _is_named_error(result, str(path), "'cat'", "twice"), result.output
    assert not fixed.exists()  # nothing "cleaned" from a file whose meaning is ambiguous
    diff = runner.invoke(app, ["subclasses", "diff", str(path), str(path)])
    assert _is_named_error(diff, "'cat'"), diff.output


def test_a_key_given_twice_inside_a_nested_object_is_refused():
    with pytest.raises(LabelSetError, match="'name' is given twice"):
        labelset.loads_label_set_json('{"cat": [{"name": "a", "name": "b"}]}', "x.json")


@pytest.mark.parametrize("depth", [40, 100_000])
def test_hostile_nesting_is_a_named_error(tmp_path, toy, depth):
    path = tmp_path / "deep.json"
    path.write_text('{"cat": ' + "[" * depth + "]" * depth + "}", encoding="utf-8")
    with pytest.raises(LabelSetError, match="deep.json.*nested"):
        read_label_set_json(path)
    result = _validate(path)
    assert _is_named_error(result, str(path), "nested"), result.output


def test_a_lone_surrogate_is_a_named_error():
    with pytest.raises(LabelSetError, match="lone surrogate"):
        labelset.loads_label_set_json('{"cat\\ud800": ["x"]}', "s.json")


def test_fix_into_a_folder_is_a_named_error(tmp_path, toy):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(GOOD), encoding="utf-8")
    folder = tmp_path / "out"
    folder.mkdir()
    result = _validate(path, "--fix", folder)
    assert _is_named_error(result, str(folder), "folder"), result.output
    assert list(folder.iterdir()) == []


def test_fix_where_the_parent_is_a_file_is_a_named_error(tmp_path, toy):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(GOOD), encoding="utf-8")
    target = path / "clean.json"  # 'ok.json' is a file: no folder can be made there
    result = _validate(path, "--fix", target)
    assert _is_named_error(result, "cannot write --fix", str(target)), result.output


def test_fix_on_a_read_only_disk_is_a_named_error(tmp_path, toy, monkeypatch):
    """Tests run as root, for whom chmod does not stop a write: the rename fails as a read-only mount's would."""
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(GOOD), encoding="utf-8")
    target = tmp_path / "clean.json"

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(llmseg.io.os, "replace", read_only)
    result = _validate(path, "--fix", target)
    monkeypatch.undo()
    assert _is_named_error(result, "cannot write --fix", str(target), "Read-only file system"), result.output
    assert not target.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_broken_sidecar_is_a_named_error(tmp_path):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(GOOD), encoding="utf-8")
    (tmp_path / "top.meta.json").write_text('{"generator": 5', encoding="utf-8")
    with pytest.raises(LabelSetError, match=r"top\.meta\.json: not a readable label-set sidecar"):
        load_meta(path)
