"""embed_prompts in chunks of names gives each name the same template average as one big call."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmseg.stage2.backbones import Backbone
from llmseg.stage2.ops import text as text_module


class TableText(Backbone):
    name, mean, std, patch_size, native_size, embed_dim = "table", (0.5,) * 3, (0.5,) * 3, 16, 224, 6

    def __init__(self):
        super().__init__()
        self.calls: list[int] = []

    def encode_text(self, texts):
        self.calls.append(len(texts))
        rows = []
        for t in texts:
            gen = torch.Generator().manual_seed(sum(ord(ch) * (i + 1) for i, ch in enumerate(t)))
            rows.append(torch.randn(self.embed_dim, generator=gen, dtype=torch.float64))
        return torch.stack(rows).float() * 3.0  # not normalised: embed_prompts must normalise

    def encode_image(self, images):  # pragma: no cover
        raise NotImplementedError

    def text_parameters(self):
        return []

    def describe(self):
        return {}


def test_chunked_embeddings_equal_the_direct_average(monkeypatch):
    names = [f"thing {i}" for i in range(23)]
    templates = ["a photo of a {}.", "a {} in the wild.", "art of the {}."]
    monkeypatch.setattr(text_module, "PROMPTS_PER_CALL", 7)  # 2 names (6 prompts) per call
    backbone = TableText()
    got = text_module.embed_prompts(backbone, names, templates)
    assert max(backbone.calls) <= 7 and sum(backbone.calls) == len(names) * len(templates)
    direct = TableText()
    for i, name in enumerate(names):
        feats = F.normalize(direct.encode_text([t.format(name) for t in templates]).double(), dim=-1)
        expected = F.normalize(feats.mean(dim=0), dim=-1)
        assert torch.allclose(got[i].double(), expected, atol=1e-6)
