"""Issue 21 item 15: paths and stems that come from data stay inside their dataset and inside --out.

dataset.json's data_dir is a relative path under the data root, and its other folders and its split
file relative paths inside data_dir, all without '..'; its suffixes are plain
suffixes; a split file's stems are relative without '..'; `tune --name` is a plain name. Everything
else is refused with an error naming the file and the field (or the split file and line), before any
file is read or written.
"""

from __future__ import annotations

import json
import shutil

import pytest
from reldata_helpers import DEMO_FLAGS


def _edit(folder, **changes) -> None:
    path = folder / "dataset.json"
    facts = json.loads(path.read_text())
    facts.update(changes)
    path.write_text(json.dumps(facts))


@pytest.mark.parametrize(("field", "value"), [
    ("split_file", "/etc/passwd"),
    ("split_file", "ImageSets/../../../../../../etc/passwd"),
    ("img_dir", "/etc"),
    ("ann_dir", "..\\..\\secret"),
    ("img_suffix", "/../../etc/hostname"),
    ("seg_map_suffix", "..\\x.png"),
    ("data_dir", "/etc"),
    ("data_dir", "../../outside"),
    ("data_dir", "C:\\Users"),
])
def test_dataset_json_paths_are_confined(cli, demo_data, demo_folder, field, value):
    _spec, data_root = demo_data
    _edit(demo_folder, **{field: value})
    result = cli("data", "check", demo_folder, "--data-root", data_root, "--workers", "0", "--no-progress")
    assert result.exit_code == 2, result.output
    assert f"{demo_folder / 'dataset.json'}: field '{field}'" in result.output
    assert "root:" not in result.output  # /etc/passwd's lines are never printed


def test_another_splits_split_file_is_confined(demo_folder):
    from llmseg.datasets import DatasetError, get_dataset

    _edit(demo_folder, splits={"train": {"split_file": "/etc/shadow"}})
    with pytest.raises(DatasetError, match=r"field 'splits\.train\.split_file': '/etc/shadow' is an absolute path"):
        get_dataset(demo_folder)


def test_a_stem_outside_the_dataset_never_makes_save_pred_write_there(cli, demo_data, tmp_path):
    """The attack of the issue: an absolute stem made --save-pred overwrite that file's ground-truth label."""
    spec, data_root = demo_data
    base = data_root / spec.layout.root
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    shutil.copy(base / spec.layout.img_dir / "demo_00000.jpg", victim.with_suffix(".jpg"))
    shutil.copy(base / spec.layout.ann_dir / "demo_00000.png", victim.with_suffix(".png"))
    truth = victim.with_suffix(".png").read_bytes()
    split = base / spec.layout.split_file
    split.write_text(f"demo_00001\n{victim}\n")
    out = tmp_path / "out"
    result = cli("evaluate", "--dataset", "demo", "--data-root", data_root, *DEMO_FLAGS, "--num-workers", "0",
                 "--no-progress", "--save-pred", "--out", out)
    assert result.exit_code == 2, result.output
    assert f"{split}:2: the stem" in result.output and "is an absolute path" in result.output
    assert victim.with_suffix(".png").read_bytes() == truth
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.jpg", "victim.png"]


def test_a_stem_with_dotdot_is_refused_naming_the_line(demo_data):
    from llmseg.stage2.data import DataError, list_samples

    spec, data_root = demo_data
    split = data_root / spec.layout.root / spec.layout.split_file
    split.write_text("demo_00000\n\n../../../../x/demo_00001\n")
    with pytest.raises(DataError, match=rf"{split}:3: the stem '../../../../x/demo_00001' holds a '\.\.' part"):
        list_samples(spec, data_root)


@pytest.mark.parametrize("stem", ["/abs/x", "../x", "a/../../x", "C:x"])
def test_prediction_path_refuses_a_stem_leaving_the_folder(tmp_path, stem):
    from llmseg.stage2.data import DataError
    from llmseg.stage2.engine.results import prediction_path

    with pytest.raises(DataError, match="the stem"):
        prediction_path(tmp_path / "pred", stem)
    assert prediction_path(tmp_path / "pred", "city/x_000001") == tmp_path / "pred" / "city" / "x_000001.png"


def test_tune_name_cannot_leave_out(cli, demo_data, tmp_path):
    from llmseg.stage2.demo.benchmark import write_benchmark

    _spec, data_root = demo_data
    write_benchmark(data_root, n_images=1, size=64, progress=False, split="train")
    out = tmp_path / "runs" / "tune"
    result = cli("tune", "--dataset", "demo", "--data-root", data_root, "--backbone", "demo-clip",
                 "--set", "dense_mode=vanilla", "--set", "templates=single", "--set", "short_side=64", "--set", "crop=0",
                 "--grid", "logit_scale=50", "--tune-images", "1", "--no-final", "--num-workers", "0", "--no-progress",
                 "--name", "../../x", "--out", out)
    assert result.exit_code == 2, result.output
    assert "--name '../../x' holds a path separator" in result.output
    assert not (tmp_path / "x.json").exists() and not out.exists()
