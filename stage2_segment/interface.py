"""The contract between the evaluation engine and the segmentation methods.

Data flows one way: images -> `SegmentationMethod.forward` (device work, batched) ->
`PendingResult.finish` (CPU-only post-processing: CRF, closing, resizes; picklable, so the
runner can run it in a process pool while the device takes the next batch) -> `SegResult`
-> metric / pictures. The CLI, the Python API (`Segmenter`) and `evaluate` all build a
method from one `MethodConfig` through `llmseg.stage2.methods.build_method`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


@dataclass
class SegResult:
    """One image's prediction at its original size (numpy, CPU)."""

    labels: np.ndarray  # [H, W] int64 class ids in 0..C-1
    scores: np.ndarray | None = None  # [C, H, W] float32: what the argmax was taken over
    subclass: np.ndarray | None = None  # [H, W] int32: index into the flat label-set name list, -1 = none
    extras: dict[str, Any] = field(default_factory=dict)  # method-specific (e.g. candidate classes)


@runtime_checkable
class PendingResult(Protocol):
    """What is left to do for one image after the device work; must be picklable and torch-free."""

    def finish(self) -> SegResult: ...


@dataclass
class Done:
    """A `PendingResult` with no CPU work left."""

    result: SegResult
    needs_cpu: bool = False

    def finish(self) -> SegResult:
        return self.result


@runtime_checkable
class SegmentationMethod(Protocol):
    """A method the runner can evaluate: batched device work in, pending per-image results out."""

    num_classes: int

    def forward(self, images: Sequence[np.ndarray]) -> list[PendingResult]:
        """images: RGB uint8 arrays [H, W, 3] (sizes may differ). One pending result per image."""
        ...

    def describe(self) -> dict[str, Any]:
        """Every setting that determines the output (for metrics.json): names, sizes, hashes."""
        ...


MethodName = Literal["dense", "llm-supervision"]
DenseMode = Literal["vanilla", "maskclip", "sclip", "clearclip", "naclip"]
Assembly = Literal["none", "max", "mean", "softmax", "chils"]


class MethodConfig(BaseModel):
    """Everything that selects and parameterises a method. None = the preset's or method's default."""

    model_config = ConfigDict(extra="forbid")

    method: MethodName = "dense"
    backbone: str = "openclip:ViT-B-16"  # "openclip:<arch>" or "simseg"
    pretrained: str | None = None  # open_clip tag or local weights file (openclip backbones)
    checkpoint: str | None = None  # SimSeg checkpoint (.pth)
    text_tokenizer: str | None = None  # SimSeg: HF tokenizer id or local folder (default bert-base-uncased)
    dense_mode: DenseMode | None = None
    preset: str | None = None  # a bundled preset name (sclip, clearclip, naclip) or a preset file path
    label_set: str | None = None  # path to a label-set JSON; None = class names only
    assembly: Assembly | None = None  # default: "max" for dense with a label set, "softmax" for llm-supervision
    include_class_name: bool = False
    templates: str | None = None  # "openai80" | "seed13" | "single" | file; default per method
    # llm-supervision
    top_cls_num: int | None = None
    candidates: int = 5
    # dense protocol (None = preset / dataset default)
    short_side: int | None = None
    crop: int | None = None  # sliding-window crop; 0 = whole image
    stride: int | None = None
    logit_scale: float | None = None
    prob_thd: float | None = None
    area_thd: float | None = None
    pamr: bool | None = None
    crf: bool | None = None  # None = the method's default: off for dense, on for llm-supervision (the seed's binary CRF)
    crf_iterations: int = 10
    # execution
    device: str = "cpu"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    text_cache_dir: str | None = Field(default=None, description="Folder for cached text embeddings; None = no cache")
