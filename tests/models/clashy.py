"""A hand-built text encoder for the CLIP-aware label-set tests: every text's vector is chosen.

The label set below is built so that exactly these subclasses clash: 'puppy-like cat' is nearer to
the class name 'dog' than to anything of 'cat'; 'beagle' and 'poodle' are near-duplicates; both
subclasses of 'car' sit far from the name 'car'. The replacements are clean.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from llmseg.stage2.backbones import Backbone
from llmseg.templates import load_templates

DIM = 8
LABEL_SET = {
    "cat": ["tabby cat", "persian cat", "puppy-like cat"],
    "dog": ["beagle", "poodle"],
    "car": ["sedan", "truck"],
}
FLAGGED = {"cat": {"puppy-like cat"}, "dog": {"poodle"}, "car": {"sedan", "truck"}}
REPLACEMENTS = {"cat": ["siamese cat"], "dog": ["dalmatian"], "car": ["hatchback", "pickup"]}


def _e(i: int) -> np.ndarray:
    v = np.zeros(DIM)
    v[i] = 1.0
    return v


VECTORS = {
    "cat": _e(0), "dog": _e(1), "car": _e(2),
    "tabby cat": _e(0) + 0.1 * _e(3), "persian cat": _e(0) + 0.45 * _e(4), "puppy-like cat": _e(1) + 0.3 * _e(0),
    "beagle": _e(1) + 0.4 * _e(5), "poodle": _e(1) + 0.4 * _e(5) + 0.05 * _e(6),
    "sedan": _e(2) + 1.5 * _e(6), "truck": _e(2) + 1.5 * _e(7),
    "siamese cat": _e(0) + 0.4 * _e(5), "dalmatian": _e(1) + 0.4 * _e(3),
    "hatchback": _e(2) + 0.3 * _e(6), "pickup": _e(2) + 0.3 * _e(7),
}


def unit(text: str) -> np.ndarray:
    v = VECTORS[text]
    return v / np.linalg.norm(v)


class ClashyText(Backbone):
    """encode_text looks each prompt up; a text the table lacks is a KeyError (the test asked for it)."""

    name = "clashy"
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    patch_size = 8
    native_size = 32
    embed_dim = DIM

    def __init__(self, templates: str = "single") -> None:
        super().__init__()
        self.table = {t.format(name): torch.tensor(unit(name), dtype=torch.float32)
                      for name in VECTORS for t in load_templates(templates)}
        self.asked: list[str] = []

    def encode_text(self, texts):
        self.asked.extend(texts)
        return torch.stack([self.table[t] for t in texts])

    def encode_image(self, images):  # pragma: no cover - text-only
        raise NotImplementedError

    def text_parameters(self):
        return [torch.stack(list(self.table.values()))]

    def describe(self):
        return {"backbone": "clashy"}


@contextmanager
def clashy_backbone():
    """`--backbone clashy` (ClashyText) registered for the duration, as a user's plugin would."""
    from llmseg.stage2.options import backbone_options
    from llmseg.stage2.registry_tables import BACKBONES

    BACKBONES.register("clashy", config=backbone_options(name="ClashyOptions"))(lambda config, arg: ClashyText())
    try:
        yield
    finally:
        BACKBONES.unregister("clashy")
