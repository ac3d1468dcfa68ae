"""Issue 21 item 9: `llmseg segment` never writes one image's output over another's, and a rerun
trusts an earlier output only while its bytes are the ones that run wrote."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from reldata_helpers import DEMO_FLAGS


def _photos(demo_data, folder, names):
    spec, data_root = demo_data
    from llmseg.stage2.data.readers import list_samples

    folder.mkdir()
    refs = list_samples(spec, data_root)
    for ref, name in zip(refs[: len(names)], names, strict=True):
        (folder / name).write_bytes(ref.image_path.read_bytes())
    return [folder / name for name in names]


def test_an_output_name_of_one_image_is_refused_to_another(cli, demo_data, tmp_path):
    a, a_overlay = _photos(demo_data, tmp_path / "in", ["a.jpg", "a_overlay.jpg"])
    out = tmp_path / "out"
    result = cli("segment", a, a_overlay, "--dataset", "demo", "--out", out, "--no-progress", *DEMO_FLAGS)
    assert result.exit_code == 1, result.output
    assert f"{a_overlay}: its output file 'a_overlay.png' is already taken by {a}" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "a_overlay.png", "segment_run.json"]
    with Image.open(out / "a_overlay.png") as picture, Image.open(a) as source:
        assert picture.mode == "RGB" and picture.width > source.width  # a's overlay with its legend, not a label map
    record = json.loads((out / "segment_run.json").read_text())
    assert list(record["images"]) == ["a"] and list(record["failed"]) == [str(a_overlay)]


def test_same_names_in_other_case_are_one_file(cli, demo_data, tmp_path):
    first, second = _photos(demo_data, tmp_path / "in", ["Cat.jpg", "cat.png"])
    out = tmp_path / "out"
    result = cli("segment", first, second, "--dataset", "demo", "--out", out, "--no-progress", *DEMO_FLAGS)
    assert result.exit_code == 1 and f"already taken by {first}" in result.output, result.output


def test_the_run_files_are_reserved(cli, demo_data, tmp_path):
    (photo,) = _photos(demo_data, tmp_path / "in", ["segment_run.jpg"])
    out = tmp_path / "out"
    result = cli("segment", photo, "--dataset", "demo", "--out", out, "--no-progress", *DEMO_FLAGS)
    assert result.exit_code == 1 and "'segment_run.json' is reserved" in result.output, result.output


def test_a_rerun_redoes_an_image_whose_output_was_overwritten(cli, demo_data, tmp_path):
    photo, other = _photos(demo_data, tmp_path / "in", ["p.jpg", "q.jpg"])
    out = tmp_path / "out"
    args = ("segment", photo, "--dataset", "demo", "--out", out, "--no-progress", *DEMO_FLAGS)
    assert cli(*args).exit_code == 0
    with Image.open(out / "p.png") as picture:
        want = np.asarray(picture).copy()
    # another input's picture lands on p.png (what the old collision did, or any other writer)
    Image.open(other).save(out / "p.png")
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert "finished by an earlier run" not in again.output
    with Image.open(out / "p.png") as picture:
        assert picture.mode == "P" and np.array_equal(np.asarray(picture), want)
    # untouched outputs are still trusted
    third = cli(*args)
    assert "(1 finished by an earlier run" in third.output, third.output
