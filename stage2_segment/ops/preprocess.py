"""Image resize and normalisation of the dense protocol, as mmseg's test pipeline does them.

mmseg's `Resize(scale=(2048, S), keep_ratio=True)` calls mmcv.imrescale: the scale factor is
min(2048 / long side, S / short side), the new size int(side * factor + 0.5), and the uint8 image
is resized by OpenCV (cv2.resize, INTER_LINEAR by default: fixed-point, no antialiasing). The
segmentor's SegDataPreProcessor then computes (x - mean) / std in float32 with mean/std in 0..255
units (for CLIP the constants rounded to 3 decimals: 122.771, ..., 68.501, ...). Both are data
(`resize`, `normalize` in a preset file); `library: torch` keeps a torch-only bilinear path.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

LONG_SIDE_CAP = 2048

_CV2_CODES = {"nearest": "INTER_NEAREST", "bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC", "area": "INTER_AREA",
              "lanczos": "INTER_LANCZOS4"}


class ResizeRule(BaseModel):
    """`resize` in a preset: which library resizes the uint8 image, with which interpolation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    library: Literal["cv2", "torch"] = "cv2"
    interpolation: Literal["nearest", "bilinear", "bicubic", "area", "lanczos"] = "bilinear"


class NormalizeRule(BaseModel):
    """`normalize` in a preset: mean/std in 0..255 units, optionally rounded (the peers' configs use 3 decimals)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decimals: int | None = None


def resized_shape(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """mmcv's keep-ratio rescale to (LONG_SIDE_CAP, short_side): int(x * scale + 0.5)."""
    if not short_side:
        return height, width
    scale = min(LONG_SIDE_CAP / max(height, width), short_side / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_uint8(image: np.ndarray, size: tuple[int, int], rule: ResizeRule) -> np.ndarray:
    """uint8 HxWx3 -> uint8 (h, w, 3) by the rule (cv2: OpenCV's own uint8 arithmetic)."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    if rule.library == "cv2":
        return cv2.resize(np.ascontiguousarray(image), (size[1], size[0]), interpolation=getattr(cv2, _CV2_CODES[rule.interpolation]))
    if rule.interpolation not in ("nearest", "bilinear", "bicubic", "area"):
        raise ValueError(f"resize library torch has no '{rule.interpolation}' interpolation")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]
    align = False if rule.interpolation in ("bilinear", "bicubic") else None
    x = F.interpolate(x, size=size, mode=rule.interpolation, align_corners=align)[0]
    return x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def pixel_stats(mean: tuple[float, ...], std: tuple[float, ...], rule: NormalizeRule) -> tuple[list[float], list[float]]:
    """The backbone's mean/std (0..1 units) in 0..255 units, rounded as the rule says."""
    m = [v * 255.0 for v in mean]
    s = [v * 255.0 for v in std]
    if rule.decimals is not None:
        m = [round(v, rule.decimals) for v in m]
        s = [round(v, rule.decimals) for v in s]
    return m, s


def normalize(image: np.ndarray, mean255: torch.Tensor, std255: torch.Tensor, device) -> torch.Tensor:
    """uint8 HxWx3 -> float32 [3, H, W]: (x - mean) / std, as SegDataPreProcessor."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float()
    return (x - mean255) / std255
