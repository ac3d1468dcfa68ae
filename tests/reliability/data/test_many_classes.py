"""Issue 21 item 11: `segment` with more than 255 classes (ade847) writes 16-bit label maps whose
pixel values are the class ids, instead of failing after inference."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from reldata_helpers import DEMO_FLAGS


def test_output_of_847_classes_saves_and_reads_back(tmp_path):
    from llmseg.stage2.api import SegmentationOutput

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 847, size=(20, 30))
    labels[0, :3] = (0, 255, 846)
    classes = [f"class {i}" for i in range(847)]
    output = SegmentationOutput(image=np.zeros((20, 30, 3), np.uint8), labels=labels, scores=None,
                                subclass=np.full((20, 30), -1, np.int32), classes=classes)
    written = output.save(tmp_path, "img")
    with Image.open(written["img.png"]) as picture:
        assert np.array_equal(np.asarray(picture).astype(np.int64), labels)
    summary = json.loads((tmp_path / "img.json").read_text())
    assert {entry["id"] for entry in summary["present"]} == set(np.unique(labels).tolist())


def test_few_classes_keep_the_palette_png(tmp_path):
    from llmseg.stage2.api import SegmentationOutput

    labels = np.arange(12).reshape(3, 4) % 3
    output = SegmentationOutput(image=np.zeros((3, 4, 3), np.uint8), labels=labels, scores=None,
                                subclass=np.full((3, 4), -1, np.int32), classes=["a", "b", "c"])
    with Image.open(output.save(tmp_path, "img")["img.png"]) as picture:
        assert picture.mode == "P" and np.array_equal(np.asarray(picture), labels)


def test_segment_ade847_writes_the_class_ids(cli, demo_data, tmp_path):
    from llmseg.stage2.api import Segmenter
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.data.readers import list_samples

    spec, data_root = demo_data
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(list_samples(spec, data_root)[0].image_path.read_bytes())
    out = tmp_path / "out"
    result = cli("segment", photo, "--dataset", "ade847", "--out", out, "--no-progress", *DEMO_FLAGS)
    assert result.exit_code == 0, result.output
    with Image.open(out / "photo.png") as picture:
        written = np.asarray(picture).astype(np.int64)
    flags = dict(zip(DEMO_FLAGS[::2], DEMO_FLAGS[1::2], strict=True))
    config = MethodConfig(backbone=flags["--backbone"], dense_mode=flags["--dense-mode"], templates=flags["--templates"],
                          short_side=int(flags["--short-side"]), crop=int(flags["--crop"]),
                          logit_scale=float(flags["--logit-scale"]), prob_thd=0.0, area_thd=0.0)
    want = Segmenter(config)(photo, dataset="ade847").labels
    assert np.array_equal(written, want)
    assert want.max() > 255, "the test needs an id a palette PNG cannot hold"
    summary = json.loads((out / "photo.json").read_text())
    assert {entry["id"] for entry in summary["present"]} == set(np.unique(want).tolist())


def test_save_pred_png_keeps_ids_past_255(tmp_path):
    from llmseg.stage2.data import load_label
    from llmseg.stage2.engine.results import save_prediction

    labels = np.array([[0, 1, 254], [255, 256, 299]])
    path = save_prediction(tmp_path, "x", labels, ".png")
    assert np.array_equal(load_label(path), labels)
