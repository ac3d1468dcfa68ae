"""Backbone capabilities are explicit: `with_mode` on the base class, and each family's own input check.

Before: dense-mode support was guessed with `hasattr(backbone, "with_mode")` and the input checks
were a table in preflight.py that a family registered from outside could not join.
"""

from __future__ import annotations

import pytest
import torch

from llmseg.errors import ConfigError, LlmsegError
from llmseg.stage2.backbones import Backbone, BackboneError
from llmseg.stage2.backbones.openclip import OpenClipBackbone
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods import load_backbone
from llmseg.stage2.methods.dense import dense_backbone
from llmseg.stage2.options import backbone_options
from llmseg.stage2.preflight import WeightsUnavailable, check_method_inputs
from llmseg.stage2.registry_tables import BACKBONES


class PlainBackbone(Backbone):
    """A backbone without dense modes: a seeded text table, constant image vectors."""

    name = "plain-test"
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    patch_size = 8
    native_size = 32
    embed_dim = 4

    def encode_text(self, texts):
        return torch.nn.functional.normalize(torch.ones(len(texts), 4), dim=-1)

    def encode_image(self, images):  # pragma: no cover - not run here
        raise NotImplementedError

    def text_parameters(self):
        return [torch.zeros(1)]

    def describe(self):
        return {"backbone": self.name}


def test_a_backbone_without_dense_modes_says_so_by_name():
    backbone = PlainBackbone()
    assert not backbone.has_dense_modes and OpenClipBackbone.has_dense_modes
    with pytest.raises(BackboneError, match="backbone 'plain-test' has no dense modes"):
        backbone.with_mode("sclip")
    # the dense method uses such a backbone as it is, and refuses a dense mode for it
    assert dense_backbone(backbone, MethodConfig(templates="single")) is backbone
    with pytest.raises(ConfigError, match="--dense-mode sclip applies to openclip backbones only"):
        dense_backbone(backbone, MethodConfig(dense_mode="sclip"))


@pytest.fixture
def checked_family():
    seen: list[tuple[str | None, str | None]] = []

    def inputs(arg, config):
        seen.append((arg, config.pretrained))
        if config.pretrained == "missing":
            raise WeightsUnavailable(f"plain-test:{arg}: weights 'missing' are not here")

    options = backbone_options("pretrained", takes_arg=True, name="PlainOptions", inputs=inputs)
    BACKBONES.register("plain-test", config=options)(lambda config, arg: PlainBackbone())
    yield seen
    BACKBONES.unregister("plain-test")


def test_a_family_registered_from_outside_brings_its_own_input_check(checked_family):
    check_method_inputs(MethodConfig(backbone="plain-test:small", pretrained="here"))
    assert checked_family == [("small", "here")]
    with pytest.raises(WeightsUnavailable, match="plain-test:small: weights 'missing'"):
        load_backbone(MethodConfig(backbone="plain-test:small", pretrained="missing"))
    assert isinstance(load_backbone(MethodConfig(backbone="plain-test:x", pretrained="here")), PlainBackbone)


def test_the_built_in_families_keep_their_checks(tmp_path):
    with pytest.raises(ConfigError, match="--random-weights applies to openclip backbones only"):
        check_method_inputs(MethodConfig(backbone="simseg", checkpoint=str(tmp_path / "x.pth"), random_weights=True))
    with pytest.raises(LlmsegError, match="x.pth"):
        check_method_inputs(MethodConfig(backbone="simseg", checkpoint=str(tmp_path / "x.pth")))
    with pytest.raises(LlmsegError, match="nope.safetensors"):
        check_method_inputs(MethodConfig(backbone="openclip:ViT-B-16", pretrained=str(tmp_path / "nope.safetensors")))
