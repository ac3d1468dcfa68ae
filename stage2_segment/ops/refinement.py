"""Post-hoc refinement of segmentation scores: dense CRF, PAMR and morphological closing.

- `dense_crf_binary`: the seed's per-class CRF (docs/methods.md, "LLM-supervision" step 7).
- `dense_crf_multilabel`: the CRF over all classes at once (unary from a softmax).
- `closing`: the seed's 7x7 closing with OpenCV's default border rules, in numpy.
- `pamr`: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), the refinement NACLIP
  switches on; torch, batched, on the tensors' device.

The CRF and closing are CPU/numpy work meant to run inside `PendingResult.finish` (so the
runner can spread them over a process pool); pydensecrf holds the GIL, threads do not help.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pydensecrf.densecrf as dcrf

if TYPE_CHECKING:  # torch is imported lazily so CPU workers that only run the CRF stay light
    import torch

_EPS = 1e-8


def _check_image(image: np.ndarray, height: int, width: int, where: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: image must be HxWx3 RGB, got shape {image.shape}")
    if image.shape[:2] != (height, width):
        raise ValueError(f"{where}: image is {image.shape[:2]} but the probabilities are {(height, width)}")
    if image.dtype != np.uint8:
        raise ValueError(f"{where}: image must be uint8, got {image.dtype}")
    return np.ascontiguousarray(image)


def _run_crf(
    image: np.ndarray,
    unary: np.ndarray,
    *,
    iterations: int,
    gauss_sxy: float,
    gauss_compat: float,
    bilateral_sxy: float,
    bilateral_srgb: float,
    bilateral_compat: float,
) -> np.ndarray:
    """Mean-field inference; unary float32 [n, H, W] energies. Returns marginals [n, H, W]."""
    n, height, width = unary.shape
    crf = dcrf.DenseCRF2D(width, height, n)  # width first
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(n, height * width), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image, compat=bilateral_compat)
    q = crf.inference(iterations)
    return np.asarray(q, dtype=np.float32).reshape(n, height, width)


def dense_crf_binary(
    image: np.ndarray,
    prob: np.ndarray,
    *,
    iterations: int = 3,
    gauss_sxy: float = 3,
    gauss_compat: float = 3,
    bilateral_sxy: float = 40,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
) -> np.ndarray:
    """The seed's binary CRF: foreground probability map [H, W] in [0, 1] -> bool mask [H, W].

    Unary = -log([1 - p, p] + 1e-8); Gaussian (sxy 3, compat 3) and bilateral (sxy 40, srgb 13,
    compat 10) pairwise terms; 3 mean-field iterations; mask = argmax (ties go to background).
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"dense_crf_binary: prob must be [H, W], got shape {prob.shape}")
    height, width = prob.shape
    image = _check_image(image, height, width, "dense_crf_binary")
    unary = -np.log(np.stack([1.0 - prob, prob]) + _EPS).astype(np.float32)
    q = _run_crf(
        image,
        unary,
        iterations=iterations,
        gauss_sxy=gauss_sxy,
        gauss_compat=gauss_compat,
        bilateral_sxy=bilateral_sxy,
        bilateral_srgb=bilateral_srgb,
        bilateral_compat=bilateral_compat,
    )
    return np.argmax(q, axis=0).astype(bool)


def dense_crf_multilabel(
    image: np.ndarray,
    probs: np.ndarray,
    *,
    iterations: int = 10,
    gauss_sxy: float = 3,
    gauss_compat: float = 3,
    bilateral_sxy: float = 80,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
) -> np.ndarray:
    """Multi-label dense CRF: class probabilities [C, H, W] (a softmax) -> float32 marginals [C, H, W].

    Unary = -log(clip(p, 1e-8, 1)). The default kernels (Gaussian sxy 3 / compat 3; bilateral
    sxy 80 / srgb 13 / compat 10) are the values of pydensecrf's README example, the parameter
    set the CLIP-based CRF users (CaR's and TagCLIP's post-processing) start from; 10 mean-field
    iterations as in DeepLab's CRF. All are configurable.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3:
        raise ValueError(f"dense_crf_multilabel: probs must be [C, H, W], got shape {probs.shape}")
    _, height, width = probs.shape
    image = _check_image(image, height, width, "dense_crf_multilabel")
    unary = -np.log(np.clip(probs, _EPS, 1.0)).astype(np.float32)
    return _run_crf(
        image,
        unary,
        iterations=iterations,
        gauss_sxy=gauss_sxy,
        gauss_compat=gauss_compat,
        bilateral_sxy=bilateral_sxy,
        bilateral_srgb=bilateral_srgb,
        bilateral_compat=bilateral_compat,
    )


def _window_reduce(mask: np.ndarray, size: int, fill: bool, reduce) -> np.ndarray:
    """Max/min of a bool image over a size x size window anchored like OpenCV (anchor = size // 2).

    Separable (a square is a row times a column); `fill` is the value outside the image.
    """
    anchor = size // 2
    before, after = anchor, size - 1 - anchor
    out = mask
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (before, after)
        padded = np.pad(out, pad, mode="constant", constant_values=fill)
        length = out.shape[axis]
        acc = np.take(padded, range(0, length), axis=axis)
        for offset in range(1, size):
            acc = reduce(acc, np.take(padded, range(offset, offset + length), axis=axis))
        out = acc
    return out


def closing(mask: np.ndarray, size: int = 7) -> np.ndarray:
    """Morphological closing (one dilation, then one erosion) with a size x size square.

    Border rules are OpenCV's defaults: outside the image counts as background for the
    dilation and as foreground for the erosion (docs/methods.md, "LLM-supervision" step 8).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"closing: mask must be [H, W], got shape {mask.shape}")
    if size < 1:
        raise ValueError(f"closing: size must be >= 1, got {size}")
    mask = mask.astype(bool, copy=False)
    dilated = _window_reduce(mask, size, False, np.logical_or)
    return _window_reduce(dilated, size, True, np.logical_and)


# --- PAMR -------------------------------------------------------------------------------------

_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _shifted(padded: torch.Tensor, dy: int, dx: int, pad: int, height: int, width: int) -> torch.Tensor:
    """The value at (y + dy, x + dx) for every (y, x), read from a tensor padded by `pad`."""
    return padded[..., pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def pamr(
    image: torch.Tensor,
    masks: torch.Tensor,
    *,
    iterations: int = 10,
    dilations: Sequence[int] = (8, 16),
) -> torch.Tensor:
    """Pixel-adaptive mask refinement: masks [B, C, h, w] refined along image [B, 3, H, W] -> [B, C, H, W].

    For each pixel and each dilation d, the 8 neighbours at offsets d * {-1, 0, 1}^2 (replicate
    padding) get affinity -|I(p) - I(q)| / (1e-8 + 0.1 * std), where std is the (unbiased) standard
    deviation of the colour over the 3x3 neighbourhoods (centre included) of all dilations, per
    channel; affinities are averaged over colour channels and soft-maxed over all neighbours.
    Each iteration replaces a mask value by the affinity-weighted mean of its neighbours' values.
    Masks of another size are first resized bilinearly (align_corners=True), as PAMR does.
    Runs under no_grad on the tensors' device; the result has the masks' dtype.
    """
    # lazy import: start-up time (CPU workers that only run the CRF or the closing stay torch-free)
    import torch
    import torch.nn.functional as F

    if image.ndim != 4 or masks.ndim != 4:
        raise ValueError(f"pamr: image and masks must be 4-D, got {tuple(image.shape)} and {tuple(masks.shape)}")
    if image.shape[0] != masks.shape[0]:
        raise ValueError(f"pamr: batch sizes differ: image {image.shape[0]}, masks {masks.shape[0]}")
    out_dtype = masks.dtype
    work = torch.float64 if torch.float64 in (image.dtype, masks.dtype) else torch.float32
    with torch.no_grad():
        x = image.to(work)
        m = masks.to(device=x.device, dtype=work)
        height, width = x.shape[-2:]
        if m.shape[-2:] != (height, width):
            m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=True)
        dilations = [int(d) for d in dilations]
        pad = max(dilations)
        xp = F.pad(x, [pad] * 4, mode="replicate")
        # colour std over the 3x3 neighbourhoods (centre included) of every dilation
        window = [_shifted(xp, d * dy, d * dx, pad, height, width) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        std = torch.stack(window, dim=2).std(dim=2)  # [B, 3, H, W]
        del window
        denom = 1e-8 + 0.1 * std
        offsets = [(d * dy, d * dx) for d in dilations for dy, dx in _NEIGHBOURS]
        logits = torch.stack(
            [(-(x - _shifted(xp, oy, ox, pad, height, width)).abs() / denom).mean(dim=1) for oy, ox in offsets],
            dim=1,
        )  # [B, P, H, W]
        weights = torch.softmax(logits, dim=1)
        for _ in range(iterations):
            mp = F.pad(m, [pad] * 4, mode="replicate")
            new = torch.zeros_like(m)
            for k, (oy, ox) in enumerate(offsets):
                new.add_(_shifted(mp, oy, ox, pad, height, width) * weights[:, k : k + 1])
            m = new
    return m.to(out_dtype)
