"""The seed's per-image rules on constructed inputs, and the whole method end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from llmseg.labelset import LabelSet
from llmseg.stage2.methods import build_method
from llmseg.stage2.methods.llm_supervision import (
    LLMSupervisionPending,
    class_planes,
    denormalise_uint8,
    labels_from_planes,
    minmax,
    select_candidates,
    squash_resize,
    threshold_of,
    to_network_input,
)
from llmseg.stage2.ops.refinement import closing
from llmseg.stage2.protocols import MethodConfig, SegmentationMethod

CLASSES = ["background", "cat", "dog", "car"]
LABELS = LabelSet({"background": ["background"], "cat": ["tabby", "kitten"], "dog": ["puppy", "dog"], "car": ["sedan"]})


def test_threshold_is_mean_plus_unbiased_std_of_top_k():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])
    top3 = np.array([0.9, 0.7, 0.5])
    assert threshold_of(scores, 3) == pytest.approx(top3.mean() + top3.std(ddof=1), abs=1e-6)
    every = scores.numpy()
    assert threshold_of(scores, 50) == pytest.approx(every.mean() + every.std(ddof=1), abs=1e-6)  # clamped to C


def test_walk_skips_background_and_stops_at_first_below_threshold():
    scores = torch.tensor([0.95, 0.9, 0.2, 0.8, 0.85, 0.1, 0.7])
    # order: 0 (bg, skipped), 1, 4, 3, 6 ... threshold 0.75 stops at class 6 (0.7)
    assert select_candidates(scores, 0.75, 5, skip_background=True) == [1, 4, 3]
    # without background skip class 0 counts and uses one of the 5 slots
    assert select_candidates(scores, 0.75, 5, skip_background=False) == [0, 1, 4, 3]
    # at most `candidates` walked (background included in the count)
    assert select_candidates(scores, 0.0, 3, skip_background=True) == [1, 4]
    # a class above threshold after one below is NOT taken (early stop, not a filter)
    scores = torch.tensor([0.0, 0.9, 0.5, 0.8])
    assert select_candidates(scores, 0.85, 5, skip_background=True) == [1]


def test_softmax_weighted_query_is_not_renormalised(tiny_openclip):
    backbone = tiny_openclip()
    method = build_method(MethodConfig(random_weights=True, method="llm-supervision", templates="single"), CLASSES, backbone=backbone,
                          label_set=LABELS)
    torch.manual_seed(0)
    dense = F.normalize(torch.randn(4, 4, 32), dim=-1)
    g = F.normalize(torch.randn(32), dim=0)
    sim, winner = method._query_map(dense, g, 2)  # dog: names 3, 4
    t = method.text[3:5].double()
    w = torch.softmax(t @ g.double(), dim=0)
    q = (w[:, None] * t).sum(0)
    assert abs(float(q.norm()) - 1.0) > 1e-4  # a weighted mean of unit vectors is shorter than 1
    torch.testing.assert_close(sim.double(), dense.double() @ q, atol=1e-6, rtol=0)
    per = torch.einsum("hwd,kd->khw", dense.double(), t) * w[:, None, None]
    assert torch.equal(winner, per.argmax(0) + 3)


def test_baseline_query_is_the_class_name(tiny_openclip):
    backbone = tiny_openclip()
    method = build_method(MethodConfig(random_weights=True, method="llm-supervision", templates="single", assembly="none"), CLASSES,
                          backbone=backbone, label_set=LABELS)
    dense = F.normalize(torch.randn(4, 4, 32), dim=-1)
    sim, winner = method._query_map(dense, torch.zeros(32), 3)
    torch.testing.assert_close(sim, dense @ method.class_text[3])
    assert (winner == 3).all()


def test_minmax_and_nearest_planes():
    m = torch.tensor([[1.0, 3.0], [2.0, 5.0]])
    torch.testing.assert_close(minmax(m), torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(minmax(torch.full((2, 2), 3.0)), torch.zeros(2, 2))
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:7] = True
    planes = class_planes([mask], [2], [0.4], 3, 13, 21)
    expected = F.interpolate(torch.from_numpy(mask).float()[None, None], size=(13, 21), mode="nearest")[0, 0].numpy()
    np.testing.assert_allclose(planes[2], expected * np.float32(0.4))
    assert not planes[0].any() and not planes[1].any()


def test_argmax_default_is_background():
    planes = np.zeros((3, 2, 3), np.float32)
    planes[1, 0, 0] = 0.3
    planes[2, 0, 0] = 0.5
    planes[2, 1, 1] = 0.2
    planes[1, 1, 2] = -0.1  # a negative score loses to the zero planes: background
    assert labels_from_planes(planes).tolist() == [[2, 0, 0], [0, 2, 0]]


def test_finish_applies_closing_then_resize_then_score():
    size = 32
    prob = np.zeros((size, size), np.float32)
    prob[8:24, 4:14] = 1.0
    prob[8:24, 16:28] = 1.0  # a 2-pixel gap the 7x7 closing fills
    pending = LLMSupervisionPending(
        image=np.zeros((size, size, 3), np.uint8), probs=prob[None], winners=np.full((1, 2, 2), 5, np.int32),
        classes=[1], scores=[0.3], num_classes=2, height=20, width=40, crf=False,
    )
    result = pending.finish()
    closed = closing(prob > 0.5, size=7)
    assert closed[12, 14] and not (prob > 0.5)[12, 14]
    expected = class_planes([closed], [1], [0.3], 2, 20, 40)
    np.testing.assert_array_equal(result.scores, expected)
    np.testing.assert_array_equal(result.labels, (expected[1] > 0).astype(np.int64))
    assert set(np.unique(result.subclass[result.labels == 1])) == {5}
    assert (result.subclass[result.labels == 0] == -1).all()


def test_preprocessing_matches_torchvision_and_truncating_cast():
    from torchvision import transforms

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    resized = squash_resize(image, 32)
    tv = np.asarray(transforms.Resize((32, 32))(Image.fromarray(image)))
    np.testing.assert_array_equal(resized, tv)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = to_network_input(resized, mean, std)
    ref = transforms.Normalize(mean, std)(transforms.ToTensor()(Image.fromarray(resized))).numpy()
    np.testing.assert_allclose(x, ref, atol=1e-6)
    back = denormalise_uint8(x, mean, std)
    exact = (x.transpose(1, 2, 0) * np.float32(std) + np.float32(mean)) * np.float32(255)
    np.testing.assert_array_equal(back, np.clip(exact, 0, 255).astype(np.uint8))  # truncation, not rounding
    assert (back.astype(int) - resized.astype(int)).min() >= -1 and (back <= resized).all()


def _synthetic_image():
    image = np.zeros((48, 80, 3), np.uint8)
    image[:, :40] = (220, 30, 30)
    image[:, 40:] = (30, 40, 200)
    image[10:30, 50:70] = (240, 240, 20)
    return image


@pytest.mark.parametrize("assembly", ["softmax", "none", "max", "mean", "chils"])
def test_end_to_end_on_a_synthetic_image(tiny_openclip, assembly):
    backbone = tiny_openclip(seed=7)  # a seed whose top class scores positive on this image
    config = MethodConfig(random_weights=True, method="llm-supervision", templates="single", assembly=assembly, top_cls_num=3)
    method = build_method(config, CLASSES, dataset="pascal_voc", backbone=backbone,
                          label_set=None if assembly == "none" else LABELS)
    assert isinstance(method, SegmentationMethod) and method.num_classes == 4
    image = _synthetic_image()
    (pending,) = method.forward([image])
    result = pending.finish()
    assert result.labels.shape == (48, 80) and result.labels.dtype == np.int64
    assert result.scores.shape == (4, 48, 80) and result.scores.dtype == np.float32
    assert result.subclass.shape == (48, 80) and result.subclass.dtype == np.int32
    # recompute steps 1-5 independently
    x = to_network_input(squash_resize(image, 64), backbone.mean, backbone.std)
    g, _ = backbone.encode_image(torch.from_numpy(x)[None])
    scores = (method.class_text @ g[0]).double()
    top = scores.topk(3).values
    thd = float(top.mean() + top.std())
    expected = []
    for c in scores.argsort(descending=True)[:5].tolist():
        if c == 0:
            continue
        if scores[c] < thd:
            break
        expected.append(c)
    assert result.extras["candidates"] == expected
    assert set(np.unique(result.labels)) <= {0, *expected}
    for c in range(4):
        values = np.unique(result.scores[c])
        if c in expected:
            assert set(values) <= {0.0, np.float32(scores[c])}
        else:
            assert (values == 0).all()
    fg = result.labels > 0
    if assembly == "softmax":
        assert expected and fg.any() and not fg.all()
    assert (result.subclass[~fg] == -1).all()
    if fg.any():
        owners = [0, 1, 1, 2, 2, 3] if assembly != "none" else [0, 1, 2, 3]
        assert all(owners[s] == lab for s, lab in zip(result.subclass[fg], result.labels[fg], strict=True))
    info = method.describe()
    assert info["method"] == "llm-supervision" and info["top_cls_num"] == 3 and info["assembly"] == assembly


def test_top_cls_num_defaults_and_clamp(tiny_openclip):
    backbone = tiny_openclip()
    cfg = MethodConfig(random_weights=True, method="llm-supervision", templates="single")
    assert build_method(cfg, CLASSES, dataset="pascal_voc", backbone=backbone).top_cls_num == 4  # 10 clamped to C
    many = ["background"] + [f"class {i}" for i in range(40)]
    assert build_method(cfg, many, dataset="pascal_context", backbone=backbone).top_cls_num == 30
    assert build_method(cfg, many, dataset="coco_object", backbone=backbone).top_cls_num == 10
    assert build_method(cfg.model_copy(update={"top_cls_num": 7}), many, backbone=backbone).top_cls_num == 7


def test_seed_setting_simseg_end_to_end(simseg_checkpoint, tokenizer_dir):
    path = simseg_checkpoint[0]
    config = MethodConfig(method="llm-supervision", backbone="simseg", checkpoint=str(path),
                          text_tokenizer=str(tokenizer_dir), templates="seed13")
    method = build_method(config, CLASSES, dataset="pascal_voc", label_set=LABELS)
    results = [p.finish() for p in method.forward([_synthetic_image(), _synthetic_image()[:30]])]
    assert [r.labels.shape for r in results] == [(48, 80), (30, 80)]
    for r in results:
        assert set(np.unique(r.labels)) <= {0, *r.extras["candidates"]}
        assert 0 not in r.extras["candidates"]
    info = method.describe()
    assert info["backbone"]["backbone"] == "simseg" and info["input_size"] == 288
    assert info["templates"] == "seed13" and info["assembly"] == "softmax"


def test_crf_switch_reaches_the_seed_method(tiny_openclip):
    """crf=None keeps the seed's binary CRF; crf=False (the CLI's --no-crf) thresholds p > 0.5 instead."""
    from llmseg.stage2.methods.llm_supervision import nearest_indices
    from llmseg.stage2.ops.refinement import closing

    backbone = tiny_openclip(seed=7)
    base = MethodConfig(random_weights=True, method="llm-supervision", templates="single", top_cls_num=3)
    seed = build_method(base, CLASSES, dataset="pascal_voc", backbone=backbone, label_set=LABELS)
    plain = build_method(base.model_copy(update={"crf": False}), CLASSES, dataset="pascal_voc", backbone=backbone,
                         label_set=LABELS)
    assert seed.describe()["crf"] is True and plain.describe()["crf"] is False
    (pending,) = plain.forward([_synthetic_image()])
    assert pending.crf is False and pending.classes
    result = pending.finish()
    rows, cols = nearest_indices(64, 48), nearest_indices(64, 80)
    for k, cls in enumerate(pending.classes):
        mask = closing(pending.probs[k] > 0.5, size=7)[rows[:, None], cols[None, :]]
        assert ((result.scores[cls] != 0) == mask).all()
