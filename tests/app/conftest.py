"""Fixtures for `llmseg app`: a reference `Segmenter` on the demo CLIP built the way tests/api/test_demo_api.py
builds it (independently of the app's own code), and a demo scene saved as a lossless PNG."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DEMO_CLASSES = "background, warm-coloured shape, cool-coloured shape"


@pytest.fixture(scope="session")
def reference_segmenter(tmp_path_factory):
    from llmseg.stage2 import Segmenter
    from llmseg.stage2.demo.run import LOGIT_SCALE, TEMPLATES
    from llmseg.stage2.demo.train import WEIGHTS_PATH, materialize, model_input_size, register_model_config

    name = register_model_config()
    weights = materialize(WEIGHTS_PATH, tmp_path_factory.mktemp("reference_clip"))
    return Segmenter.create(f"openclip:{name}", pretrained=str(weights), dense_mode="vanilla", templates=TEMPLATES,
                            short_side=model_input_size(name), crop=0, logit_scale=LOGIT_SCALE, prob_thd=0.0, area_thd=0.0)


@pytest.fixture(scope="session")
def curated_label_set() -> dict[str, list[str]]:
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET

    return json.loads(CURATED_LABEL_SET.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def scene_png(tmp_path_factory) -> str:
    from PIL import Image

    from llmseg.stage2.demo.benchmark import BENCHMARK_SEED
    from llmseg.stage2.demo.generator import render_scene

    path = tmp_path_factory.mktemp("scene") / "scene_7.png"
    Image.fromarray(render_scene(BENCHMARK_SEED, 7, size=160).image).save(path)
    return str(path)
