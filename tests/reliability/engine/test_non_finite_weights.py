"""Issue 21 item 3 (weights): a checkpoint or weights file holding NaN / infinity is refused, naming the file."""

from __future__ import annotations

import math

import pytest
import torch

from llmseg.stage2.backbones.base import BackboneError


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_simseg_checkpoint_with_non_finite_weights_is_refused(tmp_path, bad):
    from llmseg.stage2.backbones.simseg import read_checkpoint

    good = {"a.weight": torch.ones(3, 2), "b.bias": torch.zeros(4), "steps": torch.tensor([5])}
    path = tmp_path / "fine.pth"
    torch.save({"state_dict": good}, path)
    assert set(read_checkpoint(path)) == set(good)
    broken = dict(good)
    broken["b.bias"] = torch.tensor([0.0, bad, 1.0, 2.0])
    path = tmp_path / "diverged.pth"
    torch.save({"state_dict": broken, "optimizer": {}}, path)
    with pytest.raises(BackboneError, match="non-finite") as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and "b.bias" in str(err.value)


def test_openclip_weights_file_with_a_nan_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from llmseg.stage2.backbones.openclip import OpenClipBackbone
    from llmseg.stage2.demo.train import MODEL_NAME, demo_pretrained, register_model_config

    register_model_config()
    full = demo_pretrained()
    OpenClipBackbone(MODEL_NAME, str(full))  # the shipped weights load
    state = load_file(str(full))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = math.nan
    bad = tmp_path / "nan-weights.safetensors"
    save_file(state, str(bad))
    with pytest.raises(BackboneError, match="non-finite") as err:
        OpenClipBackbone(MODEL_NAME, str(bad))
    assert str(bad) in str(err.value)
