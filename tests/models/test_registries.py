"""Adding a backbone, a method or an assembly rule is one registration; wrong names and options are errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmseg.errors import ConfigError
from llmseg.stage2.backbones import Backbone, BackboneError
from llmseg.stage2.methods import build_method, load_backbone
from llmseg.stage2.methods.presets import check_applicable, load_preset
from llmseg.stage2.ops.assembly import AssemblyRule, _reduce, assemble
from llmseg.stage2.options import backbone_options, method_options
from llmseg.stage2.protocols import Done, MethodConfig, SegResult
from llmseg.stage2.registry_tables import ASSEMBLY_RULES, BACKBONES, METHODS


class PatchBackbone(Backbone):
    """A tiny real backbone: a random linear patch embedding and a random text table (seeded)."""

    name = "patchy"
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    patch_size = 8
    native_size = 32
    embed_dim = 16

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(3 * 8 * 8, 16, generator=gen)
        self.vocab = torch.randn(64, 16, generator=gen)

    def encode_text(self, texts):
        rows = torch.stack([self.vocab[sum(map(ord, t)) % 64] for t in texts])
        return torch.nn.functional.normalize(rows, dim=-1)

    def encode_image(self, images):
        b, _, h, w = images.shape
        patches = images.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(b, h // 8, w // 8, -1)
        dense = torch.nn.functional.normalize(patches @ self.proj, dim=-1)
        return torch.nn.functional.normalize(dense.mean(dim=(1, 2)), dim=-1), dense

    def text_parameters(self):
        return [self.vocab]

    def describe(self):
        return {"backbone": "patchy"}


@pytest.fixture
def patchy():
    BACKBONES.register("patchy", config=backbone_options("pretrained"))(lambda config, arg: PatchBackbone())
    yield
    BACKBONES.unregister("patchy")


def test_a_registered_backbone_is_built_by_name_and_runs_the_dense_method(patchy):
    config = MethodConfig(backbone="patchy", templates="single", short_side=32, crop=0, prob_thd=0.0)
    backbone = load_backbone(config)
    assert isinstance(backbone, PatchBackbone)
    method = build_method(config, ["cat", "dog", "sky"])
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    result = method.forward([image])[0].finish()
    assert result.labels.shape == (32, 48)
    with pytest.raises(BackboneError, match="takes nothing after a colon"):
        load_backbone(MethodConfig(backbone="patchy:big"))
    with pytest.raises(ConfigError, match="--checkpoint does not apply to --backbone patchy"):
        load_backbone(MethodConfig(backbone="patchy", checkpoint="x.pth"))


def test_a_registered_method_is_built_by_name(patchy):
    @METHODS.register("nearest", config=method_options("candidates", templates="single", assembly="max"))
    def build_nearest(config, inputs):
        class Nearest:
            num_classes = inputs.num_classes

            def forward(self, images):
                return [Done(SegResult(labels=np.zeros(im.shape[:2], np.int64))) for im in images]

            def describe(self):
                return {"method": "nearest", "assembly": inputs.assembly, **inputs.describe_extra}

        return Nearest()

    try:
        method = build_method(MethodConfig(method="nearest", backbone="patchy", candidates=3), ["a", "b"])
        assert method.describe()["method"] == "nearest" and method.describe()["templates"] == "single"
        assert method.forward([np.zeros((5, 7, 3), np.uint8)])[0].finish().labels.shape == (5, 7)
        with pytest.raises(ConfigError, match="--pamr does not apply to --method nearest"):
            build_method(MethodConfig(method="nearest", backbone="patchy", pamr=True), ["a", "b"])
    finally:
        METHODS.unregister("nearest")


def test_a_registered_assembly_rule_works_in_assemble_and_the_dense_method(patchy):
    @ASSEMBLY_RULES.register("least")
    class Least(AssemblyRule):
        """The worst name of each class (a deliberately odd rule)."""

        def assemble(self, sims, slices, num_classes, *, logit_scale, class_sims, weights):
            probs = torch.softmax(sims * logit_scale, dim=0)
            return torch.stack([probs[sl].min(dim=0).values for sl in slices]), _reduce(probs, slices, "max")[1]

    try:
        sims = torch.randn(5, 3, 4, dtype=torch.float64)
        got, _ = assemble("least", sims, [0, 0, 1, 1, 1], 2, logit_scale=10.0)
        p = torch.softmax(sims * 10.0, dim=0)
        expected = torch.stack([torch.minimum(p[0], p[1]), torch.minimum(torch.minimum(p[2], p[3]), p[4])])
        torch.testing.assert_close(got, expected)
        labels = {"cat": ["tabby", "kitten"], "dog": ["puppy", "hound"]}
        from llmseg.labelset import label_set_from_json

        config = MethodConfig(backbone="patchy", templates="single", assembly="least", short_side=32, crop=0)
        method = build_method(config, ["cat", "dog"], label_set=label_set_from_json(labels, ["cat", "dog"]))
        out = method.forward([np.full((32, 32, 3), 120, np.uint8)])[0].finish()
        assert out.labels.shape == (32, 32) and method.assembly == "least"
    finally:
        ASSEMBLY_RULES.unregister("least")


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(ValueError, match="unknown method 'magic': use one of dense, llm-supervision"):
        MethodConfig(method="magic")
    with pytest.raises(ValueError, match="unknown assembly rule 'median': use one of chils, max, mean, none, softmax"):
        MethodConfig(assembly="median")
    with pytest.raises(BackboneError, match="unknown backbone 'resnet': use one of demo-clip, openclip, simseg"):
        load_backbone(MethodConfig(backbone="resnet"))
    with pytest.raises(BackboneError, match="openclip:<arch>"):
        load_backbone(MethodConfig(backbone="openclip"))


def test_inapplicable_options_are_errors_and_defaults_are_not():
    with pytest.raises(ConfigError, match=r"--pamr does not apply to --method llm-supervision \(it uses: --candidates, --crf, --preset, --top-cls-num\)"):
        check_applicable(MethodConfig(method="llm-supervision", pamr=True))
    with pytest.raises(ConfigError, match="--top-cls-num does not apply to --method dense"):
        check_applicable(MethodConfig(top_cls_num=3))
    # llm-supervision reads --preset (a tuned preset of its own), but a preset written for dense is refused
    from llmseg.stage2.methods import with_preset_fields

    with pytest.raises(ConfigError, match="preset 'sclip' is for method 'dense', not --method llm-supervision"):
        with_preset_fields(MethodConfig(method="llm-supervision", preset="sclip"), "pascal_voc")
    with pytest.raises(ConfigError, match="--pretrained does not apply to --backbone simseg"):
        check_applicable(MethodConfig(backbone="simseg", pretrained="openai"))
    # defaults (and a model_dump round trip of them) are not "given"
    for method in ("dense", "llm-supervision"):
        config = MethodConfig(method=method)
        check_applicable(config)
        check_applicable(MethodConfig(**config.model_dump()))
    check_applicable(MethodConfig(method="llm-supervision", crf=False, top_cls_num=3, candidates=2, dense_mode="sclip"))
    check_applicable(MethodConfig(preset="naclip", pamr=True, crf=True, crf_iterations=3, naclip_std=4.0))


def test_preset_file_path_and_bad_preset_files(tmp_path):
    from llmseg.stage2.methods import resolve_dense_settings, resolve_naclip_std

    good = tmp_path / "tuned.json"
    good.write_text(json.dumps({"name": "tuned", "default": {"dense_mode": "naclip", "short_side": 64, "crop": 32,
                                                              "stride": 16, "logit_scale": 30.0, "naclip_std": 3.0},
                                "datasets": {"pascal_voc": {"crop": 0}}}))
    settings = resolve_dense_settings(MethodConfig(preset=str(good)), "pascal_voc")
    assert (settings["dense_mode"], settings["short_side"], settings["crop"], settings["logit_scale"]) == ("naclip", 64, 0, 30.0)
    assert resolve_naclip_std(MethodConfig(preset=str(good))) == 3.0
    assert resolve_naclip_std(MethodConfig(preset=str(good), naclip_std=7.5)) == 7.5
    assert resolve_naclip_std(MethodConfig()) == 5.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "default": {}, "dataset": {}}))
    with pytest.raises(ConfigError, match=r"preset file .*bad\.json: dataset: Extra inputs"):
        load_preset(str(bad))
    with pytest.raises(ConfigError, match="preset file .*missing.json does not exist"):
        load_preset(str(tmp_path / "missing.json"))


def test_cli_help_lists_registered_names_and_who_reads_an_option():
    from llmseg.stage2.cli.options import help_text

    assert "dense, llm-supervision" in help_text("method")
    assert "openclip:<arch>, simseg" in help_text("backbone")
    assert "(read by: dense)" in help_text("pamr") and "(read by: openclip)" in help_text("naclip_std")
    METHODS.register("extra-method", config=method_options("pamr"))(lambda config, inputs: None)
    try:
        assert "extra-method" in help_text("method") and "dense, extra-method" in help_text("pamr")
    finally:
        METHODS.unregister("extra-method")


def test_the_demo_backbone_comes_through_the_packages_own_entry_point():
    """The core backbone table names only the real backbones; the demo CLIP is registered the way an
    installed plug-in is (an entry point of llmseg's own distribution), and is found by name."""
    from importlib import metadata

    declared = {(e.name, e.value, e.dist.name if e.dist else None) for e in metadata.entry_points(group="llmseg.backbones")}
    assert ("demo-clip", "llmseg.stage2.demo.train", "llmseg") in declared
    import llmseg.stage2.registry_tables as tables

    source = open(tables.__file__, encoding="utf-8").read()
    assert "llmseg.stage2.demo" not in source  # the core table does not import the demo
    assert "demo-clip" in BACKBONES.names()
    assert BACKBONES.get("demo-clip").__module__ == "llmseg.stage2.demo.train"
