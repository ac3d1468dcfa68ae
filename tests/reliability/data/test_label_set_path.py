"""Issue 21 item 22: a bundled label-set path (label_sets/pascal_voc/top5.json) resolves the same way in
evaluate as in segment, from any working directory (here: outside the checkout)."""

from __future__ import annotations

import json

from reldata_helpers import DEMO_FLAGS

BUNDLED = "label_sets/pascal_voc/top5.json"


def test_evaluate_and_segment_resolve_the_bundled_label_set_outside_the_checkout(cli, tmp_path, monkeypatch):
    from llmseg.datasets import get_dataset
    from llmseg.stage2.data.readers import list_samples
    from llmseg.stage2.synthetic import write_synthetic_benchmark

    data_root = tmp_path / "data"
    write_synthetic_benchmark("pascal_voc", data_root, 2, (32, 40), 0)
    spec = get_dataset("pascal_voc")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no label_sets/ folder here
    out = tmp_path / "eval"
    result = cli("evaluate", "--dataset", "pascal_voc", "--data-root", data_root, "--label-set", BUNDLED, *DEMO_FLAGS,
                 "--num-workers", "0", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 2
    photo = list_samples(spec, data_root)[0].image_path
    segmented = cli("segment", photo, "--dataset", "pascal_voc", "--label-set", BUNDLED, "--out", tmp_path / "seg",
                    "--no-progress", *DEMO_FLAGS)
    assert segmented.exit_code == 0, segmented.output
    assert (tmp_path / "seg" / f"{photo.stem}_subclass.png").is_file()


def test_load_label_set_names_both_places_it_looked(tmp_path, monkeypatch):
    import pytest

    from llmseg.labelset import LabelSetError, load_label_set

    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabelSetError, match="label set not found: label_sets/pascal_voc/nope.json .also looked in"):
        load_label_set("label_sets/pascal_voc/nope.json")
