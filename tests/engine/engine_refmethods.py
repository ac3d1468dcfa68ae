"""Reference methods for engine tests (test code, not part of the package).

Importable by name (conftest puts this folder on sys.path) so spawned pool workers, DataLoader
workers and torchrun-style child processes can unpickle their objects.
"""

from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from llmseg.stage2.protocols import Done, SegResult


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


def read_label_direct(path: Path, reduce_zero_label: bool) -> np.ndarray:
    """Independent of the package's reader: PIL -> numpy, then mmseg's reduce_zero_label by hand."""
    with Image.open(path) as img:
        raw = np.array(img).astype(np.int64)
    if reduce_zero_label:
        return np.where(raw == 0, 255, np.where(raw == 255, 255, raw - 1))
    return raw


def noisy_prediction(label: np.ndarray, key: str, num_classes: int, noise: float) -> np.ndarray:
    """The label with a deterministic share of pixels changed (ignored pixels get class 0)."""
    rng = np.random.default_rng(int(key[:8], 16))
    pred = np.where((label < 0) | (label >= num_classes), 0, label).astype(np.int64)  # ignored: 255, or 65535
    flip = rng.random(label.shape) < noise
    pred[flip] = rng.integers(0, num_classes, size=int(flip.sum()))
    return pred


@dataclass
class NoisyPending:
    """CPU half: a picklable pending result (needs the pool when one is there)."""

    pred: np.ndarray
    needs_cpu: bool = True

    def finish(self) -> SegResult:
        return SegResult(labels=self.pred.copy())


class OracleMethod:
    """Knows each image's label (by image content) and returns it with deterministic noise."""

    def __init__(self, lookup: dict[str, np.ndarray], num_classes: int, noise: float = 0.2, needs_cpu: bool = True):
        self.lookup = lookup
        self.num_classes = num_classes
        self.noise = noise
        self.needs_cpu = needs_cpu
        self.calls: list[int] = []

    def predict(self, image: np.ndarray) -> np.ndarray:
        key = image_key(image)
        return noisy_prediction(self.lookup[key], key, self.num_classes, self.noise)

    def forward(self, images):
        self.calls.append(len(images))
        preds = [self.predict(image) for image in images]
        if self.needs_cpu:
            return [NoisyPending(p) for p in preds]
        return [Done(SegResult(labels=p)) for p in preds]

    def describe(self):
        return {"name": "oracle", "noise": self.noise, "num_classes": self.num_classes}


class KillAfter(OracleMethod):
    """Sends itself SIGKILL when asked for image number `after` (a hard kill mid-run)."""

    def __init__(self, *args, after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.after = after
        self.seen = 0

    def forward(self, images):
        self.seen += len(images)
        if self.seen > self.after:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(images)


def build_oracle(name: str, data_root: Path, noise: float = 0.2, needs_cpu: bool = True, kill_after: int | None = None):
    """An oracle for a synthetic benchmark written under data_root; returns (spec, method)."""
    from llmseg.datasets import get_dataset
    from llmseg.stage2.data.readers import list_samples, load_image

    spec = get_dataset(name)
    lookup = {}
    for ref in list_samples(spec, data_root):
        lookup[image_key(load_image(ref.image_path))] = read_label_direct(ref.label_path, spec.reduce_zero_label)
    if kill_after is not None:
        return spec, KillAfter(lookup, spec.num_classes, noise, needs_cpu, after=kill_after)
    return spec, OracleMethod(lookup, spec.num_classes, noise, needs_cpu)


def expected_metrics(name: str, data_root: Path, noise: float = 0.2, exclude: tuple[str, ...] = ()) -> dict:
    """Direct float64 per-class formula over the whole dataset (independent of SegMetric)."""
    from llmseg.datasets import get_dataset
    from llmseg.stage2.data.readers import list_samples, load_image

    spec = get_dataset(name)
    c = spec.num_classes
    inter, area_p, area_l = np.zeros(c), np.zeros(c), np.zeros(c)
    n = 0
    for ref in list_samples(spec, data_root):
        if ref.stem in exclude:
            continue
        label = read_label_direct(ref.label_path, spec.reduce_zero_label)
        pred = noisy_prediction(label, image_key(load_image(ref.image_path)), c, noise)
        valid = label != spec.ignore_index
        for k in range(c):
            pk, lk = (pred == k) & valid, (label == k) & valid
            inter[k] += (pk & lk).sum()
            area_p[k] += pk.sum()
            area_l[k] += lk.sum()
        n += 1
    union = area_l + area_p - inter
    iou = [inter[k] / union[k] if union[k] else None for k in range(c)]
    acc = [inter[k] / area_l[k] if area_l[k] else None for k in range(c)]
    return {
        "mIoU": 100 * float(np.mean([v for v in iou if v is not None])),
        "mAcc": 100 * float(np.mean([v for v in acc if v is not None])),
        "aAcc": 100 * float(inter.sum() / area_l.sum()),
        "IoU": [None if v is None else 100 * v for v in iou],
        "num_images": n,
    }


def run_rank(rank: int, world: int, port: int, name: str, data_root: str, out: str) -> None:
    """One torchrun-like rank (for torch.multiprocessing.spawn): env vars, then the engine."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from llmseg.stage2.engine.runner import RunConfig, evaluate

    spec, method = build_oracle(name, Path(data_root))
    evaluate(method, spec, data_root, RunConfig(out=out, num_workers=0, progress=False, checkpoint_every=1))
