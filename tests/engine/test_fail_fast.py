"""Issue 11 (stage two): every input is checked before a model is built; nothing is written; no random weights unasked."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods import load_backbone
from llmseg.stage2.preflight import check_method_inputs

runner = CliRunner()


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # an empty cache: nothing is there


def _image(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    return path


def test_segment_without_weights_refuses_random_ones(tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(_image(tmp_path)), "--classes", "cat, dog", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "has no weights" in res.output and "--pretrained" in res.output and "--random-weights" in res.output
    assert not out.exists()
    with pytest.raises(Exception, match="--random-weights"):
        load_backbone(MethodConfig(backbone="openclip:ViT-S-16"))


def test_random_weights_only_when_asked_and_recorded():
    backbone = load_backbone(MethodConfig(backbone="openclip:ViT-S-16", random_weights=True))
    assert backbone.describe()["random_weights"] is True and backbone.describe()["pretrained"] is None
    with pytest.raises(Exception, match="contradict"):
        check_method_inputs(MethodConfig(backbone="openclip:ViT-S-16", random_weights=True, pretrained="openai"))


def test_pretrained_tag_offline_names_the_cache_file(tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(_image(tmp_path)), "--classes", "cat, dog", "--out", str(out),
                              "--pretrained", "openai"], env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf-cache")})
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "HF_HUB_OFFLINE is set" in text and "models--timm--vit_base_patch16_clip_224.openai" in text
    from huggingface_hub import constants

    assert "open_clip_model.safetensors" in text and str(constants.HF_HUB_CACHE) in text
    assert not out.exists()


def test_evaluate_without_data_names_the_layout_before_any_model(tmp_path):
    out = tmp_path / "res"
    # weights that could not be had either: the dataset is reported first, at once
    res = runner.invoke(app, ["evaluate", "--dataset", "pascal_voc", "--data-root", str(tmp_path / "data"),
                              "--out", str(out), "--pretrained", "openai"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "dataset 'pascal_voc' is not under --data-root" in text
    assert "VOCdevkit/VOC2012/JPEGImages" in text and "ImageSets/Segmentation/val.txt" in text
    assert "llmseg data check pascal_voc" in text
    assert not out.exists() and not (tmp_path / "results").exists()


def test_simseg_checkpoint_and_tokenizer(tmp_path):
    with pytest.raises(Exception, match="ckpts/simseg.vit-s.pth"):
        check_method_inputs(MethodConfig(method="llm-supervision", backbone="simseg"))
    with pytest.raises(Exception, match="no such file"):
        check_method_inputs(MethodConfig(method="llm-supervision", backbone="simseg", checkpoint=str(tmp_path / "x.pth")))
    ckpt = tmp_path / "x.pth"
    ckpt.write_bytes(b"")
    with pytest.raises(Exception, match="bert-base-uncased.*not in the Hugging Face cache.*--text-tokenizer"):
        check_method_inputs(MethodConfig(method="llm-supervision", backbone="simseg", checkpoint=str(ckpt)))
    (tmp_path / "tok").mkdir()
    with pytest.raises(Exception, match="no vocab.txt"):
        check_method_inputs(MethodConfig(method="llm-supervision", backbone="simseg", checkpoint=str(ckpt),
                                         text_tokenizer=str(tmp_path / "tok")))


def test_help_shows_flags_without_bool_and_brackets_literally():
    import typer

    res = runner.invoke(app, ["--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert res.exit_code == 0 and "--version" in res.output and "<bool>" not in res.output
    tiny = typer.Typer()

    @tiny.command()
    def show(flag: bool = typer.Option(False, help="A label set {class: [subclasses]}.")) -> None:
        """Doc."""

    res = runner.invoke(tiny, ["--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert "{class: [subclasses]}" in res.output and "<bool>" not in res.output
