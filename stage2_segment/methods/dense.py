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

Memory: the image encoder runs once per crop and its patch features are kept (small); the text
side (logits, crop accumulation, resizes, PAMR, assembly) runs one group of whole classes at a
time, each group at most GROUP_ELEMENTS per-query elements, so thousands of names (ADE-847 x 5
subclasses) cost the group's buffers plus the [C, H, W] results, not [names, H, W]. Softmaxes
across groups are carried as log-sum-exp terms (assembly.AssemblyRule.group_terms); when every
name fits one group, or the rule has no group form, it is the plain all-names computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError

from llmseg.errors import ConfigError

from ..assembly import (
    assemble,
    assemble_group,
    class_slices,
    finish_groups,
    group_argmax_onehot,
    group_softmax,
    has_group_form,
    rule_of,
)
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

__all__ = ["LONG_SIDE_CAP", "DenseMethod", "DensePending", "ProtocolRules", "QueryGroup", "argmax_classes",
           "backbone_view_options", "query_groups", "resized_shape", "slide_windows"]

BAND_ELEMENTS = 1 << 26  # names x rows x width per assembly band (256 MB of float32)
# queries x per-query elements of one text-query group: its canvas, one crop batch's logits, the
# row-resized (or PAMR) maps; 128 MB of float32. Band temporaries are held to about the same.
GROUP_ELEMENTS = 1 << 25
ARGMAX_ELEMENTS = 1 << 24  # classes x rows x width per band of finish()'s argmax


def argmax_classes(scores: np.ndarray) -> np.ndarray:
    """scores.argmax(axis=0) as int64, in row bands: numpy's argmax over a leading axis first copies the whole
    array (1.1 GB at ADE-847 size); the same first-index tie rule band by band."""
    c, h, w = scores.shape
    labels = np.empty((h, w), dtype=np.int64)
    band = max(1, ARGMAX_ELEMENTS // max(1, c * w))
    for start in range(0, h, band):
        labels[start : start + band] = scores[:, start : start + band].argmax(axis=0)
    return labels


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


@dataclass(frozen=True)
class QueryGroup:
    """Whole classes `classes` and their names `names` (flat indices); with class sims, also those classes' rows."""

    classes: slice
    names: slice


def query_groups(owners: Sequence[int], num_classes: int, max_queries: int, extra_per_class: int = 0) -> list[QueryGroup]:
    """Consecutive classes packed into groups of at most `max_queries` text queries (a class is never split;
    a class larger than the bound is a group alone). `extra_per_class`: queries per class besides its names."""
    slices = class_slices(owners, num_classes)
    groups: list[QueryGroup] = []
    first, count = 0, 0
    for c, sl in enumerate(slices):
        size = sl.stop - sl.start + extra_per_class
        if count and count + size > max_queries:
            groups.append(QueryGroup(slice(first, c), slice(slices[first].start, slices[c - 1].stop)))
            first, count = c, 0
        count += size
    groups.append(QueryGroup(slice(first, num_classes), slice(slices[first].start, slices[-1].stop)))
    return groups


@dataclass
class _Encoded:
    """One image after the image encoder: the input, where its logits go, and the crops' patch features."""

    x: torch.Tensor  # normalised input [3, h, w]
    size: tuple[int, int]  # the logits canvas: the resized size, or the original (whole_upsample 'original')
    count: torch.Tensor  # [1, *size] windows covering each pixel
    batches: list[tuple[list[dict], torch.Tensor, tuple[int, int]]] = field(default_factory=list)  # jobs, [b, gh, gw, D], logits size
    pooled: list[torch.Tensor] = field(default_factory=list)
    global_vec: torch.Tensor | None = None


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
    winners: np.ndarray  # [C, H, W] flat name index (int16 when there are fewer than 2**15 names, else int32)
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
        num_classes = scores.shape[0]
        if self.background and self.area_thd:
            scores = np.array(scores, dtype=np.float32, copy=True)  # zeroed below; the pending keeps its own
            pred = argmax_classes(scores)
            area = np.bincount(pred.ravel(), minlength=num_classes)[1:]
            keep = area > self.area_thd * area.sum()
            scores[1:] *= keep[:, None, None].astype(np.float32)
        else:  # no copy: at ADE-847 size [C, H, W] is over 1 GB; the result shares the pending's array
            scores = np.asarray(scores, dtype=np.float32)
        labels = argmax_classes(scores)
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
        group_elements: int = GROUP_ELEMENTS,
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
        self.group_elements = group_elements  # the text-query group bound (module constant; tests make it tiny)
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
    def _encode(self, images: Sequence[np.ndarray]) -> list[_Encoded]:
        """The image side, once per crop: windows batched by fed shape across images, patch features kept per image."""
        crop = int(self.settings.get("crop") or 0)
        stride = int(self.settings.get("stride") or crop or 1)
        encoded, jobs = [], []
        for i, img in enumerate(images):
            x = self._prepare(img)
            h, w = x.shape[-2:]
            whole = crop <= 0
            original = tuple(img.shape[:2])
            size = original if whole and self.rules.whole_upsample == "original" else (h, w)
            encoded.append(_Encoded(x=x, size=size, count=torch.zeros(1, *size, device=x.device)))
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
                    c = encoded[job["i"]].x[:, y1:y2, x1:x2]
                    crops.append(F.pad(c, (pl, pr, pt, pb)) if pl + pr + pt + pb else c)
                pooled, dense = self.backbone.encode_image(torch.stack(crops))
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
        for enc in encoded:
            enc.global_vec = F.normalize(torch.stack(enc.pooled).mean(dim=0), dim=-1)
        return encoded

    @torch.no_grad()
    def _canvas(self, enc: _Encoded, queries: torch.Tensor) -> torch.Tensor:
        """Averaged cosine logits [len(queries), *enc.size] of these text queries: each crop's, upsampled, summed."""
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

    @torch.no_grad()
    def logits_at_resized(self, images: Sequence[np.ndarray]):
        """Per image: averaged per-query cosine logits [Q, h, w] at the resized size, global vector, input tensor.

        With whole_upsample 'original' (whole image, SCLIP/ClearCLIP) the logits are at the original size already.
        Every query at once: what forward does in one group (tests and small label sets).
        """
        return [(self._canvas(enc, self.queries), enc.global_vec, enc.x) for enc in self._encode(images)]

    def _rows(self, canvas: torch.Tensor, image: torch.Tensor, height: int, width: int):
        """Width-resized logits (or PAMR-refined at full size) and the row weights that finish the resize band by band."""
        if self.settings.get("pamr"):
            from ..refine import pamr

            full = F.interpolate(canvas[None], size=(height, width), mode="bilinear", align_corners=False)
            img = F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)
            wide = pamr(img, full)[0]  # PAMR refines each query's map on its own: groups of queries are exact
            lo = hi = torch.arange(height, device=canvas.device)
            frac = torch.zeros(height, device=canvas.device)
            return wide, lo, hi, frac
        wide = F.interpolate(canvas[None], size=(canvas.shape[1], width), mode="bilinear", align_corners=False)[0]
        return (wide, *linear_rows(canvas.shape[1], height, device=canvas.device))

    def _elements_per_query(self, enc: _Encoded, height: int, width: int) -> int:
        """What one text query costs in elements at once: its canvas plus the larger of one crop batch's
        upsampled logits and the row-resized (PAMR: full-size, with PAMR's padded copies) maps."""
        h, w = enc.size
        crops = max((len(part) * out[0] * out[1] for part, _, out in enc.batches), default=0)
        later = 5 * height * width if self.settings.get("pamr") else h * width
        return h * w + max(crops, later)

    def query_groups_for(self, enc: _Encoded, height: int, width: int) -> list[QueryGroup]:
        """The class groups the text side runs in for this image (one group: every query at once)."""
        owners = self.names.owners
        if not has_group_form(self.rule):
            return [QueryGroup(slice(0, self.num_classes), slice(0, self.num_names))]
        max_queries = max(1, self.group_elements // max(1, self._elements_per_query(enc, height, width)))
        return query_groups(owners, self.num_classes, max_queries, extra_per_class=int(self.rule.needs_class_sims))

    @torch.no_grad()
    def class_scores(self, enc: _Encoded, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear resize to (height, width) (+ PAMR there, as NACLIP does), assembly in row bands, class group by group.

        Returns scores [C, H, W] float32 and winners [C, H, W]. Without PAMR the row resize is done band by
        band (same weights as torch's bilinear) so that queries x H x W never has to be in memory at once.
        """
        weights = None
        if self.rule.image_weights is not None:
            # image-level subclass weights (the seed's group softmax, or CHiLS's best subclass); the
            # image vector is the mean of the crops' global vectors. Per class, so computed once for all groups.
            weigh = group_softmax if self.rule.image_weights == "softmax" else group_argmax_onehot
            weights = weigh(self.text @ enc.global_vec, self.names.owners, self.num_classes)
        scale = float(self.settings["logit_scale"])
        device = enc.x.device
        scores = torch.empty(self.num_classes, height, width, device=device)
        index = torch.int16 if self.num_names < 2**15 else torch.int32
        winners = torch.empty(self.num_classes, height, width, dtype=index, device=device)
        groups = self.query_groups_for(enc, height, width)
        if len(groups) == 1:  # every query at once: the rule's own all-names assembly
            wide, lo, hi, frac = self._rows(self._canvas(enc, self.queries), enc.x, height, width)
            n = self.num_names
            band = max(1, BAND_ELEMENTS // max(1, wide.shape[0] * width))
            for start in range(0, height, band):
                rows = slice(start, min(start + band, height))
                sims = self._band(wide, lo, hi, frac, rows)
                s, win = assemble(self.assembly, sims[:n], self.names.owners, self.num_classes, logit_scale=scale,
                                  class_sims=sims[n:] if self.rule.needs_class_sims else None, weights=weights)
                scores[:, rows] = s
                winners[:, rows] = win.to(index)
            return scores, winners
        terms: list[torch.Tensor] | None = None  # per-pixel log-sum-exp of each cross-group softmax, float64
        for group in groups:
            queries = self.text[group.names]
            if self.rule.needs_class_sims:
                queries = torch.cat([queries, self.queries[self.num_names :][group.classes]])
            wide, lo, hi, frac = self._rows(self._canvas(enc, queries), enc.x, height, width)
            n = group.names.stop - group.names.start
            owners = [o - group.classes.start for o in self.names.owners[group.names]]
            num = group.classes.stop - group.classes.start
            band = max(1, self.group_elements // max(1, 8 * wide.shape[0] * width))
            for start in range(0, height, band):
                rows = slice(start, min(start + band, height))
                sims = self._band(wide, lo, hi, frac, rows)
                values, win, parts = assemble_group(
                    self.assembly, sims[:n], owners, num, logit_scale=scale,
                    class_sims=sims[n:] if self.rule.needs_class_sims else None,
                    weights=None if weights is None else weights[group.names],
                )
                scores[group.classes, rows] = values
                winners[group.classes, rows] = (win + group.names.start).to(index)
                if terms is None:
                    terms = [torch.full((height, width), -torch.inf, dtype=torch.float64, device=device) for _ in parts]
                for total, part in zip(terms, parts, strict=True):
                    total[rows] = torch.logaddexp(total[rows], part)
            del wide
        band = max(1, self.group_elements // max(1, 8 * self.num_classes * width))
        for start in range(0, height, band):
            rows = slice(start, min(start + band, height))
            scores[:, rows] = finish_groups(self.assembly, scores[:, rows], [t[rows] for t in terms or []])
        return scores, winners

    @staticmethod
    def _band(wide: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, frac: torch.Tensor, rows: slice) -> torch.Tensor:
        """The bilinear row resize of `wide` for these output rows (torch's weights)."""
        f = frac[rows].reshape(1, -1, 1)
        return wide[:, lo[rows]] * (1 - f) + wide[:, hi[rows]] * f

    def forward(self, images: Sequence[np.ndarray]) -> list[DensePending]:
        results = []
        for image, enc in zip(images, self._encode(images), strict=True):
            scores, winners = self.class_scores(enc, image.shape[0], image.shape[1])
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
