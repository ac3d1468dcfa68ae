"""Atomic writes leave either the old file or the new one, never a mix; jsonl survives truncation."""

import hashlib
import json
import os

import pytest

from llmseg.io import (
    append_jsonl,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    sha256_file,
    stable_hash,
)


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"b": 1, "a": ["é"]})
    atomic_write_json(target, {"c": 2})
    assert json.loads(target.read_text(encoding="utf-8")) == {"c": 2}
    assert os.listdir(target.parent) == ["out.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash in the middle")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_atomic_path_keeps_suffix_for_format_detection(tmp_path):
    with atomic_path(tmp_path / "x.png") as tmp:
        assert tmp.name.endswith(".png.tmp") or tmp.suffix == ".tmp"
        assert ".png" in tmp.name
        tmp.write_bytes(b"1")
    assert (tmp_path / "x.png").read_bytes() == b"1"


def test_jsonl_skips_a_truncated_last_line(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"i": 1})
    append_jsonl(log, {"i": 2})
    with open(log, "a") as fh:
        fh.write('{"i": 3, "trunc')
    assert [r["i"] for r in read_jsonl(log)] == [1, 2]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_hashes_match_hashlib_and_are_order_independent(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 * (1 << 20) + 7)
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=1 << 16) == hashlib.sha256(data).hexdigest()
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring the old one afterwards."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_new_files_get_the_permissions_of_a_plain_open(tmp_path, umask, mask):
    umask(mask)
    reference = tmp_path / "plain.txt"
    with open(reference, "w") as fh:  # what any ordinary writer creates under this umask
        fh.write("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    with atomic_path(tmp_path / "via_path.bin") as tmp:
        tmp.write_bytes(b"x")
    want = reference.stat().st_mode & 0o777
    assert want == 0o666 & ~mask
    assert written.stat().st_mode & 0o777 == want
    assert (tmp_path / "via_path.bin").stat().st_mode & 0o777 == want


def test_replacing_a_file_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "shared.json"
    atomic_write_json(target, {"v": 1})
    os.chmod(target, 0o640)
    atomic_write_json(target, {"v": 2})
    assert target.stat().st_mode & 0o777 == 0o640
    assert json.loads(target.read_text()) == {"v": 2}
