"""Stage two: dense CLIP features, subclass assembly, refinement and benchmark-exact mIoU."""

from __future__ import annotations

__all__ = ["Segmenter", "SegmentationOutput"]


def __getattr__(name: str):
    """`from llmseg.stage2 import Segmenter` without importing the API (and its dependencies) eagerly."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'llmseg.stage2' has no attribute '{name}'")
