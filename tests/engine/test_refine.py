"""CRF wrappers vs direct pydensecrf calls, closing vs a loop definition, PAMR vs a float64 loop."""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
import torch

from llmseg.stage2.ops.refinement import closing, dense_crf_binary, dense_crf_multilabel, pamr


def _blob_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (200, 40, 30)
    image[:, w // 2 :] = (20, 60, 210)
    noise = rng.integers(-20, 21, size=image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def _direct_crf(image, unary, iterations, g_sxy, g_compat, b_sxy, b_srgb, b_compat):
    n, h, w = unary.shape
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(n, -1).astype(np.float32)))
    d.addPairwiseGaussian(sxy=g_sxy, compat=g_compat)
    d.addPairwiseBilateral(sxy=b_sxy, srgb=b_srgb, rgbim=np.ascontiguousarray(image), compat=b_compat)
    return np.array(d.inference(iterations)).reshape(n, h, w)


def test_dense_crf_binary_matches_direct_pydensecrf():
    rng = np.random.default_rng(0)
    h, w = 24, 37  # non-square: catches a width/height swap
    image = _blob_image(rng, h, w)
    prob = np.clip(np.linspace(0, 1, w)[None, :] + rng.normal(0, 0.3, (h, w)), 0, 1).astype(np.float32)
    got = dense_crf_binary(image, prob)
    unary = -np.log(np.stack([1 - prob, prob]) + 1e-8)
    want = _direct_crf(image, unary, 3, 3, 3, 40, 13, 10).argmax(0).astype(bool)
    assert got.dtype == bool and got.shape == (h, w)
    np.testing.assert_array_equal(got, want)
    # the CRF actually smooths: the noisy threshold has more disagreement with the colour split
    assert (got != (prob > 0.5)).any()
    # other parameters are passed through
    got5 = dense_crf_binary(image, prob, iterations=5, bilateral_sxy=10, bilateral_srgb=5, bilateral_compat=3)
    want5 = _direct_crf(image, unary, 5, 3, 3, 10, 5, 3).argmax(0).astype(bool)
    np.testing.assert_array_equal(got5, want5)


def test_dense_crf_multilabel_matches_direct_pydensecrf():
    rng = np.random.default_rng(1)
    h, w, c = 20, 29, 4
    image = _blob_image(rng, h, w)
    logits = rng.normal(size=(c, h, w))
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    probs[2, :5, :5] = 0.0  # exact zeros must be clipped, not -inf
    got = dense_crf_multilabel(image, probs)
    unary = -np.log(np.clip(probs, 1e-8, 1.0))
    want = _direct_crf(image, unary, 10, 3, 3, 80, 13, 10)
    assert got.dtype == np.float32 and got.shape == (c, h, w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-4)
    got2 = dense_crf_multilabel(image, probs, iterations=2, gauss_sxy=1, gauss_compat=5, bilateral_compat=4)
    np.testing.assert_allclose(got2, _direct_crf(image, unary, 2, 1, 5, 80, 13, 4), rtol=1e-5, atol=1e-6)


def test_crf_rejects_bad_shapes():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="dense_crf_binary"):
        dense_crf_binary(image, np.zeros((8, 9)))
    with pytest.raises(ValueError, match="uint8"):
        dense_crf_multilabel(image.astype(np.float32), np.ones((2, 8, 8)) / 2)


def _closing_direct(mask: np.ndarray, size: int) -> np.ndarray:
    """Textbook definition with explicit loops; outside = 0 for the dilation, 1 for the erosion."""
    h, w = mask.shape
    a = size // 2
    offsets = range(-a, size - a)

    def get(m, y, x, outside):
        return m[y, x] if 0 <= y < h and 0 <= x < w else outside

    dil = np.zeros_like(mask, dtype=bool)
    for y in range(h):
        for x in range(w):
            dil[y, x] = any(get(mask, y + dy, x + dx, False) for dy in offsets for dx in offsets)
    ero = np.zeros_like(mask, dtype=bool)
    for y in range(h):
        for x in range(w):
            ero[y, x] = all(get(dil, y + dy, x + dx, True) for dy in offsets for dx in offsets)
    return ero


@pytest.mark.parametrize("size", [7, 3, 4, 1])
def test_closing_matches_direct_definition(size):
    rng = np.random.default_rng(size)
    for density in (0.05, 0.3, 0.7):
        mask = rng.random((17, 23)) < density
        np.testing.assert_array_equal(closing(mask, size), _closing_direct(mask, size))


def test_closing_border_rules():
    # a foreground region touching the border stays touching it (erosion treats outside as foreground)
    mask = np.zeros((20, 20), bool)
    mask[:, :3] = True
    out = closing(mask)
    assert out[:, :3].all() and not out[:, 10:].any()
    # a 1-pixel gap between two blobs gets closed
    mask = np.zeros((20, 20), bool)
    mask[5:15, 2:9] = True
    mask[5:15, 10:17] = True
    assert closing(mask)[5:15, 9].all()
    assert not closing(np.zeros((5, 5), bool)).any()


def _pamr_direct(image: np.ndarray, masks: np.ndarray, iterations: int, dilations) -> np.ndarray:
    """Per-pixel float64 loops of the PAMR definition (replicate borders = clamped coordinates)."""
    b, k, h, w = image.shape
    c = masks.shape[1]

    def at(arr, y, x):
        return arr[..., min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    neigh = [(d * dy, d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    full = [(d * dy, d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    weights = np.zeros((b, len(neigh), h, w))
    for n in range(b):
        for y in range(h):
            for x in range(w):
                vals = np.array([at(image[n], y + oy, x + ox) for oy, ox in full])  # [P, K]
                std = vals.std(axis=0, ddof=1)
                aff = np.array([(-np.abs(image[n, :, y, x] - at(image[n], y + oy, x + ox)) / (1e-8 + 0.1 * std)).mean() for oy, ox in neigh])
                e = np.exp(aff - aff.max())
                weights[n, :, y, x] = e / e.sum()
    m = masks.astype(np.float64)
    for _ in range(iterations):
        new = np.zeros_like(m)
        for n in range(b):
            for y in range(h):
                for x in range(w):
                    for j, (oy, ox) in enumerate(neigh):
                        new[n, :, y, x] += weights[n, j, y, x] * at(m[n], y + oy, x + ox)
        m = new
    assert m.shape == (b, c, h, w)
    return m


def test_pamr_matches_direct_loops():
    rng = np.random.default_rng(3)
    b, c, h, w = 2, 3, 7, 9
    image = rng.random((b, 3, h, w))
    image[:, :, :, 5:] += 1.0  # an edge PAMR should respect
    masks = rng.random((b, c, h, w))
    want = _pamr_direct(image, masks, iterations=3, dilations=(1, 2))
    got = pamr(torch.from_numpy(image), torch.from_numpy(masks), iterations=3, dilations=(1, 2))
    assert got.dtype == torch.float64 and got.shape == (b, c, h, w)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    # float32 inputs: same numbers to float precision, dtype kept
    got32 = pamr(torch.from_numpy(image).float(), torch.from_numpy(masks).float(), iterations=3, dilations=(1, 2))
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), want, rtol=1e-4, atol=1e-5)


def test_pamr_default_dilations_larger_than_image_and_resize():
    rng = np.random.default_rng(4)
    image = rng.random((1, 3, 6, 5))
    masks = rng.random((1, 2, 6, 5))
    want = _pamr_direct(image, masks, iterations=2, dilations=(8, 16))
    got = pamr(torch.from_numpy(image), torch.from_numpy(masks), iterations=2)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    # masks at a lower resolution are resized to the image first
    small = torch.rand(1, 2, 3, 3, dtype=torch.float64)
    out = pamr(torch.from_numpy(image), small, iterations=1)
    assert out.shape == (1, 2, 6, 5)
    up = torch.nn.functional.interpolate(small, size=(6, 5), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(out.numpy(), _pamr_direct(image, up.numpy(), 1, (8, 16)), rtol=1e-10)
