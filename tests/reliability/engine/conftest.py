"""Fixtures of the engine reliability tests: synthetic benchmarks and a reference method (no model)."""

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
def synthetic(tmp_path):
    """Factory: write a synthetic benchmark under tmp_path/data and return the data root."""
    from llmseg.stage2.synthetic import write_synthetic_benchmark

    def make(name: str, n: int = 5, size=(24, 32), seed: int = 0) -> Path:
        root = tmp_path / "data"
        write_synthetic_benchmark(name, root, n, size, seed)
        return root

    return make
