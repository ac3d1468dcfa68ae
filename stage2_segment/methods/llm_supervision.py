"""`llm-supervision`: the seed's per-image procedure, step for step (docs/methods.md, "LLM supervision").

Device part (forward): squash-resize to the backbone's native size with PIL bilinear, normalise,
encode; superclass scores from the global vector; threshold = mean + std (unbiased) of the top
`top_cls_num` scores; walk the first `candidates` of those top classes in torch.topk's order (ties as
topk leaves them), skipping background (index 0 on background datasets) and stopping at the first
score below the threshold; per surviving class a query from its subclasses (the assembly rule: the
seed's softmax weights by default) against the patch vectors; nearest upsampling by the patch size;
min-max normalisation.
CPU part (finish): binary dense CRF on the de-normalised uint8 network input, 7x7 closing,
nearest resize to the original size with OpenCV INTER_NEAREST's source indices, times the class
score, argmax with background default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from llmseg.stage2.ops.assembly import combine_similarities, group_argmax_onehot, rule_of
from llmseg.stage2.ops.refinement import closing, dense_crf_binary
from llmseg.stage2.protocols import SegResult

from ..options import MethodInputs
from .common import nearest_indices, resize_nearest

CLOSING_SIZE = 7
CRF_SETTINGS = dict(iterations=3, gauss_sxy=3, gauss_compat=3, bilateral_sxy=40, bilateral_srgb=13, bilateral_compat=10)


def threshold_of(scores: torch.Tensor, top_cls_num: int) -> float:
    """Mean + 1.0 x std (unbiased, torch's default) of the top `top_cls_num` scores (clamped to C)."""
    k = max(1, min(int(top_cls_num), scores.numel()))
    top = scores.topk(k).values
    return float(top.mean() + top.std())


def select_candidates(
    scores: torch.Tensor, threshold: float, candidates: int, skip_background: bool, top_cls_num: int | None = None
) -> list[int]:
    """Walk the first `candidates` of torch.topk(scores, top_cls_num); skip 0 (background); stop below threshold.

    The order is torch.topk's own, ties included (topk's tie order is not stable and depends on k, so k is
    the seed's `top_cls_num`, the same call that gave the threshold); the walk is never longer than
    `top_cls_num`. `top_cls_num=None` ranks every class.
    """
    k = scores.numel() if top_cls_num is None else max(1, min(int(top_cls_num), scores.numel()))
    order = scores.topk(k).indices[: max(0, int(candidates))]
    chosen: list[int] = []
    for index in order.tolist():
        if skip_background and index == 0:
            continue
        if float(scores[index]) < threshold:
            break
        chosen.append(index)
    return chosen


def minmax(values: torch.Tensor) -> torch.Tensor:
    """(m - min) / (max - min); a constant map becomes zeros rather than NaN."""
    low, high = values.min(), values.max()
    return (values - low) / torch.clamp(high - low, min=torch.finfo(values.dtype).tiny)


def squash_resize(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's Resize((size, size)) on a PIL image: PIL bilinear, aspect ratio ignored."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def to_network_input(resized: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """ToTensor + Normalize in float32: [3, S, S]."""
    x = resized.astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (x - m) / s


def denormalise_uint8(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Network input back to HxWx3 uint8 as the seed does: (x * std + mean) * 255, truncating cast."""
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    img = (x.astype(np.float32) * s + m) * np.float32(255)
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0))


def class_planes(
    masks: Sequence[np.ndarray], classes: Sequence[int], scores: Sequence[float], num_classes: int, height: int, width: int
) -> np.ndarray:
    """[C, H, W] float32: each class's (nearest-resized) mask times its score, zeros elsewhere."""
    planes = np.zeros((num_classes, height, width), dtype=np.float32)
    for mask, cls, score in zip(masks, classes, scores, strict=True):
        planes[cls] = resize_nearest(mask.astype(np.float32), height, width) * np.float32(score)
    return planes


def labels_from_planes(planes: np.ndarray) -> np.ndarray:
    """Argmax over the class planes; the first index (0, background) wins where every plane is 0."""
    return planes.argmax(axis=0).astype(np.int64)


@dataclass
class LLMSupervisionPending:
    """Everything the CPU steps 7-10 need, numpy only."""

    image: np.ndarray  # [S, S, 3] uint8: the de-normalised network input
    probs: np.ndarray  # [K, S, S] float32 min-max normalised maps of the candidates
    winners: np.ndarray  # [K, h, w] int32 flat name index winning each patch
    classes: list[int]
    scores: list[float]
    num_classes: int
    height: int
    width: int
    crf: bool = True
    extras: dict[str, Any] = field(default_factory=dict)
    needs_cpu: bool = True

    def finish(self) -> SegResult:
        masks = []
        for prob in self.probs:
            if self.crf:
                mask = dense_crf_binary(self.image, prob, **CRF_SETTINGS)
            else:
                mask = prob > 0.5
            masks.append(closing(np.asarray(mask, dtype=bool), size=CLOSING_SIZE))
        planes = class_planes(masks, self.classes, self.scores, self.num_classes, self.height, self.width)
        labels = labels_from_planes(planes)
        subclass = np.full((self.height, self.width), -1, dtype=np.int32)
        size = self.image.shape[0]
        for k, cls in enumerate(self.classes):
            h, w = self.winners[k].shape
            rows = nearest_indices(size, self.height) * h // size
            cols = nearest_indices(size, self.width) * w // size
            win = self.winners[k][rows[:, None], cols[None, :]]
            hit = (labels == cls) & (planes[cls] != 0)
            subclass[hit] = win[hit]
        return SegResult(labels=labels, scores=planes, subclass=subclass, extras=dict(self.extras))


class LLMSupervisionMethod:
    """The seed method over any backbone (SimSeg: the paper; with assembly 'none': the SimSeg baseline)."""

    def __init__(
        self,
        inputs: MethodInputs,
        *,
        top_cls_num: int,
        candidates: int,
        crf: bool = True,
        batch_size: int = 8,
    ) -> None:
        """`inputs`: what build_method prepared (backbone, names, text vectors, assembly, background), whole."""
        backbone, names, num_classes, assembly = inputs.backbone, inputs.names, inputs.num_classes, inputs.assembly
        text, class_text, background, describe_extra = inputs.text, inputs.class_text, inputs.background, inputs.describe_extra
        self.rule = rule_of(assembly)
        if self.rule.one_name_per_class and names.from_label_set and len(names.names) != num_classes:
            raise ValueError("assembly 'none' uses the class names only: build without a label set")
        self.backbone = backbone
        self.names = names
        self.text = text.to(backbone.device)
        self.class_text = class_text.to(backbone.device)
        self.num_classes = num_classes
        self.assembly = assembly
        self.top_cls_num = max(1, min(int(top_cls_num), num_classes))
        self.candidates = candidates
        self.background = background
        self.crf = crf
        self.batch_size = batch_size
        self._describe_extra = describe_extra or {}

    def _query_map(self, dense: torch.Tensor, global_vec: torch.Tensor, cls: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarity map [h, w] of one class and the winning name per patch [h, w] (flat index)."""
        if self.rule.one_name_per_class:
            sims = dense @ self.class_text[cls]
            return sims, torch.full(sims.shape, cls, dtype=torch.int64, device=sims.device)
        sl = self.names.slice_of(cls)
        t = self.text[sl]  # [k, D]
        sims = torch.einsum("hwd,kd->khw", dense, t)
        local_owners = [0] * t.shape[0]
        kind = self.rule.image_weights
        if kind is not None:
            # the seed's query q = sum_i w_i t_i (not re-normalised); map = <f, q>, with the seed's own
            # tensor ops (elementwise-sum scores, softmax, mm, matmul) so rounding follows its loop
            if kind == "softmax":
                weights = torch.softmax((global_vec[None] * t).sum(dim=1), dim=0)
            else:  # "argmax": CHiLS's choice of the image's best subclass
                weights = group_argmax_onehot(t @ global_vec, local_owners, 1)
            query = torch.mm(weights.view(1, -1).to(t.dtype), t)[0]
            combined = (dense.reshape(-1, dense.shape[-1]) @ query[:, None]).reshape(dense.shape[:-1])
            _, winner = combine_similarities("softmax", sims, local_owners, 1, weights=weights)
            return combined, winner[0] + sl.start
        combined, winner = combine_similarities(self.assembly, sims, local_owners, 1)
        return combined[0], winner[0] + sl.start

    @torch.no_grad()
    def forward(self, images: Sequence[np.ndarray]) -> list[LLMSupervisionPending]:
        size = self.backbone.native_size
        patch = self.backbone.patch_size
        mean, std = self.backbone.mean, self.backbone.std
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            inputs = np.stack([to_network_input(squash_resize(img, size), mean, std) for img in chunk])
            pooled, dense = self.backbone.encode_image(torch.from_numpy(inputs).to(self.backbone.device))
            for i, image in enumerate(chunk):
                g, f = pooled[i], dense[i]
                scores = self.class_text @ g
                threshold = threshold_of(scores, self.top_cls_num)
                chosen = select_candidates(scores, threshold, self.candidates, self.background, self.top_cls_num)
                probs, winners = [], []
                for cls in chosen:
                    sim, win = self._query_map(f, g, cls)
                    up = sim.repeat_interleave(patch, dim=0).repeat_interleave(patch, dim=1)
                    probs.append(minmax(up.float()).cpu().numpy())
                    winners.append(win.to(torch.int32).cpu().numpy())
                results.append(
                    LLMSupervisionPending(
                        image=denormalise_uint8(inputs[i], mean, std),
                        probs=np.stack(probs) if probs else np.zeros((0, size, size), np.float32),
                        winners=np.stack(winners) if winners else np.zeros((0, size // patch, size // patch), np.int32),
                        classes=chosen,
                        scores=[float(scores[c]) for c in chosen],
                        num_classes=self.num_classes,
                        height=int(image.shape[0]),
                        width=int(image.shape[1]),
                        crf=self.crf,
                        extras={
                            "candidates": chosen,
                            "candidate_scores": [float(scores[c]) for c in chosen],
                            "threshold": threshold,
                        },
                    )
                )
        return results

    def describe(self) -> dict[str, Any]:
        return {
            "method": "llm-supervision",
            "assembly": self.assembly,
            "top_cls_num": self.top_cls_num,
            "candidates": self.candidates,
            "background": self.background,
            "input_size": self.backbone.native_size,
            "crf": self.crf,
            "crf_settings": dict(CRF_SETTINGS) if self.crf else None,
            "closing": CLOSING_SIZE,
            "num_classes": self.num_classes,
            "num_names": len(self.names.names),
            "backbone": self.backbone.describe(),
            **self._describe_extra,
        }
