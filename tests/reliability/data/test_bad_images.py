"""Issue 21 item 10: one huge (decompression-bomb) image or one out-of-range label is one bad file.

It is named (exit 1, file in the message) or, with --skip-bad, skipped and listed; it never ends a
folder run with a traceback, in segment, evaluate and data check alike.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from reldata_helpers import DEMO_FLAGS, header_only_png


def _samples(spec, data_root):
    from llmseg.stage2.data.readers import list_samples

    return list_samples(spec, data_root)


def test_load_image_names_a_decompression_bomb(tmp_path):
    from llmseg.stage2.data import DataError, load_image, load_label

    big = tmp_path / "big.png"
    big.write_bytes(header_only_png(20000, 20000))
    with pytest.raises(DataError, match="big.png"):
        load_image(big)
    with pytest.raises(DataError, match="big.png"):
        load_label(big)


def test_segment_reports_the_huge_image_and_segments_the_rest(cli, demo_data, tmp_path):
    spec, data_root = demo_data
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, ref in enumerate(_samples(spec, data_root)):
        (photos / f"p{index}.jpg").write_bytes(ref.image_path.read_bytes())
    (photos / "p1_huge.png").write_bytes(header_only_png(20000, 20000))
    out = tmp_path / "out"
    result = cli("segment", photos, "--dataset", "demo", "--out", out, "--no-progress", *DEMO_FLAGS)
    assert result.exit_code == 1, result.output
    assert "p1_huge.png" in result.output and "decompression bomb" in result.output
    for index in range(3):
        assert (out / f"p{index}.png").is_file()
    assert not (out / "p1_huge.png").exists() and not (out / "p1_huge_overlay.png").exists()
    record = json.loads((out / "segment_run.json").read_text())
    assert list(record["failed"]) == [str(photos / "p1_huge.png")]


def test_evaluate_names_the_huge_image_or_skips_it(cli, demo_data, tmp_path):
    spec, data_root = demo_data
    refs = _samples(spec, data_root)
    refs[1].image_path.write_bytes(header_only_png(20000, 20000))
    base = ["evaluate", "--dataset", "demo", "--data-root", data_root, *DEMO_FLAGS, "--num-workers", "0", "--no-progress"]
    stopped = cli(*base, "--out", tmp_path / "stop")
    assert stopped.exit_code == 1, stopped.output
    assert str(refs[1].image_path) in stopped.output and "--skip-bad" in stopped.output
    skipped = cli(*base, "--out", tmp_path / "skip", "--skip-bad")
    assert skipped.exit_code == 0, skipped.output
    metrics = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["num_skipped"] == 1
    assert metrics["skipped"][0]["stem"] == refs[1].stem and "decompression bomb" in metrics["skipped"][0]["error"]


def test_data_check_names_the_huge_image(cli, demo_data):
    spec, data_root = demo_data
    refs = _samples(spec, data_root)
    refs[2].image_path.write_bytes(header_only_png(20000, 20000))
    refs[0].label_path.write_bytes(header_only_png(30000, 30000))
    result = cli("data", "check", "demo", "--data-root", data_root, "--workers", "0", "--no-progress")
    assert result.exit_code == 1, result.output
    assert f"{refs[2].image_path}: cannot read image" in result.output
    assert f"{refs[0].label_path}: cannot read label" in result.output
    assert "2 problems" in result.output


def _write_out_of_range_label(path, value: int) -> None:
    with Image.open(path) as img:
        label = np.array(img)
        palette = img.getpalette()
    label[:4, :4] = value
    picture = Image.fromarray(label.astype(np.uint8), mode="P")
    picture.putpalette(palette)
    picture.save(path)


def test_skip_bad_skips_an_out_of_range_label(cli, demo_data, tmp_path):
    spec, data_root = demo_data
    refs = _samples(spec, data_root)
    _write_out_of_range_label(refs[0].label_path, 7)  # the demo world has 3 classes
    base = ["evaluate", "--dataset", "demo", "--data-root", data_root, *DEMO_FLAGS, "--num-workers", "0", "--no-progress"]
    stopped = cli(*base, "--out", tmp_path / "stop")
    assert stopped.exit_code == 1, stopped.output
    assert str(refs[0].label_path) in stopped.output and "outside 0..2" in stopped.output
    skipped = cli(*base, "--out", tmp_path / "skip", "--skip-bad")
    assert skipped.exit_code == 0, skipped.output
    metrics = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and [s["stem"] for s in metrics["skipped"]] == [refs[0].stem]
    assert str(refs[0].label_path) in metrics["skipped"][0]["error"]
    # the skipped run scores exactly the two good images: the same as a run that never listed the bad one
    split = data_root / spec.layout.root / spec.layout.split_file
    split.write_text("".join(f"{ref.stem}\n" for ref in refs[1:]))
    clean = cli(*base, "--out", tmp_path / "clean")
    assert clean.exit_code == 0, clean.output
    want = json.loads((tmp_path / "clean" / "metrics.json").read_text())
    assert metrics["mIoU"] == want["mIoU"] and metrics["per_class"] == want["per_class"]
