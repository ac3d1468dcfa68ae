"""The image side of the dense protocol: one image and some text queries -> per-query cosine logits.

The steps (docs/methods.md, "The dense protocol"): resize so the short side is S (mmseg's Resize,
preprocess.py), normalise as SegDataPreProcessor, slide a crop x crop window with the given stride
(crop 0: the whole image), run the backbone once per window (windows of one shape batched, across
images), per-query cosine logits of each window upsampled bilinearly to the window and averaged
where windows overlap, then bilinear resize to the original size (optionally PAMR there).

Where the peers' released code differs, the difference is data in the preset (ProtocolRules): a
window whose side is not a multiple of the patch is either zero-padded about its centre and the
logits cut back (ClearCLIP's windows: `pad`) or given to the ViT as it is, the conv dropping the
remainder and the grid's logits stretched over the whole window (SCLIP, NACLIP and every
whole-image path: `truncate`); the whole-image logits go to the resized size and then to the
original (NACLIP: `resized`) or straight to the original (SCLIP/ClearCLIP: `original`).

These are the shared inner steps of two callers: `methods.dense.dense_logits` (the public step,
every query at once, [Q, H, W]) and `DenseMethod` (the text side in class groups and row bands,
so thousands of names never need [names, H, W] at once). Both go through the same functions here,
so they give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError

from llmseg.errors import ConfigError
from llmseg.stage2.ops.preprocess import (
    NormalizeRule,
    ResizeRule,
    normalize,
    pixel_stats,
    resize_uint8,
    resized_shape,
)
from llmseg.stage2.ops.refinement import pamr

__all__ = ["DenseProtocol", "Encoded", "ProtocolRules", "band_rows", "encode_images", "full_logits", "linear_rows",
           "resize_plan", "slide_windows", "window_logits"]


def slide_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of mmseg's slide inference; crop <= 0 = one window over the whole image."""
    if crop <= 0:
        return [(0, height, 0, width)]
    if stride <= 0:
        raise ValueError(f"dense: stride must be positive, got {stride}")
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y2 = min(r * stride + crop, height)
            x2 = min(c * stride + crop, width)
            windows.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return windows


def linear_rows(in_size: int, out_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source rows and weights of torch's bilinear resize (align_corners=False, size given) along one axis."""
    scale = in_size / out_size
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = torch.where(lo < in_size - 1, lo + 1, lo)
    frac = (src - lo).to(torch.float32)
    return lo.to(device), hi.to(device), frac.to(device)


class ProtocolRules(BaseModel):
    """The preset keys that say how a peer's released code does each step (defaults: mmseg's)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    resize: ResizeRule = ResizeRule()
    normalize: NormalizeRule = NormalizeRule()
    crop_remainder: Literal["pad", "truncate"] = "pad"
    whole_remainder: Literal["pad", "truncate"] = "pad"
    whole_upsample: Literal["resized", "original"] = "resized"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ProtocolRules:
        try:
            rules = cls.model_validate({k: v for k, v in settings.items() if k in cls.model_fields and v is not None})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"preset '{settings.get('preset')}': {problems}") from None
        if rules.whole_upsample == "original" and rules.whole_remainder != "truncate":
            raise ConfigError(f"preset '{settings.get('preset')}': whole_upsample 'original' needs whole_remainder 'truncate'")
        return rules


@dataclass
class DenseProtocol:
    """One dense configuration's image-side settings: the resolved preset numbers (short_side, crop, stride,
    pamr; `methods.resolve_dense_settings`), its rules and the 0..255 normalisation on the backbone's device.

    `settings` is read at each call (DenseMethod hands its own dict), so a change to it acts at once.
    """

    settings: Mapping[str, Any]
    rules: ProtocolRules
    mean: torch.Tensor  # [3, 1, 1]
    std: torch.Tensor  # [3, 1, 1]

    @classmethod
    def of(cls, backbone, settings: Mapping[str, Any]) -> DenseProtocol:
        rules = ProtocolRules.from_settings(settings)
        mean255, std255 = pixel_stats(tuple(backbone.mean), tuple(backbone.std), rules.normalize)
        device = backbone.device
        mean = torch.tensor(mean255, dtype=torch.float32, device=device).reshape(3, 1, 1)
        std = torch.tensor(std255, dtype=torch.float32, device=device).reshape(3, 1, 1)
        return cls(settings=settings, rules=rules, mean=mean, std=std)

    def prepare(self, image: np.ndarray, device) -> torch.Tensor:
        """uint8 HxWx3 -> normalised [3, h, w] at the protocol's short side (mmseg's Resize, then SegDataPreProcessor)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"dense: images must be uint8 HxWx3, got {image.dtype} {image.shape}")
        size = resized_shape(image.shape[0], image.shape[1], self.settings.get("short_side"))
        return normalize(resize_uint8(image, size, self.rules.resize), self.mean, self.std, device)

    def job(self, patch: int, i: int, window: tuple[int, int, int, int], whole: bool, original: tuple[int, int]) -> dict:
        """How one window goes through the backbone: the slice fed, its zero padding, the logits' size and
        offset, and where they go on the canvas."""
        y1, y2, x1, x2 = window
        ch, cw = y2 - y1, x2 - x1
        remainder = self.rules.whole_remainder if whole else self.rules.crop_remainder
        if remainder == "truncate":
            fh, fw = ch - ch % patch, cw - cw % patch
            if not fh or not fw:
                raise ValueError(f"dense: a {ch}x{cw} window is smaller than the patch size {patch}")
            out = original if whole and self.rules.whole_upsample == "original" else (ch, cw)
            place = (0, out[0], 0, out[1]) if out != (ch, cw) else window
            return {"i": i, "place": place, "feed": (y1, y1 + fh, x1, x1 + fw), "pad": (0, 0, 0, 0), "out": out,
                    "offset": (0, 0)}
        ph, pw = (-ch) % patch, (-cw) % patch
        pt, pl = ph // 2, pw // 2
        return {"i": i, "place": window, "feed": window, "pad": (pt, ph - pt, pl, pw - pl), "out": (ch + ph, cw + pw),
                "offset": (pt, pl)}


@dataclass
class Encoded:
    """One image after the image encoder: the input, where its logits go, and the windows' patch features."""

    x: torch.Tensor  # normalised input [3, h, w]
    size: tuple[int, int]  # the logits canvas: the resized size, or the original (whole_upsample 'original')
    count: torch.Tensor  # [1, *size] windows covering each pixel
    batches: list[tuple[list[dict], torch.Tensor, tuple[int, int]]] = field(default_factory=list)  # jobs, [b, gh, gw, D], logits size
    pooled: list[torch.Tensor] = field(default_factory=list)
    global_vec: torch.Tensor | None = None  # the mean of the windows' pooled vectors, L2-normalised


def _run_chunk(backbone, encoded: list[Encoded], chunk: list[dict], out: tuple[int, int]) -> None:
    """One batch of same-shape windows through the backbone; features, counts and pooled vectors kept per image."""
    crops = []
    for job in chunk:
        y1, y2, x1, x2 = job["feed"]
        pt, pb, pl, pr = job["pad"]
        c = encoded[job["i"]].x[:, y1:y2, x1:x2]
        crops.append(F.pad(c, (pl, pr, pt, pb)) if pl + pr + pt + pb else c)
    pooled, dense = backbone.encode_image(torch.stack(crops))
    k = 0
    for i, same in groupby(chunk, key=lambda job: job["i"]):  # jobs are in image order within a chunk
        part = list(same)
        feats = dense if len(part) == len(chunk) else dense[k : k + len(part)]
        encoded[i].batches.append((part, feats, out))
        k += len(part)
    for k, job in enumerate(chunk):
        y1, y2, x1, x2 = job["place"]
        encoded[job["i"]].count[:, y1:y2, x1:x2] += 1
        encoded[job["i"]].pooled.append(pooled[k])


@torch.no_grad()
def encode_images(backbone, protocol: DenseProtocol, images: Sequence[np.ndarray], crop_batch_size: int = 8) -> list[Encoded]:
    """The image side, once per window: windows batched by fed shape across images, patch features kept per image."""
    crop = int(protocol.settings.get("crop") or 0)
    stride = int(protocol.settings.get("stride") or crop or 1)
    encoded, jobs = [], []
    for i, img in enumerate(images):
        x = protocol.prepare(img, backbone.device)
        h, w = x.shape[-2:]
        whole = crop <= 0
        original = tuple(img.shape[:2])
        size = original if whole and protocol.rules.whole_upsample == "original" else (h, w)
        encoded.append(Encoded(x=x, size=size, count=torch.zeros(1, *size, device=x.device)))
        for window in slide_windows(h, w, crop, stride):
            jobs.append(protocol.job(backbone.patch_size, i, window, whole, original))
    # batch the windows of one fed shape and one logits size together, in order
    groups: dict[tuple, list] = {}
    for job in jobs:
        y1, y2, x1, x2 = job["feed"]
        pt, pb, pl, pr = job["pad"]
        groups.setdefault((y2 - y1 + pt + pb, x2 - x1 + pl + pr, job["out"]), []).append(job)
    for (_fh, _fw, out), group in groups.items():
        for start in range(0, len(group), crop_batch_size):
            _run_chunk(backbone, encoded, group[start : start + crop_batch_size], out)
    for enc in encoded:
        enc.global_vec = F.normalize(torch.stack(enc.pooled).mean(dim=0), dim=-1)
    return encoded


@torch.no_grad()
def window_logits(enc: Encoded, queries: torch.Tensor) -> torch.Tensor:
    """Averaged cosine logits [len(queries), *enc.size] of these text queries: each window's, upsampled, summed."""
    canvas = torch.zeros(queries.shape[0], *enc.size, device=enc.x.device)
    for part, dense, out in enc.batches:
        logits = torch.einsum("bhwd,qd->bqhw", dense, queries)
        logits = F.interpolate(logits, size=out, mode="bilinear", align_corners=False)
        for k, job in enumerate(part):
            y1, y2, x1, x2 = job["place"]
            ot, ol = job["offset"]
            canvas[:, y1:y2, x1:x2] += logits[k, :, ot : ot + y2 - y1, ol : ol + x2 - x1]
        del logits
    canvas /= enc.count
    return canvas


def resize_plan(settings: Mapping[str, Any], canvas: torch.Tensor, image: torch.Tensor, height: int, width: int):
    """Width-resized logits (or PAMR-refined at full size) and the row weights that finish the resize band by band."""
    if settings.get("pamr"):
        full = F.interpolate(canvas[None], size=(height, width), mode="bilinear", align_corners=False)
        img = F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)
        wide = pamr(img, full)[0]  # PAMR refines each query's map on its own: groups of queries are exact
        lo = hi = torch.arange(height, device=canvas.device)
        frac = torch.zeros(height, device=canvas.device)
        return wide, lo, hi, frac
    wide = F.interpolate(canvas[None], size=(canvas.shape[1], width), mode="bilinear", align_corners=False)[0]
    return (wide, *linear_rows(canvas.shape[1], height, device=canvas.device))


def band_rows(wide: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, frac: torch.Tensor, rows: slice) -> torch.Tensor:
    """The bilinear row resize of `wide` for these output rows (torch's weights)."""
    f = frac[rows].reshape(1, -1, 1)
    return wide[:, lo[rows]] * (1 - f) + wide[:, hi[rows]] * f


@torch.no_grad()
def full_logits(protocol: DenseProtocol, enc: Encoded, queries: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[len(queries), height, width]: window logits, then the resize (and PAMR) to the original size, all rows at once."""
    wide, lo, hi, frac = resize_plan(protocol.settings, window_logits(enc, queries), enc.x, height, width)
    return band_rows(wide, lo, hi, frac, slice(0, height))
