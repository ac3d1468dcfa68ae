"""A reference method for the engine reliability tests (test code): each image's label with seeded noise.

Importable by name (conftest puts this folder on sys.path), so a child process can build it too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from llmseg.stage2.protocols import Done, SegResult


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


class NoisyOracle:
    """Returns the label of the image (found by content) with a deterministic share of pixels changed."""

    def __init__(self, lookup: dict[str, np.ndarray], num_classes: int, noise: float = 0.3) -> None:
        self.lookup, self.num_classes, self.noise = lookup, num_classes, noise
        self.seen = 0

    def _predict(self, image: np.ndarray) -> np.ndarray:
        key = _key(image)
        label = self.lookup[key]
        rng = np.random.default_rng(int(key[:8], 16))
        pred = np.where((label < 0) | (label >= self.num_classes), 0, label).astype(np.int64)
        flip = rng.random(label.shape) < self.noise
        pred[flip] = rng.integers(0, self.num_classes, size=int(flip.sum()))
        return pred

    def forward(self, images):
        self.seen += len(images)
        return [Done(SegResult(labels=self._predict(image))) for image in images]

    def describe(self):
        return {"name": "noisy-oracle", "noise": self.noise}


class CheckpointWatcher(NoisyOracle):
    """Records, before each image, how many finished images the checkpoint file on disk holds."""

    def __init__(self, *args, checkpoint: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.checkpoint = checkpoint
        self.on_disk: list[int] = []

    def forward(self, images):
        try:
            state = json.loads(self.checkpoint.read_text(encoding="utf-8"))
            self.on_disk.append(len(state["finished"]))
        except FileNotFoundError:
            self.on_disk.append(0)
        return super().forward(images)


def build(name: str, data_root: Path, cls: type = NoisyOracle, **kwargs):
    """(spec, method) for a synthetic benchmark written under data_root."""
    from llmseg.datasets import get_dataset
    from llmseg.stage2.data.readers import list_samples, load_image, load_label

    spec = get_dataset(name)
    lookup = {
        _key(load_image(ref.image_path)): load_label(ref.label_path, spec.reduce_zero_label, spec.ignore_index)
        for ref in list_samples(spec, data_root)
    }
    return spec, cls(lookup, spec.num_classes, **kwargs)


def stems(name: str, data_root: Path) -> list[str]:
    from llmseg.datasets import get_dataset
    from llmseg.stage2.data.readers import list_samples

    return [ref.stem for ref in list_samples(get_dataset(name), data_root)]


class WaitsForGo(NoisyOracle):
    """Blocks its first image until the file `go` exists: a run that is surely still going while a test looks."""

    def __init__(self, *args, go: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.go = go

    def forward(self, images):
        import time

        deadline = time.monotonic() + 120
        while not self.go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().forward(images)
