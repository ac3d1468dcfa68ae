"""The data flow step by step (issue 22 item 5): label set -> text embeddings -> dense_logits -> assemble ->
refinement -> metric, by hand with the public functions, equals the dense method's own segment call; dense_logits
equals an independent float64 re-computation; the README's step-by-step example runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmseg.errors import ConfigError
from llmseg.labelset import LabelSet
from llmseg.stage2 import (
    DensePending,
    SegMetric,
    assemble,
    dense_logits,
    image_vector,
    image_weights,
    resolve_dense_settings,
    text_embeddings,
)
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods import build_method

cv2 = pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["background", "cat", "dog", "car"]
LABELS = LabelSet.model_validate({
    "background": ["background", "wall"],
    "cat": ["tabby cat", "kitten"],
    "dog": ["puppy"],
    "car": ["sedan", "truck", "red car"],
})
# (preset, overrides): slide windows (truncate), whole image (resized / original upsample), centre padding, PAMR, CRF
PROTOCOLS = {
    "sclip-slide": ("sclip", {"crop": 32, "stride": 16}),
    "naclip-whole": ("naclip", {"crop": 0, "pamr": False}),
    "sclip-whole-crf": ("sclip", {"crop": 0, "crf": True}),
    "clearclip-pad": ("clearclip", {"crop": 40, "stride": 20}),
    "naclip-pamr": ("naclip", {"crop": 32, "stride": 16, "pamr": True}),
}
RULES = ["none", "max", "mean", "softmax", "chils"]


@pytest.fixture(scope="module")
def backbone(tiny_openclip):
    return tiny_openclip(seed=5)


def _image(seed: int, size=(45, 70)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _by_hand(backbone, image, config, rule, dataset):
    """The flow with the public steps only: names and owners from the label set, then each step in turn."""
    names, owners = (CLASSES, list(range(len(CLASSES)))) if rule == "none" else LABELS.flat_names()
    text = text_embeddings(backbone, names, config.templates)
    logits = dense_logits(backbone, image, text, config, dataset=dataset)
    assert logits.shape == (len(names), *image.shape[:2])
    settings = resolve_dense_settings(config, dataset)
    class_sims = weights = None
    if rule == "chils":  # CHiLS also needs the class names' own logits
        class_sims = dense_logits(backbone, image, text_embeddings(backbone, CLASSES, config.templates), config, dataset=dataset)
    if rule in ("softmax", "chils"):  # image-level subclass weights from the image's global vector
        weights = image_weights(rule, text, image_vector(backbone, image, config, dataset=dataset), owners, len(CLASSES))
    scores, winners = assemble(rule, logits, owners, len(CLASSES), logit_scale=settings["logit_scale"],
                               class_sims=class_sims, weights=weights)
    return DensePending.of(scores, winners, settings, background=True, crf=bool(config.crf),
                           crf_iterations=config.crf_iterations, image=image).finish()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_steps_by_hand_equal_the_method(backbone, protocol, rule):
    preset, overrides = PROTOCOLS[protocol]
    config = MethodConfig(random_weights=True, preset=preset, short_side=56, templates="single", assembly=rule,
                          crf_iterations=3, **overrides)
    image = _image(3)
    method = build_method(config, CLASSES, dataset="pascal_voc", backbone=backbone,
                          label_set=None if rule == "none" else LABELS)
    (pending,) = method.forward([image])
    expected = pending.finish()
    got = _by_hand(backbone, image, config, rule, "pascal_voc")
    assert np.ptp(pending.scores, axis=(1, 2)).min() > 0  # class maps that vary over the image (thresholds may leave one class)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.subclass, expected.subclass)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=0, atol=1e-6)
    # and the metric step sees the same thing
    target = np.random.default_rng(9).integers(0, len(CLASSES), image.shape[:2])
    ours, theirs = SegMetric(len(CLASSES)), SegMetric(len(CLASSES))
    ours.update(got.labels, target)
    theirs.update(expected.labels, target)
    assert torch.equal(ours.confusion, theirs.confusion)


def _reference_whole(backbone, image, text, preset, short_side):
    """float64 logits of the whole-image protocol from the backbone's dense features, written out here:
    cv2 rescale of the uint8 image, the peers' 0..255 mean/std, the ViT on the patch-multiple top-left part,
    cosine logits in float64, bilinear to the resized size (naclip) or straight to the original (sclip)."""
    from llmseg.stage2.methods.presets import preset_settings

    h, w = image.shape[:2]
    scale = min(2048 / max(h, w), short_side / min(h, w))
    rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR)
    mean = torch.tensor([122.771, 116.746, 104.094]).reshape(3, 1, 1)
    std = torch.tensor([68.501, 66.632, 70.323]).reshape(3, 1, 1)
    x = (torch.from_numpy(resized).permute(2, 0, 1).float() - mean) / std
    fed = x[:, : rh // 16 * 16, : rw // 16 * 16]
    settings = preset_settings(preset, None)
    mode = settings["dense_mode"]
    view = backbone.with_mode(mode, naclip_std=settings.get("naclip_std"), pos_embed=settings["pos_embed"])
    _, dense = view.encode_image(fed[None])
    logits = torch.einsum("hwd,qd->qhw", dense[0].double(), text.double())[None]
    if preset == "naclip":  # whole_upsample 'resized': to the resized size, then to the original
        logits = F.interpolate(logits, size=(rh, rw), mode="bilinear", align_corners=False)
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("preset", ["sclip", "naclip"])
@pytest.mark.parametrize("size", [(48, 80), (70, 45)])
def test_dense_logits_equal_a_float64_recomputation(backbone, preset, size):
    config = MethodConfig(random_weights=True, preset=preset, short_side=56, crop=0, pamr=False, templates="single")
    image = _image(11, size)
    text = text_embeddings(backbone, ["cat", "dog", "sky", "grass", "red car"], "single")
    got = dense_logits(backbone, image, text, config)
    assert got.dtype == torch.float32 and got.shape == (5, *size)
    expected = _reference_whole(backbone, image, text, preset, 56)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-6)


def test_dense_logits_slide_windows_average_the_windows(backbone):
    """Sliding windows: each window's float64 logits upsampled to it, averaged where windows overlap, resized."""
    config = MethodConfig(random_weights=True, preset="sclip", short_side=64, crop=32, stride=16, templates="single")
    image = _image(4, (64, 96))  # short side already 64: no rescale
    text = text_embeddings(backbone, ["cat", "dog", "sky"], "single")
    got = dense_logits(backbone, image, text, config)
    mean = torch.tensor([122.771, 116.746, 104.094]).reshape(3, 1, 1)
    std = torch.tensor([68.501, 66.632, 70.323]).reshape(3, 1, 1)
    x = (torch.from_numpy(image).permute(2, 0, 1).float() - mean) / std
    view = backbone.with_mode("sclip", pos_embed=resolve_dense_settings(config, None)["pos_embed"])
    total = torch.zeros(3, 64, 96, dtype=torch.float64)
    count = torch.zeros(64, 96, dtype=torch.float64)
    for y in range(0, 64 - 32 + 1, 16):
        for x0 in range(0, 96 - 32 + 1, 16):
            _, dense = view.encode_image(x[None, :, y : y + 32, x0 : x0 + 32])
            logits = torch.einsum("hwd,qd->qhw", dense[0].double(), text.double())[None]
            total[:, y : y + 32, x0 : x0 + 32] += F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)[0]
            count[y : y + 32, x0 : x0 + 32] += 1
    torch.testing.assert_close(got.double(), total / count, rtol=0, atol=2e-6)


def test_dense_logits_refuses_another_method(backbone):
    config = MethodConfig(random_weights=True, method="llm-supervision", templates="single")
    with pytest.raises(ConfigError, match="dense"):
        dense_logits(backbone, _image(1), torch.zeros(2, 32), config)


# ---------------------------------------------------------------- the README example

MARKERS = ("<!-- step-by-step example: start -->", "<!-- step-by-step example: end -->")


def readme_snippet() -> str:
    """The python block between the README's step-by-step markers."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = (text.index(marker) for marker in MARKERS)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)
    assert len(blocks) == 1, "one python block between the step-by-step markers"
    return blocks[0]


def test_readme_step_by_step_example_runs_and_equals_the_segmenter(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMSEG_CACHE_DIR", str(tmp_path / "cache"))  # the demo CLIP's weights are expanded here
    namespace: dict = {}
    exec(compile(readme_snippet(), "README.md (step by step)", "exec"), namespace)
    printed = capsys.readouterr().out
    assert re.search(r"mIoU \d+\.\d", printed), printed
    from llmseg.stage2 import Segmenter

    segmenter = Segmenter(namespace["config"], backbone=namespace["backbone"])
    output = segmenter(namespace["scene"].image, classes=list(namespace["classes"]), label_set=namespace["label_set"])
    np.testing.assert_array_equal(namespace["result"].labels, output.labels)
    np.testing.assert_array_equal(namespace["result"].subclass, output.subclass)
    # the metric it printed is the metric of the Segmenter's labels
    from llmseg.stage2.demo.benchmark import label_map

    metric = SegMetric(len(namespace["classes"]))
    metric.update(output.labels, label_map(namespace["scene"]))
    assert f"mIoU {100 * metric.compute()['mIoU']:.1f}" in printed
