"""Fixtures of the full-disk tests of evaluate, score, compare and tune: synthetic data, a failing disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def voc(tmp_path) -> Path:
    """A synthetic pascal_voc benchmark of 5 small images under tmp_path/data (the data root)."""
    from llmseg.stage2.synthetic import write_synthetic_benchmark

    root = tmp_path / "data"
    write_synthetic_benchmark("pascal_voc", root, 5, (24, 32), 0)
    return root


@pytest.fixture
def full_disk(monkeypatch):
    """Factory: writes under a folder succeed `after` times, then every later one finds the disk full."""
    from disk_faults import FullDisk

    def make(folder: Path, after: int, err: int | None = None) -> FullDisk:
        disk = FullDisk(Path(folder), after, **({"err": err} if err is not None else {}))
        disk.install(monkeypatch)
        return disk

    return make
