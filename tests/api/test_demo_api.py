"""The Python API with trained weights: the shipped demo CLIP segments a demo-world scene through
`Segmenter`, and the winning subclass of each object is its true colour."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def demo_segmenter(tmp_path_factory):
    from llmseg.stage2 import Segmenter
    from llmseg.stage2.demo.run import LOGIT_SCALE, TEMPLATES
    from llmseg.stage2.demo.train import WEIGHTS_PATH, materialize, model_input_size, register_model_config

    name = register_model_config()
    weights = materialize(WEIGHTS_PATH, tmp_path_factory.mktemp("demo_clip"))
    side = model_input_size(name)
    return Segmenter.create(f"openclip:{name}", pretrained=str(weights), dense_mode="vanilla", templates=TEMPLATES,
                            short_side=side, crop=0, logit_scale=LOGIT_SCALE, prob_thd=0.0, area_thd=0.0)


def test_demo_clip_names_each_object_by_its_colour(demo_segmenter):
    from llmseg.stage2.demo.benchmark import BENCHMARK_SEED, CURATED_LABEL_SET, demo_spec
    from llmseg.stage2.demo.generator import render_scene

    classes = list(demo_spec().classes)
    scene = render_scene(BENCHMARK_SEED, 5, size=128)  # a warm orange, a warm red and a cool purple object
    result = demo_segmenter(scene.image, classes=classes, label_set=CURATED_LABEL_SET)
    for identity, mask in zip(scene.objects, scene.masks, strict=True):
        family = classes.index(f"{identity.family}-coloured shape")
        labels = result.labels[mask]
        assert (labels == family).mean() > 0.6, (identity.name(), np.bincount(labels, minlength=3))
        won = result.subclass[mask & (result.labels == family)]
        names = [result.subclass_names[k] for k in won]
        top = max(set(names), key=names.count)
        assert top == identity.colour, (identity.name(), {n: names.count(n) for n in set(names)})
    summary = result.summary()
    assert {e["name"] for e in summary["present"]} >= {"warm-coloured shape", "cool-coloured shape"}
