"""The demo world from the CLI: `--backbone demo-clip` (the bundled weights expanded into the user
cache, never into the package), `--dataset demo` (its palette is data), and `llmseg segment` on a
demo scene giving exactly what the Python API gives with the same settings."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llmseg.cli import app  # noqa: E402
from llmseg.stage2.demo.benchmark import ASSETS, BENCHMARK_SEED, CURATED_LABEL_SET, DATASET_FILE  # noqa: E402

runner = CliRunner()

# the demo protocol (llmseg demo run's dense settings), spelled as CLI flags; no CRF to stay fast
DEMO_FLAGS = ["--backbone", "demo-clip", "--dense-mode", "vanilla", "--templates", "single", "--short-side", "64",
              "--crop", "0", "--logit-scale", "50", "--prob-thd", "0", "--area-thd", "0"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("LLMSEG_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    from llmseg.stage2.demo.generator import render_scene

    path = tmp_path_factory.mktemp("scene") / "scene5.png"
    Image.fromarray(render_scene(BENCHMARK_SEED, 5, size=96).image).save(path)
    return path


def test_demo_dataset_palette_is_its_dataset_json():
    from llmseg.datasets import get_dataset
    from llmseg.stage2.demo.benchmark import demo_spec
    from llmseg.stage2.pictures.palettes import palette_for

    written = json.loads(DATASET_FILE.read_text(encoding="utf-8"))["palette"]
    spec = get_dataset("demo")
    assert spec == demo_spec() and spec.source == DATASET_FILE
    assert palette_for(list(spec.classes), "demo").tolist() == written
    assert palette_for(list(spec.classes), spec).tolist() == written


def test_demo_clip_backbone_is_the_shipped_model_materialised_in_the_user_cache(cache):
    import open_clip
    import torch

    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.demo.train import MODEL_NAME, WEIGHTS_PATH, materialize
    from llmseg.stage2.methods import load_backbone

    before = sorted(p.name for p in ASSETS.iterdir())
    backbone = load_backbone(MethodConfig(backbone="demo-clip", dense_mode="vanilla"))
    assert backbone.name == "demo-clip"
    files = list(cache.rglob("*.safetensors"))
    assert len(files) == 1 and files[0].parent == cache / "demo_clip"
    assert sorted(p.name for p in ASSETS.iterdir()) == before  # nothing written into the package
    reference = open_clip.create_model(MODEL_NAME, pretrained=str(materialize(WEIGHTS_PATH, cache / "ref")))
    ours = backbone.model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(ours[key], value), key


def test_segment_on_a_demo_scene_equals_the_api(cache, scene_file, tmp_path):
    from llmseg.stage2 import Segmenter

    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(scene_file), "--dataset", "demo", "--label-set", str(CURATED_LABEL_SET),
                                 *DEMO_FLAGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    labels = np.asarray(Image.open(out / "scene5.png"))
    seg = Segmenter.create("demo-clip", dense_mode="vanilla", templates="single", short_side=64, crop=0,
                           logit_scale=50.0, prob_thd=0.0, area_thd=0.0)
    expected = seg(str(scene_file), classes=["background", "warm-coloured shape", "cool-coloured shape"],
                   label_set=CURATED_LABEL_SET)
    np.testing.assert_array_equal(labels, expected.labels)
    assert set(np.unique(labels)) >= {1, 2}  # the scene's warm and cool objects are found
    palette = np.array(Image.open(out / "scene5.png").getpalette()[:9]).reshape(3, 3).tolist()
    assert palette == json.loads(DATASET_FILE.read_text(encoding="utf-8"))["palette"]


def test_segment_takes_the_classes_from_the_label_set_keys(cache, scene_file, tmp_path):
    mine = tmp_path / "my.json"
    mine.write_text(json.dumps({"backdrop": ["grey noise", "beige paper", "dark grid"],
                                "warm thing": ["red", "orange", "yellow"], "cool thing": ["blue", "green", "purple"]}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(scene_file), "--label-set", str(mine), *DEMO_FLAGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "segment_run.json").read_text(encoding="utf-8"))
    assert record["classes"] == ["backdrop", "warm thing", "cool thing"]
    summary = json.loads((out / "scene5.json").read_text(encoding="utf-8"))
    assert {e["name"] for e in summary["present"]} <= {"backdrop", "warm thing", "cool thing"}
    # a label-set file that is not an object: the error names it, nothing is written
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = runner.invoke(app, ["segment", str(scene_file), "--label-set", str(bad), *DEMO_FLAGS, "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "bad.json" in result.output
    assert not (tmp_path / "o2").exists()
