"""`dense`: the SCLIP-family protocol (docs/methods.md, "The dense protocol") over any backbone.

Per image: resize so the short side is S (aspect kept, long side capped at 2048 as mmseg's
Resize(scale=(2048, S)) does, by OpenCV on the uint8 image), normalise as SegDataPreProcessor,
slide a crop x crop window with the given stride (batched through the backbone across images),
per-name cosine logits upsampled bilinearly to each crop and averaged where crops overlap,
bilinear resize to the original size, optional PAMR there (on the input resized likewise, as
NACLIP does), then the assembly rule with the logit scale. finish() (CPU, numpy) does the
optional multi-label CRF, area threshold, argmax and probability threshold.

Where the peers' released code differs, the difference is data in the preset (ProtocolRules):
a crop whose side is not a multiple of the patch is either zero-padded about its centre and the
logits cut back (ClearCLIP's windows: `pad`) or given to the ViT as it is, the conv dropping the
remainder rows/columns and the grid's logits stretched over the whole crop (SCLIP, NACLIP and
every whole-image path: `truncate`); the whole-image logits go to the resized size and then to the
original (NACLIP: `resized`) or straight to the original (SCLIP/ClearCLIP: `original`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError

from llmseg.errors import ConfigError

from ..assembly import assemble, group_argmax_onehot, group_softmax, rule_of
from ..interface import SegResult
from ..preprocess import (
    LONG_SIDE_CAP,
    NormalizeRule,
    ResizeRule,
    normalize,
    pixel_stats,
    resize_uint8,
    resized_shape,
)
from .common import NameTable

__all__ = ["LONG_SIDE_CAP", "DenseMethod", "DensePending", "ProtocolRules", "backbone_view_options", "resized_shape",
           "slide_windows"]

BAND_ELEMENTS = 1 << 26  # names x rows x width per assembly band (256 MB of float32)


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
    def from_settings(cls, settings: dict[str, Any]) -> ProtocolRules:
        try:
            rules = cls.model_validate({k: v for k, v in settings.items() if k in cls.model_fields and v is not None})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"preset '{settings.get('preset')}': {problems}") from None
        if rules.whole_upsample == "original" and rules.whole_remainder != "truncate":
            raise ConfigError(f"preset '{settings.get('preset')}': whole_upsample 'original' needs whole_remainder 'truncate'")
        return rules


def backbone_view_options(config, dataset: str | None) -> dict[str, Any]:
    """naclip_std and the positional-embedding rule of the config's preset (for `backbone.with_mode`)."""
    from .presets import DEFAULT_PRESET, preset_settings

    preset = config.preset or (DEFAULT_PRESET if config.method == "dense" else None)
    settings = preset_settings(preset, dataset) if preset else {}
    std = getattr(config, "naclip_std", None)
    return {"naclip_std": std if std is not None else settings.get("naclip_std"), "pos_embed": settings.get("pos_embed")}


@dataclass
class DensePending:
    """Class scores and per-class winning names at the original size; CPU post-processing left."""

    scores: np.ndarray  # [C, H, W] float32
    winners: np.ndarray  # [C, H, W] int32 flat name index
    background: bool
    prob_thd: float | None
    area_thd: float | None
    crf: bool = False
    crf_iterations: int = 10
    image: np.ndarray | None = None  # original uint8 image, only when crf
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_cpu(self) -> bool:
        return self.crf

    def finish(self) -> SegResult:
        scores = self.scores
        if self.crf:
            from ..refine import dense_crf_multilabel

            total = scores.sum(axis=0, keepdims=True)
            probs = scores / np.maximum(total, 1e-12)
            scores = dense_crf_multilabel(self.image, probs.astype(np.float32), iterations=self.crf_iterations)
        scores = np.array(scores, dtype=np.float32, copy=True)
        num_classes = scores.shape[0]
        if self.background and self.area_thd:
            pred = scores.argmax(axis=0)
            area = np.bincount(pred.ravel(), minlength=num_classes)[1:]
            keep = area > self.area_thd * area.sum()
            scores[1:] *= keep[:, None, None].astype(np.float32)
        labels = scores.argmax(axis=0).astype(np.int64)
        if self.background and self.prob_thd is not None:
            labels[scores.max(axis=0) < self.prob_thd] = 0
        subclass = np.take_along_axis(self.winners, labels[None].astype(np.int64), axis=0)[0].astype(np.int32)
        return SegResult(labels=labels, scores=scores, subclass=subclass, extras=dict(self.extras))


class DenseMethod:
    """Sliding-window dense CLIP segmentation with subclass assembly."""

    def __init__(
        self,
        backbone,
        names: NameTable,
        text: torch.Tensor,
        class_text: torch.Tensor,
        *,
        num_classes: int,
        assembly: str,
        settings: dict[str, Any],
        background: bool,
        crf: bool = False,
        crf_iterations: int = 10,
        describe_extra: dict[str, Any] | None = None,
        crop_batch_size: int = 8,
    ) -> None:
        self.backbone = backbone
        self.names = names
        self.num_classes = num_classes
        self.assembly = assembly
        self.settings = dict(settings)
        self.background = background
        self.crf = crf
        self.crf_iterations = crf_iterations
        self.crop_batch_size = crop_batch_size
        self._describe_extra = describe_extra or {}
        device = backbone.device
        self.rule = rule_of(assembly)
        queries = torch.cat([text, class_text]) if self.rule.needs_class_sims else text
        self.queries = queries.to(device)
        self.num_names = text.shape[0]
        self.text = text.to(device)
        self.rules = ProtocolRules.from_settings(self.settings)
        mean255, std255 = pixel_stats(tuple(backbone.mean), tuple(backbone.std), self.rules.normalize)
        self.mean = torch.tensor(mean255, dtype=torch.float32, device=device).reshape(3, 1, 1)
        self.std = torch.tensor(std255, dtype=torch.float32, device=device).reshape(3, 1, 1)

    # ---------------------------------------------------------------- preprocessing

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        """uint8 HxWx3 -> normalised [3, h, w] at the protocol's short side (mmseg's Resize, then SegDataPreProcessor)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"dense: images must be uint8 HxWx3, got {image.dtype} {image.shape}")
        size = resized_shape(image.shape[0], image.shape[1], self.settings.get("short_side"))
        return normalize(resize_uint8(image, size, self.rules.resize), self.mean, self.std, self.backbone.device)

    # ---------------------------------------------------------------- device work

    def _job(self, i: int, window: tuple[int, int, int, int], whole: bool, original: tuple[int, int]):
        """How one window goes through the backbone: the slice fed, its zero padding, the logits' size and
        offset, and where they go on the canvas."""
        patch = self.backbone.patch_size
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

    @torch.no_grad()
    def logits_at_resized(self, images: Sequence[np.ndarray]):
        """Per image: averaged per-query cosine logits [Q, h, w] at the resized size, global vector, input tensor.

        With whole_upsample 'original' (whole image, SCLIP/ClearCLIP) the logits are at the original size already.
        """
        crop = int(self.settings.get("crop") or 0)
        stride = int(self.settings.get("stride") or crop or 1)
        prepared = [self._prepare(img) for img in images]
        canvases, counts, globals_ = [], [], []
        jobs = []
        for i, (x, img) in enumerate(zip(prepared, images, strict=True)):
            h, w = x.shape[-2:]
            whole = crop <= 0
            original = tuple(img.shape[:2])
            size = original if whole and self.rules.whole_upsample == "original" else (h, w)
            canvases.append(torch.zeros(self.queries.shape[0], *size, device=x.device))
            counts.append(torch.zeros(1, *size, device=x.device))
            globals_.append([])
            for window in slide_windows(h, w, crop, stride):
                jobs.append(self._job(i, window, whole, original))
        # batch the windows of one fed shape and one logits size together, in order
        groups: dict[tuple, list] = {}
        for job in jobs:
            y1, y2, x1, x2 = job["feed"]
            pt, pb, pl, pr = job["pad"]
            groups.setdefault((y2 - y1 + pt + pb, x2 - x1 + pl + pr, job["out"]), []).append(job)
        for (_fh, _fw, out), group in groups.items():
            for start in range(0, len(group), self.crop_batch_size):
                chunk = group[start : start + self.crop_batch_size]
                crops = []
                for job in chunk:
                    y1, y2, x1, x2 = job["feed"]
                    pt, pb, pl, pr = job["pad"]
                    c = prepared[job["i"]][:, y1:y2, x1:x2]
                    crops.append(F.pad(c, (pl, pr, pt, pb)) if pl + pr + pt + pb else c)
                pooled, dense = self.backbone.encode_image(torch.stack(crops))
                logits = torch.einsum("bhwd,qd->bqhw", dense, self.queries)
                logits = F.interpolate(logits, size=out, mode="bilinear", align_corners=False)
                for k, job in enumerate(chunk):
                    i = job["i"]
                    y1, y2, x1, x2 = job["place"]
                    ot, ol = job["offset"]
                    canvases[i][:, y1:y2, x1:x2] += logits[k, :, ot : ot + y2 - y1, ol : ol + x2 - x1]
                    counts[i][:, y1:y2, x1:x2] += 1
                    globals_[i].append(pooled[k])
        out_list = []
        for canvas, count, g, x in zip(canvases, counts, globals_, prepared, strict=True):
            canvas /= count
            out_list.append((canvas, F.normalize(torch.stack(g).mean(dim=0), dim=-1), x))
        return out_list

    @torch.no_grad()
    def class_scores(self, canvas: torch.Tensor, global_vec: torch.Tensor, image: torch.Tensor, height: int, width: int):
        """Bilinear resize to (height, width) (+ PAMR there, as NACLIP does), assembly in row bands.

        Returns scores, winners [C, H, W]. Without PAMR the row resize is done band by band (same
        weights as torch's bilinear) so that names x H x W never has to fit in memory at once.
        """
        n = self.num_names
        weights = None
        if self.rule.image_weights is not None:
            # image-level subclass weights (the seed's group softmax, or CHiLS's best subclass); the
            # image vector is the mean of the crops' global vectors
            weigh = group_softmax if self.rule.image_weights == "softmax" else group_argmax_onehot
            weights = weigh(self.text @ global_vec, self.names.owners, self.num_classes)
        if self.settings.get("pamr"):
            from ..refine import pamr

            full = F.interpolate(canvas[None], size=(height, width), mode="bilinear", align_corners=False)
            img = F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)
            wide = pamr(img, full)[0]
            lo = hi = torch.arange(height, device=canvas.device)
            frac = torch.zeros(height, device=canvas.device)
        else:
            wide = F.interpolate(canvas[None], size=(canvas.shape[1], width), mode="bilinear", align_corners=False)[0]
            lo, hi, frac = linear_rows(canvas.shape[1], height, device=canvas.device)
        band = max(1, BAND_ELEMENTS // max(1, wide.shape[0] * width))
        scores = torch.empty(self.num_classes, height, width, device=canvas.device)
        winners = torch.empty(self.num_classes, height, width, dtype=torch.int32, device=canvas.device)
        for start in range(0, height, band):
            rows = slice(start, min(start + band, height))
            f = frac[rows].reshape(1, -1, 1)
            sims = wide[:, lo[rows]] * (1 - f) + wide[:, hi[rows]] * f
            s, win = assemble(
                self.assembly,
                sims[:n],
                self.names.owners,
                self.num_classes,
                logit_scale=float(self.settings["logit_scale"]),
                class_sims=sims[n:] if self.rule.needs_class_sims else None,
                weights=weights,
            )
            scores[:, rows] = s
            winners[:, rows] = win.to(torch.int32)
        return scores, winners

    def forward(self, images: Sequence[np.ndarray]) -> list[DensePending]:
        results = []
        for image, (canvas, g, x) in zip(images, self.logits_at_resized(images), strict=True):
            scores, winners = self.class_scores(canvas, g, x, image.shape[0], image.shape[1])
            results.append(
                DensePending(
                    scores=scores.float().cpu().numpy(),
                    winners=winners.cpu().numpy(),
                    background=self.background,
                    prob_thd=self.settings.get("prob_thd"),
                    area_thd=self.settings.get("area_thd"),
                    crf=self.crf,
                    crf_iterations=self.crf_iterations,
                    image=np.ascontiguousarray(image) if self.crf else None,
                )
            )
        return results

    def describe(self) -> dict[str, Any]:
        return {
            "method": "dense",
            "assembly": self.assembly,
            **{k: self.settings.get(k) for k in self.settings},
            "background": self.background,
            "crf": self.crf,
            "crf_iterations": self.crf_iterations if self.crf else None,
            "num_classes": self.num_classes,
            "num_names": self.num_names,
            "crop_batch_size": self.crop_batch_size,
            "backbone": self.backbone.describe(),
            **self._describe_extra,
        }
