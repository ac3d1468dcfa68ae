"""The dense protocol: windows, resizes, thresholds, presets, and the method vs a direct computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmseg.labelset import LabelSet
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods import build_method, resolve_dense_settings
from llmseg.stage2.methods.dense import DensePending, linear_rows, resized_shape, slide_windows

CLASSES = ["background", "cat", "dog"]
LABELS = LabelSet({"background": ["background"], "cat": ["tabby", "kitten"], "dog": ["puppy", "dog"]})


def test_resized_shape_keeps_ratio_with_short_side():
    assert resized_shape(375, 500, 336) == (336, 448)
    assert resized_shape(500, 375, 336) == (448, 336)
    assert resized_shape(100, 10000, 336) == (20, 2048)  # the long side is capped at 2048
    assert resized_shape(50, 60, None) == (50, 60)


def test_slide_windows_cover_and_follow_mmseg():
    wins = slide_windows(336, 448, 224, 112)
    assert len(wins) == 2 * 3
    assert wins[0] == (0, 224, 0, 224) and wins[-1] == (112, 336, 224, 448)
    cover = np.zeros((336, 448), int)
    for y1, y2, x1, x2 in wins:
        assert y2 - y1 == 224 and x2 - x1 == 224
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1
    assert slide_windows(100, 150, 224, 112) == [(0, 100, 0, 150)]
    assert slide_windows(300, 400, 0, 0) == [(0, 300, 0, 400)]


def test_row_weights_reproduce_torch_bilinear():
    torch.manual_seed(0)
    x = torch.randn(5, 7, 9)
    for out in (3, 7, 16, 31):
        lo, hi, frac = linear_rows(7, out)
        f = frac.reshape(1, -1, 1)
        got = x[:, lo] * (1 - f) + x[:, hi] * f
        ref = F.interpolate(x[None], size=(out, 9), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)  # torch computes the scale in float32


def _pending(scores, **kw):
    c = scores.shape[0]
    winners = np.broadcast_to(np.arange(c, dtype=np.int32)[:, None, None], scores.shape).copy()
    return DensePending(scores=scores.astype(np.float32), winners=winners, **kw)


def test_prob_threshold_sets_background():
    scores = np.array([[[0.2, 0.1]], [[0.7, 0.05]], [[0.1, 0.85]]])
    r = _pending(scores, background=True, prob_thd=0.5, area_thd=None).finish()
    assert r.labels.tolist() == [[1, 2]]
    scores = np.array([[[0.2, 0.3]], [[0.45, 0.3]], [[0.35, 0.4]]])
    r = _pending(scores, background=True, prob_thd=0.42, area_thd=None).finish()
    assert r.labels.tolist() == [[1, 0]]
    r = _pending(scores, background=False, prob_thd=0.42, area_thd=None).finish()  # no background: no threshold
    assert r.labels.tolist() == [[1, 2]]


def test_area_threshold_as_sclip():
    rng = np.random.default_rng(0)
    scores = rng.random((3, 10, 10)) * 0.1
    scores[1, :, :9] = 0.9  # class 1 covers 90 pixels
    scores[2, :, 9] = 0.8  # class 2 covers 10 pixels (10% of the foreground: not more than 10%)
    scores[0, :, 9] = 0.5
    r = _pending(scores, background=True, prob_thd=0.0, area_thd=0.1).finish()
    # class 2 zeroed, its pixels go to the next best class: background (0.5) here
    assert (r.labels[:, 9] == 0).all() and (r.labels[:, :9] == 1).all()
    assert (r.scores[2] == 0).all()
    r = _pending(scores, background=True, prob_thd=0.0, area_thd=0.05).finish()
    assert (r.labels[:, 9] == 2).all()


def test_subclass_follows_final_label():
    scores = np.array([[[0.1, 0.6]], [[0.9, 0.3]]])
    winners = np.array([[[7, 8]], [[3, 4]]], np.int32)
    r = DensePending(scores=scores.astype(np.float32), winners=winners, background=True, prob_thd=None,
                     area_thd=None).finish()
    assert r.labels.tolist() == [[1, 0]] and r.subclass.tolist() == [[3, 8]]


def test_presets_per_dataset_and_overrides():
    s = resolve_dense_settings(MethodConfig(random_weights=True, preset="sclip"), "pascal_voc")
    assert (s["dense_mode"], s["short_side"], s["crop"], s["stride"], s["logit_scale"], s["prob_thd"], s["area_thd"],
            s["pamr"]) == ("sclip", 336, 224, 112, 65.0, 0.1, 0.1, False)
    assert resolve_dense_settings(MethodConfig(random_weights=True, preset="sclip"), "coco_stuff")["short_side"] == 448
    assert resolve_dense_settings(MethodConfig(random_weights=True, preset="sclip"), "pascal_context")["logit_scale"] == 50.0
    s = resolve_dense_settings(MethodConfig(random_weights=True, preset="clearclip"), "pascal_context")
    assert (s["dense_mode"], s["short_side"], s["crop"], s["stride"], s["logit_scale"], s["prob_thd"]) == (
        "clearclip", 448, 448, 224, 50.0, 0.15)
    assert resolve_dense_settings(MethodConfig(random_weights=True, preset="clearclip"), "coco_object")["prob_thd"] == 0.4
    s = resolve_dense_settings(MethodConfig(random_weights=True, preset="naclip"), "pascal_voc")
    assert (s["dense_mode"], s["crop"], s["pamr"], s["logit_scale"]) == ("naclip", 0, True, 40.0)
    assert resolve_dense_settings(MethodConfig(random_weights=True, preset="naclip"), "ade20k")["crop"] == 224
    s = resolve_dense_settings(MethodConfig(random_weights=True, preset="naclip", pamr=False, crop=336, dense_mode="clearclip"), "pascal_voc")
    assert (s["pamr"], s["crop"], s["dense_mode"]) == (False, 336, "clearclip")
    assert resolve_dense_settings(MethodConfig(random_weights=True), None)["preset"] == "sclip"


def _direct_scores(backbone, text, image, short, logit_scale, patch=16):
    """ClearCLIP's whole-image path written out: OpenCV resize of the uint8 image, (x - mean) / std with the
    constants in 0..255 units rounded to 3 decimals, the ViT on the image as it is (the conv drops the
    remainder), logits from the patch grid straight to the original size, softmax."""
    import cv2

    size = resized_shape(image.shape[0], image.shape[1], short)
    resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(resized).permute(2, 0, 1).float()[None]
    mean = torch.tensor([round(m * 255, 3) for m in backbone.mean]).reshape(1, 3, 1, 1)
    std = torch.tensor([round(s * 255, 3) for s in backbone.std]).reshape(1, 3, 1, 1)
    x = (x - mean) / std
    x = x[:, :, : size[0] // patch * patch, : size[1] // patch * patch]
    _, dense = backbone.encode_image(x)
    logits = torch.einsum("bhwd,nd->bnhw", dense, text)
    logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    return torch.softmax(logit_scale * logits, dim=0)


def test_whole_image_method_equals_direct_computation(tiny_openclip):
    backbone = tiny_openclip("clearclip", seed=2)
    config = MethodConfig(random_weights=True, preset="clearclip", short_side=72, crop=0, templates="single", prob_thd=0.0)
    method = build_method(config, CLASSES, dataset="pascal_voc", backbone=backbone, label_set=LABELS)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    (pending,) = method.forward([image])
    probs = _direct_scores(method.backbone, method.text, image, 72, 50.0)
    expected = torch.stack([probs[0], probs[1:3].max(0).values, probs[3:5].max(0).values])
    np.testing.assert_allclose(pending.scores, expected.numpy(), atol=2e-5)
    result = pending.finish()
    np.testing.assert_array_equal(result.labels, expected.argmax(0).numpy())
    assert result.scores.shape == (3, 50, 70)


def test_sliding_window_averages_overlapping_crops(tiny_openclip):
    backbone = tiny_openclip("sclip", seed=3)
    config = MethodConfig(random_weights=True, preset="sclip", short_side=64, crop=32, stride=16, templates="single", assembly="none",
                          logit_scale=10.0)
    method = build_method(config, CLASSES, dataset="pascal_voc", backbone=backbone)
    method.crop_batch_size = 3
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    ((canvas, _, x),) = method.logits_at_resized([image])
    ref = torch.zeros(3, 64, 96)
    count = torch.zeros(64, 96)
    for y1, y2, x1, x2 in slide_windows(64, 96, 32, 16):
        _, dense = method.backbone.encode_image(x[None, :, y1:y2, x1:x2])
        lg = torch.einsum("bhwd,nd->bnhw", dense, method.text)
        ref[:, y1:y2, x1:x2] += F.interpolate(lg, size=(32, 32), mode="bilinear", align_corners=False)[0]
        count[y1:y2, x1:x2] += 1
    torch.testing.assert_close(canvas, ref / count, atol=1e-5, rtol=0)
    # crop batching does not change the result
    method.crop_batch_size = 1
    torch.testing.assert_close(method.logits_at_resized([image])[0][0], canvas, atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", ["sclip", "clearclip", "naclip"])
def test_presets_run_end_to_end_with_label_set(tiny_openclip, preset):
    backbone = tiny_openclip(seed=1)
    config = MethodConfig(random_weights=True, preset=preset, short_side=64, templates="single", assembly="max")
    if preset == "clearclip":
        config = config.model_copy(update={"crop": 32, "stride": 16})
    method = build_method(config, CLASSES, dataset="pascal_voc", backbone=backbone, label_set=LABELS)
    assert method.backbone.dense_mode == preset and backbone.dense_mode == "vanilla"  # a view; the backbone is unchanged
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)]
    results = [p.finish() for p in method.forward(images)]
    for image, r in zip(images, results, strict=True):
        assert r.labels.shape == image.shape[:2] and r.scores.shape == (3, *image.shape[:2])
        owners = np.array([0, 1, 1, 2, 2])
        assert (owners[r.subclass] == r.labels).all()
    info = method.describe()
    assert info["preset"] == preset and info["dense_mode"] == preset and info["assembly"] == "max"
    json.dumps(info)


def test_multilabel_crf_in_finish(tiny_openclip):
    import pickle

    backbone = tiny_openclip(seed=1)
    config = MethodConfig(random_weights=True, preset="sclip", short_side=32, templates="single", crf=True, crf_iterations=2, area_thd=0.0)
    method = build_method(config, CLASSES, dataset="pascal_voc", backbone=backbone, label_set=LABELS)
    image = np.zeros((32, 40, 3), np.uint8)
    image[:, 20:] = 200
    (pending,) = method.forward([image])
    assert pending.needs_cpu and pending.image is not None
    pending = pickle.loads(pickle.dumps(pending))  # the engine ships it to a worker process
    from llmseg.stage2.ops.refinement import dense_crf_multilabel

    probs = pending.scores / pending.scores.sum(0, keepdims=True)
    expected = dense_crf_multilabel(image, probs.astype(np.float32), iterations=2)
    result = pending.finish()
    np.testing.assert_allclose(result.scores, expected, atol=1e-6)


def test_dense_protocol_on_the_simseg_backbone(simseg_checkpoint, tokenizer_dir):
    config = MethodConfig(backbone="simseg", checkpoint=str(simseg_checkpoint[0]), text_tokenizer=str(tokenizer_dir),
                          preset="sclip", short_side=48, crop=32, stride=16, templates="single")
    method = build_method(config, CLASSES, dataset="pascal_voc", label_set=LABELS)
    image = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    result = method.forward([image])[0].finish()
    assert result.labels.shape == (48, 64)
    info = method.describe()
    assert info["dense_mode"] is None and info["backbone"]["backbone"] == "simseg"
    with pytest.raises(ValueError, match="openclip backbones only"):
        build_method(config.model_copy(update={"dense_mode": "sclip"}), CLASSES, backbone=method.backbone)
