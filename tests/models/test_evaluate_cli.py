"""The two `llmseg evaluate` forms of the models issue, end to end on a synthetic VOC with random weights.

The reported mIoU is checked against a direct recomputation from the saved prediction PNGs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.datasets import get_dataset
from llmseg.stage2.synthetic import write_synthetic_benchmark

runner = CliRunner()


def _direct_miou(pred_dir, label_dir, num_classes: int) -> float:
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for label_path in sorted(label_dir.glob("*.png")):
        pred_path = pred_dir / label_path.name
        if not pred_path.exists():
            continue  # images the split file does not list
        label = np.array(Image.open(label_path)).astype(np.int64)
        pred = np.array(Image.open(pred_path)).astype(np.int64)
        keep = label != 255
        for c in range(num_classes):
            p, t = (pred == c) & keep, (label == c) & keep
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    present = union > 0
    return float((inter[present] / union[present]).mean() * 100)


def _run(args):
    res = runner.invoke(app, args, env={"HF_HUB_OFFLINE": "1"})
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def _check(out, root, n_images: int, method: str):
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_images"] == n_images
    preds = sorted((out / "pred").glob("*.png"))
    assert len(preds) == n_images
    label_dir = root / "VOCdevkit/VOC2012/SegmentationClass"
    assert report["mIoU"] == pytest.approx(_direct_miou(out / "pred", label_dir, 21), abs=5e-5)  # reported rounded to 4 decimals
    assert "| class |" in (out / "metrics.md").read_text() or "IoU" in (out / "metrics.md").read_text()
    text = json.dumps(report)
    assert method in text
    return report


@pytest.mark.slow
def test_evaluate_dense_sclip_preset_with_a_label_set_on_vit_b16(tmp_path):
    """`--method dense --backbone openclip:ViT-B-16 --preset sclip --label-set ... --assembly max`."""
    root = tmp_path / "data"
    write_synthetic_benchmark("pascal_voc", root, 2, (40, 56))
    out = tmp_path / "dense"
    _run(["evaluate", "--dataset", "pascal_voc", "--data-root", str(root), "--out", str(out),
          "--method", "dense", "--backbone", "openclip:ViT-B-16", "--random-weights", "--preset", "sclip",
          "--label-set", "label_sets/pascal_voc/top5.json", "--assembly", "max", "--templates", "single",
          "--short-side", "224", "--num-workers", "0", "--no-progress", "--save-pred"])
    report = _check(out, root, 2, "dense")
    text = json.dumps(report)
    assert "sclip" in text and "top5.json" in text


@pytest.mark.slow
def test_evaluate_llm_supervision_with_a_simseg_checkpoint(tmp_path, simseg_checkpoint, tokenizer_dir):
    """`--method llm-supervision --backbone simseg --checkpoint ...`: the paper's setting, with and without CRF."""
    path, *_ = simseg_checkpoint
    root = tmp_path / "data"
    write_synthetic_benchmark("pascal_voc", root, 3, (40, 56))
    label_set = tmp_path / "voc.json"
    classes = get_dataset("pascal_voc").classes
    label_set.write_text(json.dumps({c: ["cat", "dog"] if c != "background" else ["background"] for c in classes}))
    common = ["evaluate", "--dataset", "pascal_voc", "--data-root", str(root), "--method", "llm-supervision",
              "--backbone", "simseg", "--checkpoint", str(path), "--text-tokenizer", str(tokenizer_dir),
              "--label-set", str(label_set), "--top-cls-num", "5", "--num-workers", "0", "--no-progress", "--save-pred"]
    crf = _check(_run([*common, "--out", str(tmp_path / "crf")]) and tmp_path / "crf", root, 3, "llm-supervision")
    plain = _check(_run([*common, "--no-crf", "--out", str(tmp_path / "plain")]) and tmp_path / "plain", root, 3,
                   "llm-supervision")
    assert json.dumps(crf).count('"crf": true') >= 1 and json.dumps(plain).count('"crf": false') >= 1
