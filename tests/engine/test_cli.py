"""`llmseg data convert|check`, `llmseg score`, `llmseg evaluate` through the real typer app."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from engine_refmethods import build_oracle
from PIL import Image
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.stage2.cli.engine import METHOD_FIELDS, default_run_name
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.engine.runner import RunConfig, evaluate
from llmseg.stage2.synthetic import write_synthetic_benchmark

runner = CliRunner()


def test_data_check_ok_and_problems(tmp_path):
    stems = write_synthetic_benchmark("pascal_voc", tmp_path, 3, (16, 16))
    ok = runner.invoke(app, ["data", "check", "pascal_voc", "--data-root", str(tmp_path), "--workers", "0", "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert "3 samples checked" in ok.output and "OK" in ok.output
    os.remove(tmp_path / f"VOCdevkit/VOC2012/SegmentationClass/{stems[1]}.png")
    bad = runner.invoke(app, ["data", "check", "pascal_voc", "--data-root", str(tmp_path), "--workers", "0", "--no-progress"])
    assert bad.exit_code == 1
    assert f"{stems[1]}.png" in bad.output and "1 problems" in bad.output
    missing = runner.invoke(app, ["data", "check", "cityscapes", "--data-root", str(tmp_path), "--no-progress"])
    assert missing.exit_code == 1 and "image folder not found" in missing.output
    unknown = runner.invoke(app, ["data", "check", "nope", "--data-root", str(tmp_path)])
    assert unknown.exit_code == 2 and "nope" in unknown.output


def test_data_convert_cli(tmp_path):
    ann = tmp_path / "coco_stuff164k/annotations/val2017"
    ann.mkdir(parents=True)
    Image.fromarray(np.array([[0, 12, 181, 255]], np.uint8)).save(ann / "000000000009.png")
    res = runner.invoke(app, ["data", "convert", "coco_stuff", str(tmp_path / "coco_stuff164k"), "--workers", "0",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "1 written" in res.output
    assert np.array(Image.open(ann / "000000000009_labelTrainIds.png")).tolist() == [[0, 11, 170, 255]]
    res = runner.invoke(app, ["data", "convert", "coco_object", str(tmp_path / "coco_stuff164k"), "--workers", "0",
                              "--no-progress"])
    assert res.exit_code == 0 and np.array(Image.open(ann / "000000000009_instanceTrainIds.png")).tolist() == [[1, 12, 0, 0]]
    again = runner.invoke(app, ["data", "convert", "coco_object", str(tmp_path / "coco_stuff164k"), "--workers", "0",
                                "--no-progress"])
    assert "0 written, 1 already up to date" in again.output
    bad = runner.invoke(app, ["data", "convert", "voc", str(tmp_path / "coco_stuff164k")])
    assert bad.exit_code == 2 and "unknown converter" in bad.output


def test_score_cli_matches_evaluate(tmp_path):
    root = tmp_path / "data"
    write_synthetic_benchmark("coco_object", root, 4, (20, 20))
    spec, method = build_oracle("coco_object", root)
    run = tmp_path / "results" / "run"
    report = evaluate(method, spec, root, RunConfig(out=str(run), num_workers=0, progress=False, save_pred=True))
    res = runner.invoke(app, ["score", "--dataset", "coco_object", "--pred-dir", str(run / "pred"), "--data-root", str(root),
                              "--num-workers", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    scored = json.loads((run / "score" / "metrics.json").read_text())  # default: next to the pred folder
    assert scored["mIoU"] == report["mIoU"] and f"mIoU {report['mIoU']:.2f}" in res.output
    out = tmp_path / "elsewhere"
    res = runner.invoke(app, ["score", "-d", "coco_object", "--pred-dir", str(run / "pred"), "--data-root", str(root),
                              "--out", str(out), "--num-workers", "0", "--no-progress", "--limit", "2"])
    assert res.exit_code == 0 and json.loads((out / "metrics.json").read_text())["num_images"] == 2
    res = runner.invoke(app, ["score", "-d", "coco_object", "--pred-dir", str(tmp_path / "none"), "--data-root", str(root)])
    assert res.exit_code == 1 and "prediction folder not found" in res.output


def test_evaluate_exposes_every_method_config_field():
    assert set(METHOD_FIELDS) == set(MethodConfig.model_fields)
    res = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert res.exit_code == 0
    from llmseg.stage2.options import flag as spelled

    for name in METHOD_FIELDS:
        assert spelled(name) in res.output, name  # --mode-options: the repeatable --mode-option
    for flag in ("--no-pamr", "--no-crf", "--no-resume", "--post-workers", "--save-vis", "--skip-bad", "--checkpoint-every"):
        assert flag in res.output


def test_default_run_name():
    cfg = MethodConfig(random_weights=True, backbone="openclip:ViT-B/16", preset="sclip", label_set="label_sets/pascal_voc/top5.json",
                       assembly="max", crf=True)
    assert default_run_name(cfg) == "dense-openclip-ViT-B-16-sclip-top5-max-crf"


def test_evaluate_cli_rejects_bad_settings(tmp_path):
    res = runner.invoke(app, ["evaluate", "--dataset", "pascal_voc", "--data-root", str(tmp_path), "--method", "magic"])
    assert res.exit_code == 2 and "invalid method settings" in res.output
    res = runner.invoke(app, ["evaluate", "--dataset", "nope"])
    assert res.exit_code == 2 and "nope" in res.output


@pytest.mark.slow
def test_evaluate_cli_end_to_end_with_a_tiny_model(tmp_path):
    """The real command with a random-weight ViT-S-16 (no download): runs and writes its results."""
    root = tmp_path / "data"
    write_synthetic_benchmark("pascal_voc", root, 2, (32, 40))
    out = tmp_path / "res"
    res = runner.invoke(
        app,
        ["evaluate", "--dataset", "pascal_voc", "--data-root", str(root), "--out", str(out), "--backbone",
         "openclip:ViT-S-16", "--random-weights", "--short-side", "32", "--crop", "0", "--num-workers", "0", "--no-progress",
         "--templates", "single", "--save-pred"],
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_images"] == 2 and report["extra"]["method_config"]["backbone"] == "openclip:ViT-S-16"
    assert report["extra"]["method_config"]["random_weights"] is True  # metrics.json says the weights were random
    assert len(list((out / "pred").glob("*.png"))) == 2


def test_stage_two_commands_are_mounted():
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert {"evaluate", "score", "data", "segment", "demo"} <= names


def _evaluate_args(tmp_path) -> list[str]:
    root = tmp_path / "data"
    write_synthetic_benchmark("pascal_voc", root, 1, (16, 16))
    return ["evaluate", "--dataset", "pascal_voc", "--data-root", str(root), "--out", str(tmp_path / "res"),
            "--backbone", "openclip:ViT-S-16", "--random-weights", "--num-workers", "0", "--no-progress"]


def test_a_bug_inside_evaluate_keeps_its_traceback(tmp_path, monkeypatch):
    """Only LlmsegErrors become `error: ...` exit 2; a plain KeyError/ValueError is a bug and propagates."""
    import llmseg.stage2.methods as methods

    for bug in (KeyError("num_classes"), ValueError("shapes (3,) and (4,) not aligned")):
        def broken(*args, _bug=bug, **kwargs):
            raise _bug

        monkeypatch.setattr(methods, "build_method", broken)
        res = runner.invoke(app, _evaluate_args(tmp_path))
        assert res.exception is bug, res.output
        assert res.exit_code != 2 and "error:" not in res.output
        with pytest.raises(type(bug)):
            runner.invoke(app, _evaluate_args(tmp_path), catch_exceptions=False)


def test_an_llmseg_error_inside_evaluate_is_reported_with_exit_2(tmp_path, monkeypatch):
    import llmseg.stage2.methods as methods
    from llmseg.errors import ConfigError, LlmsegError

    for error in (ConfigError("--assembly max needs a label set (--label-set)"), LlmsegError("checkpoint x.pth is not a SimSeg one")):
        def refused(*args, _error=error, **kwargs):
            raise _error

        monkeypatch.setattr(methods, "build_method", refused)
        res = runner.invoke(app, _evaluate_args(tmp_path), catch_exceptions=False)
        assert res.exit_code == 2
        assert f"error: {error}" in res.output
    assert not (tmp_path / "res" / "metrics.json").exists()


def test_evaluate_builds_the_backbone_on_the_ranks_gpu(tmp_path, monkeypatch):
    """Under torchrun with --device cuda, rank 2 of 4 configures cuda:2 before anything is built."""
    import torch

    import llmseg.stage2.methods as methods
    from llmseg.errors import LlmsegError

    seen: list[str] = []

    def capture(config, *args, **kwargs):
        seen.append(config.device)
        raise LlmsegError("stop here: nothing is built")

    monkeypatch.setattr(methods, "build_method", capture)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    env = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "2"}
    res = runner.invoke(app, [*_evaluate_args(tmp_path), "--device", "cuda"], env=env, catch_exceptions=False)
    assert res.exit_code == 2 and seen == ["cuda:2"], res.output
    res = runner.invoke(app, [*_evaluate_args(tmp_path), "--device", "cuda:1"], env=env, catch_exceptions=False)
    assert res.exit_code == 2 and "CUDA_VISIBLE_DEVICES" in res.output and seen == ["cuda:2"]
    res = runner.invoke(app, [*_evaluate_args(tmp_path), "--device", "cpu"], env=env, catch_exceptions=False)
    assert res.exit_code == 2 and seen == ["cuda:2", "cpu"]
