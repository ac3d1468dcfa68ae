"""A dense mode with a setting of its own, registered from outside the package, used and set from the CLI.

The mode lives in this test module only: registering it (with its pydantic settings model) is all
it takes for `llmseg segment --dense-mode ... --mode-option NAME=VALUE` to use it, check its
setting and record it.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.errors import ConfigError
from llmseg.stage2.backbones.dense_modes import DENSE_MODES, BlockParts
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.demo.generator import render_scene
from llmseg.stage2.methods.presets import check_applicable, mode_settings

MODE = "test-sharp-kk"
runner = CliRunner()


class SharpSettings(BaseModel):
    """The plug-in mode's one setting: how sharp its key-key attention is."""

    model_config = ConfigDict(extra="forbid")

    sharpness: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)


def sharp_kk(parts: BlockParts) -> torch.Tensor:
    """k-k self-attention at a temperature of `sharpness`; residual and FFN dropped."""
    sharpness = float(parts.options["sharpness"])
    a = parts.softmax((parts.k @ parts.k.transpose(-2, -1)) * parts.scale * sharpness)
    return parts.out_proj(a @ parts.v)


@pytest.fixture(scope="module", autouse=True)
def plugin_mode():
    DENSE_MODES.register(MODE, config=SharpSettings)(sharp_kk)
    yield MODE
    DENSE_MODES.unregister(MODE)


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory):
    """Two scenes of the demo world, as PNG files."""
    folder = tmp_path_factory.mktemp("demo_images")
    for index in range(2):
        Image.fromarray(render_scene(0, index).image).save(folder / f"scene{index}.png")
    return folder


def _segment(images, out, *options: str):
    args = ["segment", str(images), "--out", str(out), "--classes", "background, warm-coloured shape, cool-coloured shape",
            "--backbone", "demo-clip", "--dense-mode", MODE, "--templates", "single", "--no-progress", *options]
    return runner.invoke(app, args)


def _label_maps(out) -> dict[str, str]:
    return {p.name: hashlib.sha256(np.asarray(Image.open(p)).tobytes()).hexdigest() for p in sorted(out.glob("scene?.png"))}


def test_the_cli_uses_the_plugin_mode_and_sets_its_parameter(demo_images, tmp_path):
    runs = {}
    for sharpness in ("0.05", "50"):
        out = tmp_path / f"sharp{sharpness}"
        res = _segment(demo_images, out, "--mode-option", f"sharpness={sharpness}")
        assert res.exit_code == 0, res.output
        record = json.loads((out / "segment_run.json").read_text())
        assert record["config"]["dense_mode"] == MODE and record["config"]["mode_options"] == {"sharpness": sharpness}
        assert record["method"]["backbone"]["dense_mode"] == MODE
        assert record["method"]["backbone"]["mode_options"] == {"sharpness": float(sharpness)}
        runs[sharpness] = (record["fingerprint"], _label_maps(out), json.loads((out / "scene0.json").read_text()))
    assert len(runs["0.05"][1]) == 2
    assert runs["0.05"][0] != runs["50"][0]
    # the setting reaches the rule: the label maps (and the per-image summaries) differ
    assert runs["0.05"][1] != runs["50"][1]
    # the setting's default applies when it is not given
    res = _segment(demo_images, tmp_path / "default")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "default" / "segment_run.json").read_text())["method"]["backbone"]["mode_options"] == {
        "sharpness": 1.0}


@pytest.mark.parametrize(("option", "expected"), [
    ("sharpness=-1", f"dense mode '{MODE}': bad --mode-option sharpness"),
    ("sharpness=lots", f"dense mode '{MODE}': bad --mode-option sharpness"),
    ("blur=2", f"dense mode '{MODE}' has no option blur (its options: sharpness)"),
    ("sharpness", "--mode-option expects NAME=VALUE, got 'sharpness'"),
])
def test_a_bad_mode_option_is_a_named_error(demo_images, tmp_path, option, expected):
    res = _segment(demo_images, tmp_path / "out", "--mode-option", option)
    assert res.exit_code == 2, res.output
    assert expected in " ".join(res.output.split())
    assert not (tmp_path / "out" / "scene0.png").exists()


def test_mode_options_are_checked_against_the_chosen_mode():
    with pytest.raises(ConfigError, match="dense mode 'sclip' takes no --mode-option"):
        check_applicable(MethodConfig(backbone="demo-clip", dense_mode="sclip", mode_options={"sharpness": 2}))
    with pytest.raises(ConfigError, match="--mode-option does not apply to --backbone simseg"):
        check_applicable(MethodConfig(backbone="simseg", checkpoint="x.pth", mode_options={"std": 2}))
    assert mode_settings(MODE, {"sharpness": "2.5"}) == {"sharpness": 2.5}
    assert mode_settings("naclip", {"std": "3"}) == {"std": 3.0}


def test_naclip_std_is_also_a_mode_option():
    from llmseg.stage2.methods import resolve_naclip_std

    assert resolve_naclip_std(MethodConfig(preset="naclip", mode_options={"std": "2.5"})) == 2.5
    assert resolve_naclip_std(MethodConfig(preset="naclip", naclip_std=4.0)) == 4.0
    with pytest.raises(ConfigError, match="--naclip-std and --mode-option std"):
        resolve_naclip_std(MethodConfig(preset="naclip", naclip_std=4.0, mode_options={"std": 2}))
