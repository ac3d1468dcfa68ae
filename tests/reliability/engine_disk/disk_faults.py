"""A disk that fills up on purpose (test code), and a model-free method for quick evaluate runs.

Every write of the project ends in `os.replace` of a finished temporary over its target
(`llmseg.io.atomic_path`). `FullDisk` lets the first `after` of those under a folder through and
refuses every later one with ENOSPC (or another errno), as a disk that has filled up would: it
stays full until the test undoes it. We run as root, so chmod would not stop a write.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from llmseg.stage2.protocols import Done, SegResult


class FullDisk:
    """`os.replace` into `folder` succeeds `after` times, then raises OSError(err) for good."""

    def __init__(self, folder: Path, after: int, err: int = errno.ENOSPC) -> None:
        self.folder, self.after, self.err = folder.resolve(), after, err
        self.written: list[Path] = []
        self.refused: list[Path] = []
        self._real = os.replace

    def _replace(self, src, dst, *args, **kwargs):
        target = Path(dst).resolve()
        if target.is_relative_to(self.folder):
            if len(self.written) >= self.after:
                self.refused.append(target)
                raise OSError(self.err, os.strerror(self.err))
            self.written.append(target)
        return self._real(src, dst, *args, **kwargs)

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(os, "replace", self._replace)


class ColourGuess:
    """Predicts a class from each pixel's red value: deterministic, no model, a few ms per image."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.seen = 0

    def forward(self, images):
        self.seen += len(images)
        return [Done(SegResult(labels=(np.asarray(im)[..., 0].astype(np.int64) // 13) % self.num_classes))
                for im in images]

    def describe(self):
        return {"name": "colour-guess"}


def numbers(out: Path) -> dict:
    """Every number of a run's results (not its timings): metrics.json's scores and the confusion matrix."""
    import json

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    keep = ("mIoU", "mAcc", "aAcc", "num_images", "num_pixels", "num_skipped", "per_class")
    found = {key: metrics[key] for key in keep}
    found["confusion"] = json.loads((out / "confusion.json").read_text(encoding="utf-8"))["matrix"]
    return found


def temporaries(folder: Path) -> list[Path]:
    """Temporaries of atomic writes left under `folder` (a failed write must remove its own)."""
    return sorted(p for p in folder.rglob(".*.tmp") if p.is_file())
