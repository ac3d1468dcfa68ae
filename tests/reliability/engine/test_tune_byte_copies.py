"""Issue 21 item 4: tune refuses a tuning split holding a byte copy of an evaluation image under another name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def _world(tmp_path: Path) -> Path:
    from llmseg.stage2.demo.benchmark import write_benchmark

    root = tmp_path / "data"
    write_benchmark(root, n_images=3, progress=False)
    write_benchmark(root, n_images=4, split="train", progress=False)
    return root


def _images(root: Path, split: str) -> list[Path]:
    from llmseg.datasets import get_dataset
    from llmseg.stage2.data.readers import list_samples

    return [ref.image_path for ref in list_samples(get_dataset("demo").with_split(split), root)]


def test_a_val_image_copied_into_train_is_refused(tmp_path):
    from llmseg.datasets import get_dataset
    from llmseg.stage2.experiments.tune import TuneError, tuning_spec

    root = _world(tmp_path)
    val, train = _images(root, "val"), _images(root, "train")
    assert not {p.resolve() for p in val} & {p.resolve() for p in train}
    shutil.copyfile(val[1], train[2])  # same bytes, another name
    with pytest.raises(TuneError, match="byte copies") as err:
        tuning_spec(get_dataset("demo"), "train", root, tmp_path / "t", None, 0)
    assert train[2].name in str(err.value) and val[1].name in str(err.value)
    assert not (tmp_path / "t" / "tune_images.txt").exists()


def test_distinct_images_of_equal_size_pass(tmp_path):
    from llmseg.datasets import get_dataset
    from llmseg.stage2.experiments.tune import tuning_spec

    root = _world(tmp_path)
    val, train = _images(root, "val"), _images(root, "train")
    data = bytearray(val[0].read_bytes())
    data[-1] ^= 0xFF  # one byte differs: the sizes match, the hashes do not
    train[0].write_bytes(bytes(data))
    _, stems = tuning_spec(get_dataset("demo"), "train", root, tmp_path / "t", None, 0)
    assert len(stems) == len(train)


def test_tune_command_names_the_copy(tmp_path):
    from typer.testing import CliRunner

    from llmseg.cli import app

    root = _world(tmp_path)
    val, train = _images(root, "val"), _images(root, "train")
    shutil.copyfile(val[0], train[3])
    result = CliRunner().invoke(app, ["tune", "--dataset", "demo", "--backbone", "demo-clip", "--grid", "logit_scale=40,50",
                                      "--data-root", str(root), "--out", str(tmp_path / "t"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "byte copies" in result.output and train[3].name in result.output
