"""Stage two: dense CLIP features, subclass assembly, refinement and benchmark-exact mIoU."""

from __future__ import annotations

# the Segmenter and the data flow's public steps (api.STEPS: dense_logits, assemble, text_embeddings, ...)
__all__ = ["Segmenter", "SegmentationOutput", "load_backbone", "resolve_dense_settings", "text_embeddings", "dense_logits",
           "image_vector", "DensePending", "assemble", "image_weights", "SegMetric"]


def __getattr__(name: str):
    """`from llmseg.stage2 import Segmenter` (or `dense_logits`, ...) without importing the API (and torch) eagerly."""
    if name in __all__:
        # lazy import: start-up time (`import llmseg.stage2` does not load the API, PIL and the pictures)
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'llmseg.stage2' has no attribute '{name}'")
