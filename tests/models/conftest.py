"""Tiny real models for the stage-two model tests: an open_clip config, a SimSeg checkpoint, a tokenizer."""

from __future__ import annotations

import json
import os
import string

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_ARCH = "LlmsegTiny-16"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
WORDS = (
    "a photo of one the cool weird nice jpeg corrupted pixelated cropped bright bad drawing "
    "background cat dog car sky grass tabby kitten puppy sedan truck cloud lawn red blue"
).split()


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> str:
    """Register a small ViT config with open_clip (width 64, 2 layers, patch 16, 64x64)."""
    import open_clip

    folder = tmp_path_factory.mktemp("openclip_cfg")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder / f"{TINY_ARCH}.json")
    return TINY_ARCH


@pytest.fixture(scope="session")
def tiny_openclip(tiny_arch):
    """A factory for OpenClipBackbone on the tiny config with fixed random weights."""
    from llmseg.stage2.backbones.openclip import OpenClipBackbone

    def make(mode: str = "vanilla", seed: int = 0):
        return OpenClipBackbone(tiny_arch, None, dense_mode=mode, init_seed=seed)

    return make


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A tiny uncased WordPiece vocabulary in a folder (what --text-tokenizer takes)."""
    folder = tmp_path_factory.mktemp("bert_tok")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase] + list(".,()-'")
    (folder / "vocab.txt").write_text("\n".join(specials + WORDS + pieces) + "\n")
    return folder


def build_simseg_state(vocab_size: int, *, width: int = 64, depth: int = 2, text_hidden: int = 64, seed: int = 0):
    """A SimSeg-layout state dict from small timm/BERT configs (trained at 224: pos_embed 1+196)."""
    from timm.models.vision_transformer import VisionTransformer
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=width, depth=depth, num_heads=width // 64,
                            mlp_ratio=4.0, qkv_bias=True, num_classes=0)
    with torch.no_grad():
        vit.pos_embed.normal_(std=0.5)
        vit.cls_token.normal_(std=0.5)
    bert = BertModel(
        BertConfig(vocab_size=vocab_size, hidden_size=text_hidden, num_hidden_layers=1, num_attention_heads=text_hidden // 64,
                   intermediate_size=2 * text_hidden, max_position_embeddings=32),
        add_pooling_layer=True,  # a config-built BERT carries a pooler: the loader must drop it
    )
    sd = {"image_encoder.model.model." + k: v for k, v in vit.state_dict().items()}
    sd.update({"text_encoder.model.model." + k: v for k, v in bert.state_dict().items()})
    sd["text_encoder.model.model.embeddings.position_ids"] = torch.arange(32)[None]
    sd["image_projection.linear.weight"] = torch.randn(32, width) * 0.2
    sd["text_projection.linear.weight"] = torch.randn(32, text_hidden) * 0.2
    sd["loss.temperature"] = torch.tensor(0.07)
    return sd, vit, bert


@pytest.fixture(scope="session")
def simseg_state_builder():
    return build_simseg_state


@pytest.fixture(scope="session")
def simseg_checkpoint(tmp_path_factory, tokenizer_dir):
    """(path, state dict, timm ViT, BERT) of a saved tiny SimSeg checkpoint with optimizer/meta extras."""
    vocab = len((tokenizer_dir / "vocab.txt").read_text().split())
    sd, vit, bert = build_simseg_state(vocab)
    path = tmp_path_factory.mktemp("simseg") / "simseg.tiny.pth"
    torch.save({"state_dict": sd, "optimizer": {"lr": 0.1}, "meta": {"epoch": 3}}, path)
    return path, sd, vit, bert
