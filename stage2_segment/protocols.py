"""The contract between the evaluation engine and the segmentation methods.

Data flows one way: images -> `SegmentationMethod.forward` (device work, batched) ->
`PendingResult.finish` (CPU-only post-processing: CRF, closing, resizes; picklable, so the
runner can run it in a process pool while the device takes the next batch) -> `SegResult`
-> metric / pictures. The CLI, the Python API (`Segmenter`) and `evaluate` all build a
method from one `MethodConfig` (config.py; re-exported here) through `llmseg.stage2.methods.build_method`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from llmseg.stage2.config import MAX_SIDE, MethodConfig

__all__ = ["MAX_SIDE", "Done", "MethodConfig", "PendingResult", "SegResult", "SegmentationMethod"]


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

    def forward(self, images: Sequence[np.ndarray]) -> Sequence[PendingResult]:
        """images: RGB uint8 arrays [H, W, 3] (sizes may differ). One pending result per image.

        (A Sequence, not a list, so that a method may return a list of its own pending type.)"""
        ...

    def describe(self) -> dict[str, Any]:
        """Every setting that determines the output (for metrics.json): names, sizes, hashes."""
        ...
