"""The shipped demo CLIP shows the effect through the real engine, and `llmseg demo run` works end to end."""

from __future__ import annotations

import json
import re

import pytest

from llmseg.labelset import load_label_set, load_meta
from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET, write_benchmark
from llmseg.stage2.demo.run import RunSpec, method_config
from llmseg.stage2.demo.train import WEIGHTS_PATH, materialize, register_model_config

# Figures (benchmarks/RESULTS.md, 200 images): dense names ~25 mIoU, dense subclasses ~73.
# Asserted on 24 images with wide room for noise.
MARGIN = 25.0


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    spec = write_benchmark(root / "data", n_images=24, progress=False)
    register_model_config()
    return root, spec, materialize(WEIGHTS_PATH, root / "model")


def test_shipped_weights_are_small():
    assert WEIGHTS_PATH.is_file()
    assert WEIGHTS_PATH.stat().st_size < 4 * 1024 * 1024


@pytest.mark.slow
def test_subclasses_beat_names_on_dense(demo_data):
    from llmseg.stage2.engine.runner import RunConfig, evaluate
    from llmseg.stage2.methods import build_method, load_backbone

    root, spec, pretrained = demo_data
    scores = {}
    backbone = None
    for labels in ("names", "subclasses"):
        config = method_config(RunSpec("dense", labels, False), pretrained, CURATED_LABEL_SET)
        backbone = backbone or load_backbone(config)
        method = build_method(config, spec.classes, dataset=spec.name, backbone=backbone)
        report = evaluate(
            method, spec, root / "data", RunConfig(out=str(root / labels), num_workers=0, resume=False, progress=False)
        )
        scores[labels] = report["mIoU"]
    assert scores["subclasses"] >= scores["names"] + MARGIN, scores
    assert scores["subclasses"] >= 55.0, scores


@pytest.mark.slow
def test_llmseg_demo_run_quick(tmp_path):
    from typer.testing import CliRunner

    from llmseg.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "run", "--quick", "--n-images", "4", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if re.match(r"^(dense|llm-supervision)-", line)]
    assert len(rows) == 8
    for row in rows:
        assert ("names" in row) != ("subclasses" in row)
        assert 0.0 <= float(row.split()[-1]) <= 100.0
    assert str(out) in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [r["run"] for r in summary["rows"]] == [row.split()[0] for row in rows]
    assert (out / "table.txt").is_file()
    assert len(list((out / "overlays").glob("*.png"))) == 4
    assert list((out / "runs" / "dense-subclasses" / "vis").glob("*.png"))
    # stage one ran offline against the scripted server; the sidecar says so
    label_set = out / "label_sets" / "scripted_top3.json"
    assert load_label_set(label_set).root == load_label_set(CURATED_LABEL_SET).root
    meta = load_meta(label_set)
    assert meta is not None and meta.model == "demo-scripted" and "ScriptedLLMServer" in (meta.notes or "")
    assert meta.model_extra["source"] == "scripted-server"
    # a second run reuses the benchmark (idempotent) and the cached full weights
    again = CliRunner().invoke(app, ["demo", "run", "--quick", "--n-images", "4", "--out", str(out), "--no-progress", "--no-crf"])
    assert again.exit_code == 0, again.output
    assert len([line for line in again.output.splitlines() if re.match(r"^(dense|llm-supervision)-", line)]) == 4
