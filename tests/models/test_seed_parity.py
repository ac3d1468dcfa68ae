"""`llm-supervision` against the seed's released evaluation loop, rebuilt here from its description.

The reference below follows the released `seg_evaluation.py` step by step with the libraries it
calls (torchvision transforms, torch.topk, pydensecrf, cv2.dilate/erode, cv2.resize INTER_NEAREST),
written independently of llmseg's own helpers; only the backbone and the text embeddings are shared
(those are tested against direct forwards in test_simseg.py and test_text.py).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from llmseg.labelset import LabelSet
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods import build_method
from llmseg.stage2.methods.common import nearest_indices, resize_nearest
from llmseg.stage2.methods.llm_supervision import class_planes, select_candidates, threshold_of

CLASSES = ["background", "cat", "dog", "car", "sky", "grass", "truck", "cloud"]
LABELS = LabelSet({
    "background": ["background"],
    "cat": ["tabby", "kitten", "red cat"],
    "dog": ["puppy", "dog", "blue dog"],
    "car": ["sedan", "red car"],
    "sky": ["blue sky", "bright sky"],
    "grass": ["lawn", "grass"],
    "truck": ["truck", "red truck"],
    "cloud": ["cloud", "white cloud"],
})


def _cv2_index(in_size: int, out_size: int, axis: int) -> np.ndarray:
    """The source index cv2.resize(INTER_NEAREST) reads for each output position along one axis.

    Indices above 255 do not fit one uint8 image: resize a low-byte and a high-byte image and join them.
    """
    index = np.arange(in_size)
    shape = (in_size, 2) if axis == 0 else (2, in_size)
    dsize = (2, out_size) if axis == 0 else (out_size, 2)
    parts = []
    for byte in (index % 256, index // 256):
        image = np.broadcast_to(byte.astype(np.uint8).reshape((-1, 1) if axis == 0 else (1, -1)), shape).copy()
        out = cv2.resize(image, dsize, interpolation=cv2.INTER_NEAREST)
        parts.append((out[:, 0] if axis == 0 else out[0]).astype(np.int64))
    return parts[0] + 256 * parts[1]


@pytest.mark.parametrize("axis", [0, 1])
def test_nearest_indices_equal_opencv_for_every_size_up_to_1024(axis):
    mismatches = [n for n in range(1, 1025) if not np.array_equal(nearest_indices(288, n), _cv2_index(288, n, axis))]
    assert mismatches == []
    # the sizes the issue names are among those where floor(i * in / out) reads another pixel: the test has teeth
    torch_rule = {n for n in range(1, 1025)
                  if not np.array_equal(np.minimum(np.arange(n) * 288 // n, 287), nearest_indices(288, n))}
    assert {334, 448, 640} <= torch_rule


@pytest.mark.parametrize("size", [(500, 334), (300, 448), (427, 640), (375, 500), (17, 1023)])
def test_mask_resize_equals_cv2_on_a_mask(size):
    height, width = size
    rng = np.random.default_rng(height * width)
    mask = (rng.random((288, 288)) > 0.5).astype(np.uint8) * 255
    expected = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(resize_nearest(mask, height, width), expected)
    plane = class_planes([mask > 0], [1], [0.37], 2, height, width)[1]
    np.testing.assert_array_equal(plane, (expected > 0).astype(np.float32) * np.float32(0.37))


def test_nearest_indices_rejects_empty_sizes():
    with pytest.raises(ValueError, match="sizes"):
        nearest_indices(288, 0)


@pytest.mark.parametrize("k", [3, 5, 8, 10, 21])
def test_tied_candidates_follow_torch_topk(k):
    scores = torch.zeros(21)
    scores[[3, 7, 12, 15, 16]] = 1.0
    scores[[2, 9]] = 0.5
    walked = select_candidates(scores, float("-inf"), 5, skip_background=False, top_cls_num=k)
    assert walked == scores.topk(k).indices[:5].tolist()
    with_bg = select_candidates(scores, float("-inf"), 5, skip_background=True, top_cls_num=k)
    assert with_bg == [i for i in scores.topk(k).indices[:5].tolist() if i != 0]


def test_walk_is_never_longer_than_top_cls_num():
    scores = torch.tensor([0.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    # top_cls_num 1: the unbiased std of one value is NaN, so nothing stops the walk, which has one entry
    with pytest.warns(UserWarning, match="degrees of freedom"):
        threshold = threshold_of(scores, 1)
    assert threshold != threshold
    assert select_candidates(scores, threshold, 5, True, top_cls_num=1) == [1]
    assert select_candidates(scores, float("-inf"), 5, True, top_cls_num=3) == [1, 2, 3]
    assert select_candidates(scores, float("-inf"), 5, True) == [1, 2, 3, 4, 5]


# --- the whole released loop ------------------------------------------------------------------------


def _seed_crf(image: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """The released two-label CRF, written out with pydensecrf."""
    import pydensecrf.densecrf as dcrf

    h, w = prob.shape
    probs = np.append(1 - prob[None], prob[None], axis=0)
    unary = np.ascontiguousarray((-np.log(probs + 1e-8)).reshape(2, -1)).astype(np.float32)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=40, srgb=13, rgbim=np.ascontiguousarray(image), compat=10)
    return np.argmax(np.array(crf.inference(3)), axis=0).reshape(h, w)


def seed_loop(method, image: np.ndarray, top_cls_num: int) -> tuple[np.ndarray, list[int]]:
    """One image through the released loop: labels [H, W] and the classes that got a mask."""
    from torchvision import transforms

    backbone = method.backbone
    mean, std = backbone.mean, backbone.std
    pipeline = transforms.Compose([transforms.Resize((288, 288)), transforms.ToTensor(), transforms.Normalize(mean, std)])
    x = pipeline(Image.fromarray(image))[None]
    pooled, dense = backbone.encode_image(x)
    g = pooled[0]
    f = dense[0].reshape(-1, dense.shape[-1])
    raw = (((x * torch.tensor(std).view(1, 3, 1, 1)) + torch.tensor(mean).view(1, 3, 1, 1)) * 255).type(torch.uint8)
    raw = raw.permute(0, 2, 3, 1).numpy()[0]
    scores = torch.sum(g[None] * method.class_text, dim=1)
    top_scores, top_index = scores.topk(top_cls_num)
    threshold = top_scores.mean() + 1.0 * top_scores.std()
    height, width = image.shape[:2]
    pred = np.zeros((len(CLASSES), height, width))
    taken = []
    for index in top_index[:5].tolist():
        if index in (0, 255):
            continue
        subs = method.text[method.names.slice_of(index)]
        weights = torch.softmax(torch.sum(g[None] * subs, dim=1), dim=0)
        query = torch.mm(weights.view(1, -1), subs)
        grid = (f @ query[0][:, None]).reshape(18, 18)
        up = F.interpolate(grid[None, None], scale_factor=16, mode="nearest")[0, 0].numpy()
        score = float(scores[index])
        if score < threshold:
            break
        prob = (up - up.min()) / (up.max() - up.min())
        mask = (_seed_crf(raw, prob) * 255).astype(np.uint8)
        kernel = np.ones((7, 7), np.uint8)
        mask = cv2.erode(cv2.dilate(mask, kernel), kernel)
        mask = cv2.resize(mask, dsize=(width, height), interpolation=cv2.INTER_NEAREST)
        pred[index] = mask * score
        taken.append(index)
    return pred.argmax(0), taken


def _photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random colour regions (bicubic-upsampled noise) with a few hard edges: a CRF has work to do."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    image = np.asarray(low).copy()
    image[height // 3 : 2 * height // 3, width // 4 : width // 2] = rng.integers(0, 256, 3)
    return image


@pytest.mark.parametrize("top_cls_num", [5, 8])
def test_method_equals_the_released_loop_pixel_for_pixel(simseg_state_builder, tokenizer_dir, tmp_path, top_cls_num):
    vocab = len((tokenizer_dir / "vocab.txt").read_text().split())
    state, _, _ = simseg_state_builder(vocab, seed=3)  # random weights whose top classes are not background here
    torch.save({"state_dict": state}, tmp_path / "simseg.pth")
    config = MethodConfig(method="llm-supervision", backbone="simseg", checkpoint=str(tmp_path / "simseg.pth"),
                          text_tokenizer=str(tokenizer_dir), templates="seed13", top_cls_num=top_cls_num)
    method = build_method(config, CLASSES, label_set=LABELS)
    sizes = [(500, 334), (300, 448), (427, 640), (375, 500), (288, 288), (333, 500)]
    images = [_photo_like(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    masked = 0
    for image, pending in zip(images, method.forward(images), strict=True):
        result = pending.finish()
        labels, taken = seed_loop(method, image, top_cls_num)
        assert result.extras["candidates"] == taken
        np.testing.assert_array_equal(result.labels, labels)
        masked += int((labels > 0).any())
    assert masked >= 2  # enough images where some class got a mask for the comparison to mean something
