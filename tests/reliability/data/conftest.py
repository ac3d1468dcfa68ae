"""Fixtures for the stage-two data attacks: the offline demo benchmark, the CLI, hostile files.

Everything is real: the demo world's images and labels on disk, the bundled demo CLIP, the
`llmseg` Typer app invoked as a user would.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

@pytest.fixture
def cli() -> Callable[..., object]:
    """`llmseg ARGS...` in-process; exceptions other than exit codes propagate (a traceback fails the test)."""
    from llmseg.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def demo_data(tmp_path, monkeypatch):
    """(spec, data root) of a 3-image demo benchmark in the PASCAL VOC layout."""
    from llmseg.stage2.demo.benchmark import write_benchmark

    monkeypatch.setenv("LLMSEG_CACHE_DIR", str(tmp_path / "cache"))
    spec = write_benchmark(tmp_path / "data", n_images=3, size=64, progress=False)
    return spec, tmp_path / "data"


@pytest.fixture
def demo_folder(tmp_path) -> Path:
    """A copy of the demo dataset's folder (classes.txt + dataset.json) to edit and pass by path."""
    from llmseg.datasets import _packaged_dataset_dir

    source = _packaged_dataset_dir("demo")
    assert source is not None
    folder = tmp_path / "mydemo"
    folder.mkdir()
    for name in ("classes.txt", "dataset.json"):
        shutil.copy(source / name, folder / name)
    return folder
