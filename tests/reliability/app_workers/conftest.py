"""Fixtures for the app and worker-pool reliability tests: a demo scene PNG and the app's demo classes."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEMO_CLASSES = "background, warm-coloured shape, cool-coloured shape"


@pytest.fixture(scope="session")
def scene_png(tmp_path_factory) -> str:
    """A demo-world scene written as a lossless PNG (what the page would upload)."""
    from PIL import Image

    from llmseg.stage2.demo.benchmark import BENCHMARK_SEED
    from llmseg.stage2.demo.generator import render_scene

    path = tmp_path_factory.mktemp("scene") / "scene_3.png"
    Image.fromarray(render_scene(BENCHMARK_SEED, 3, size=128).image).save(path)
    return str(path)


@pytest.fixture(scope="session")
def demo_classes() -> str:
    return DEMO_CLASSES
