"""`dense`: the SCLIP-family protocol (docs/methods.md, "The dense protocol") over any backbone.

Per image: resize so the short side is S (aspect kept, long side capped at 2048 as mmseg's
Resize(scale=(2048, S)) does, by OpenCV on the uint8 image), normalise as SegDataPreProcessor,
slide a crop x crop window with the given stride (batched through the backbone across images),
per-name cosine logits upsampled bilinearly to each crop and averaged where crops overlap,
bilinear resize to the original size, optional PAMR there (on the input resized likewise, as
NACLIP does), then the assembly rule with the logit scale. finish() (CPU, numpy) does the
optional multi-label CRF, area threshold, argmax and probability threshold.

The image side (resize, normalise, windows, per-window logits, the resizes and the preset's
ProtocolRules) is dense_protocol.py's. The steps are public: `dense_logits` (one image, per-query
logits [Q, H, W] at its size), `assembly.assemble` (per-name logits -> class scores by a rule) and
`DensePending.of(...).finish()` (CRF, thresholds, argmax); DenseMethod composes the same functions.

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
from typing import Any

import numpy as np
import torch

from llmseg.errors import ConfigError
from llmseg.stage2.ops.assembly import (
    assemble,
    assemble_group,
    finish_groups,
    has_group_form,
    image_weights,
    rule_of,
)
from llmseg.stage2.ops.dense_protocol import (
    DenseProtocol,
    Encoded,
    ProtocolRules,
    band_rows,
    encode_images,
    full_logits,
    linear_rows,
    resize_plan,
    slide_windows,
    window_logits,
)
from llmseg.stage2.ops.preprocess import LONG_SIDE_CAP, resized_shape
from llmseg.stage2.ops.refinement import dense_crf_multilabel
from llmseg.stage2.protocols import SegResult

from ..config import MethodConfig
from ..options import MethodInputs
from .common import class_slices
from .presets import (
    DEFAULT_PRESET,
    check_applicable,
    preset_settings,
    resolve_dense_mode,
    resolve_dense_settings,
    resolve_mode_options,
    resolve_naclip_std,
)

__all__ = ["LONG_SIDE_CAP", "DenseMethod", "DensePending", "ProtocolRules", "QueryGroup", "argmax_classes",
           "backbone_view_options", "dense_backbone", "dense_logits", "image_vector", "linear_rows", "query_groups",
           "resized_shape", "slide_windows"]

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


def backbone_view_options(config, dataset: str | None) -> dict[str, Any]:
    """naclip_std and the positional-embedding rule of the config's preset (for `backbone.with_mode`)."""
    preset = config.preset or (DEFAULT_PRESET if config.method == "dense" else None)
    settings = preset_settings(preset, dataset) if preset else {}
    mode_options = resolve_mode_options(config)  # the mode's own settings (--mode-option), checked
    std = getattr(config, "naclip_std", None)
    if std is None and "std" in mode_options and resolve_dense_mode(config) == "naclip":
        std = resolve_naclip_std(config)  # --mode-option std=... is --naclip-std
    return {"naclip_std": std if std is not None else settings.get("naclip_std"), "pos_embed": settings.get("pos_embed"),
            "mode_options": mode_options}


def dense_backbone(backbone, config: MethodConfig, dataset: str | None = None):
    """The backbone as the configured dense method sees it: an open_clip backbone's view with the config's
    dense mode, naclip std and pos-embed rule (same weights, no copy); any other backbone as it is."""
    if backbone.has_dense_modes:
        return backbone.with_mode(resolve_dense_mode(config), **backbone_view_options(config, dataset))
    if config.dense_mode not in (None, "vanilla"):
        raise ConfigError(f"--dense-mode {config.dense_mode} applies to openclip backbones only")
    return backbone


def _protocol_of(backbone, config: MethodConfig, dataset: str | None) -> tuple[Any, DenseProtocol]:
    """The backbone view and the image-side protocol of a dense MethodConfig (what build_method gives DenseMethod)."""
    if config.method != "dense":
        raise ConfigError(f"dense_logits: the config's method is '{config.method}'; dense_logits runs the 'dense' protocol")
    check_applicable(config)
    view = dense_backbone(backbone, config, dataset)
    return view, DenseProtocol.of(view, resolve_dense_settings(config, dataset))


def _encode_one(backbone, image: np.ndarray, config: MethodConfig, dataset: str | None, crop_batch_size: int):
    view, protocol = _protocol_of(backbone, config, dataset)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"dense: images must be uint8 HxWx3 numpy arrays, got {type(image).__name__}")
    (enc,) = encode_images(view, protocol, [image], crop_batch_size)
    return view, protocol, enc


@torch.no_grad()
def dense_logits(
    backbone,
    image: np.ndarray,
    text_embeddings: torch.Tensor,
    config: MethodConfig,
    *,
    dataset: str | None = None,
    crop_batch_size: int = 8,
) -> torch.Tensor:
    """Per-query cosine logits [Q, H, W] (float32, on the backbone's device) of one uint8 HxWx3 image.

    Row q is the logit map of `text_embeddings[q]` (e.g. `text.text_embeddings(backbone, names)`) at
    the image's own size, by the configured dense method's protocol: the preset's (and the dataset's)
    short side, windows or whole image, pad/truncate and upsample rules, the backbone's dense mode
    and pos-embed rule, PAMR when the config turns it on. The logits `assembly.assemble` turns into
    class scores; DenseMethod runs these same steps (in class groups and row bands, for memory).
    Every query at once: fine for tens to hundreds of names, not for thousands at megapixel sizes.
    """
    view, protocol, enc = _encode_one(backbone, image, config, dataset, crop_batch_size)
    queries = text_embeddings.to(device=enc.x.device, dtype=torch.float32)
    return full_logits(protocol, enc, queries, image.shape[0], image.shape[1])


@torch.no_grad()
def image_vector(backbone, image: np.ndarray, config: MethodConfig, *, dataset: str | None = None,
                 crop_batch_size: int = 8) -> torch.Tensor:
    """The image's global embedding [D] as the dense method uses it (the mean of its windows' pooled vectors,
    L2-normalised): what `assembly.image_weights` needs for the rules with image-level weights (softmax, chils).
    Runs the image encoder again; dense_logits does not return it."""
    return _encode_one(backbone, image, config, dataset, crop_batch_size)[2].global_vec


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

    @classmethod
    def of(cls, scores: torch.Tensor, winners: torch.Tensor, settings: dict[str, Any], *, background: bool,
           crf: bool = False, crf_iterations: int = 10, image: np.ndarray | None = None) -> DensePending:
        """The refinement step of resolved dense settings (prob_thd, area_thd): `finish()` runs it."""
        return cls(
            scores=scores.float().cpu().numpy(),
            winners=winners.cpu().numpy(),
            background=background,
            prob_thd=settings.get("prob_thd"),
            area_thd=settings.get("area_thd"),
            crf=crf,
            crf_iterations=crf_iterations,
            image=np.ascontiguousarray(image) if crf else None,
        )

    @property
    def needs_cpu(self) -> bool:
        return self.crf

    def finish(self) -> SegResult:
        scores = self.scores
        if self.crf:
            if self.image is None:
                raise ValueError("dense: a pending result with crf needs its image (DensePending.of(..., image=...))")
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
        inputs: MethodInputs,
        *,
        settings: dict[str, Any],
        crf: bool = False,
        crf_iterations: int = 10,
        crop_batch_size: int = 8,
        group_elements: int = GROUP_ELEMENTS,
    ) -> None:
        """`inputs`: what build_method prepared (backbone view, names, text vectors, assembly, background), whole."""
        backbone, text = inputs.backbone, inputs.text
        self.backbone = backbone
        self.names = inputs.names
        self.num_classes = inputs.num_classes
        self.assembly = inputs.assembly
        self.settings = dict(settings)
        self.background = inputs.background
        self.crf = crf
        self.crf_iterations = crf_iterations
        self.crop_batch_size = crop_batch_size
        self.group_elements = group_elements  # the text-query group bound (module constant; tests make it tiny)
        self._describe_extra = inputs.describe_extra or {}
        device = backbone.device
        self.rule = rule_of(inputs.assembly)
        queries = torch.cat([text, inputs.class_text]) if self.rule.needs_class_sims else text
        self.queries = queries.to(device)
        self.num_names = text.shape[0]
        self.text = text.to(device)
        self.protocol = DenseProtocol.of(backbone, self.settings)  # reads self.settings itself, at each call
        self.rules = self.protocol.rules

    # ---------------------------------------------------------------- device work (dense_protocol.py)

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        """uint8 HxWx3 -> normalised [3, h, w] at the protocol's short side."""
        return self.protocol.prepare(image, self.backbone.device)

    def _encode(self, images: Sequence[np.ndarray]) -> list[Encoded]:
        """The image side, once per crop, batched across images (dense_protocol.encode_images)."""
        return encode_images(self.backbone, self.protocol, images, self.crop_batch_size)

    def _canvas(self, enc: Encoded, queries: torch.Tensor) -> torch.Tensor:
        """Averaged cosine logits [len(queries), *enc.size] of these text queries (dense_protocol.window_logits)."""
        return window_logits(enc, queries)

    @torch.no_grad()
    def logits_at_resized(self, images: Sequence[np.ndarray]):
        """Per image: averaged per-query cosine logits [Q, h, w] at the resized size, global vector, input tensor.

        With whole_upsample 'original' (whole image, SCLIP/ClearCLIP) the logits are at the original size already.
        Every query at once: what forward does in one group (tests and small label sets).
        """
        return [(self._canvas(enc, self.queries), enc.global_vec, enc.x) for enc in self._encode(images)]

    def _elements_per_query(self, enc: Encoded, height: int, width: int) -> int:
        """What one text query costs in elements at once: its canvas plus the larger of one crop batch's
        upsampled logits and the row-resized (PAMR: full-size, with PAMR's padded copies) maps."""
        h, w = enc.size
        crops = max((len(part) * out[0] * out[1] for part, _, out in enc.batches), default=0)
        later = 5 * height * width if self.settings.get("pamr") else h * width
        return h * w + max(crops, later)

    def query_groups_for(self, enc: Encoded, height: int, width: int) -> list[QueryGroup]:
        """The class groups the text side runs in for this image (one group: every query at once)."""
        owners = self.names.owners
        if not has_group_form(self.rule):
            return [QueryGroup(slice(0, self.num_classes), slice(0, self.num_names))]
        max_queries = max(1, self.group_elements // max(1, self._elements_per_query(enc, height, width)))
        return query_groups(owners, self.num_classes, max_queries, extra_per_class=int(self.rule.needs_class_sims))

    @torch.no_grad()
    def class_scores(self, enc: Encoded, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear resize to (height, width) (+ PAMR there, as NACLIP does), assembly in row bands, class group by group.

        Returns scores [C, H, W] float32 and winners [C, H, W]. Without PAMR the row resize is done band by
        band (same weights as torch's bilinear) so that queries x H x W never has to be in memory at once.
        """
        if enc.global_vec is None:
            raise ValueError("dense: class_scores needs an image from encode_images (it sets the global vector)")
        # image-level subclass weights (the seed's group softmax, or CHiLS's best subclass), or None; the
        # image vector is the mean of the crops' global vectors. Per class, so computed once for all groups.
        weights = image_weights(self.assembly, self.text, enc.global_vec, self.names.owners, self.num_classes)
        scale = float(self.settings["logit_scale"])
        device = enc.x.device
        scores = torch.empty(self.num_classes, height, width, device=device)
        index = torch.int16 if self.num_names < 2**15 else torch.int32
        winners = torch.empty(self.num_classes, height, width, dtype=index, device=device)
        groups = self.query_groups_for(enc, height, width)
        if len(groups) == 1:  # every query at once: the rule's own all-names assembly
            wide, lo, hi, frac = resize_plan(self.settings, self._canvas(enc, self.queries), enc.x, height, width)
            n = self.num_names
            band = max(1, BAND_ELEMENTS // max(1, wide.shape[0] * width))
            for start in range(0, height, band):
                rows = slice(start, min(start + band, height))
                sims = band_rows(wide, lo, hi, frac, rows)
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
            wide, lo, hi, frac = resize_plan(self.settings, self._canvas(enc, queries), enc.x, height, width)
            n = group.names.stop - group.names.start
            owners = [o - group.classes.start for o in self.names.owners[group.names]]
            num = group.classes.stop - group.classes.start
            band = max(1, self.group_elements // max(1, 8 * wide.shape[0] * width))
            for start in range(0, height, band):
                rows = slice(start, min(start + band, height))
                sims = band_rows(wide, lo, hi, frac, rows)
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

    def forward(self, images: Sequence[np.ndarray]) -> list[DensePending]:
        results = []
        for image, enc in zip(images, self._encode(images), strict=True):
            scores, winners = self.class_scores(enc, image.shape[0], image.shape[1])
            results.append(DensePending.of(scores, winners, self.settings, background=self.background, crf=self.crf,
                                           crf_iterations=self.crf_iterations, image=image))
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
