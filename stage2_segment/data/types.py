"""The data types both the layouts (which files form a dataset) and the readers (what is in them) use.

Kept apart so that layouts.py and readers.py import this module, not each other (one import direction).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmseg.datasets import DatasetError

__all__ = ["DataError", "SampleRef"]


class DataError(DatasetError):
    """A missing, unreadable or inconsistent image/label file; the message names the file."""


@dataclass(frozen=True)
class SampleRef:
    """One evaluation sample: `stem` is the image path relative to img_dir without its suffix."""

    stem: str
    image_path: Path
    label_path: Path | None
