"""SimSeg checkpoint: exact key layout built from small timm/BERT configs, loaded through the user path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmseg.stage2.backbones.simseg import SimSegBackbone, SimSegCheckpointError
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods import load_backbone


def _direct_image(sd, vit224, images):
    """timm ViT built at 288 with pos_embed resized bicubically (cls kept), then proj, LoDA, normalise."""
    from timm.models.vision_transformer import VisionTransformer

    width = vit224.embed_dim
    vit = VisionTransformer(img_size=288, patch_size=16, embed_dim=width, depth=len(vit224.blocks),
                            num_heads=width // 64, qkv_bias=True, num_classes=0)
    state = {k: v.clone() for k, v in vit224.state_dict().items()}
    pos = state["pos_embed"]
    grid = pos[:, 1:].reshape(1, 14, 14, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(18, 18), mode="bicubic", align_corners=False)
    state["pos_embed"] = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 324, width)], 1)
    vit.load_state_dict(state)
    vit.eval()
    with torch.no_grad():
        tokens = vit.forward_features(images)[:, 1:]
        proj = tokens @ sd["image_projection.linear.weight"].T
    top5 = proj.sort(dim=1, descending=True).values[:, :5].mean(dim=1)
    return F.normalize(top5, dim=-1), F.normalize(proj, dim=-1).reshape(images.shape[0], 18, 18, -1)


def test_image_features_equal_direct_forward(simseg_checkpoint, tokenizer_dir):
    path, sd, vit, _ = simseg_checkpoint
    backbone = load_backbone(MethodConfig(method="llm-supervision", backbone="simseg", checkpoint=str(path),
                                          text_tokenizer=str(tokenizer_dir)))
    assert isinstance(backbone, SimSegBackbone)
    assert backbone.native_size == 288 and backbone.patch_size == 16
    torch.manual_seed(0)
    images = torch.randn(2, 3, 288, 288)
    pooled, dense = backbone.encode_image(images)
    ref_pooled, ref_dense = _direct_image(sd, vit, images)
    assert dense.shape == (2, 18, 18, 32)
    torch.testing.assert_close(dense, ref_dense, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-5, rtol=0)
    info = backbone.describe()
    assert info["image_arch"]["width"] == 64 and len(info["checkpoint_sha256"]) == 64


def test_text_features_equal_direct_forward(simseg_checkpoint, tokenizer_dir):
    from transformers import BertTokenizer

    path, sd, _, bert = simseg_checkpoint
    backbone = SimSegBackbone(path, tokenizer=str(tokenizer_dir))
    texts = ["a photo of a cat.", "a bright photo of a tabby kitten.", "sky"]
    got = backbone.encode_text(texts)
    tok = BertTokenizer.from_pretrained(str(tokenizer_dir))
    enc = tok(texts, padding="max_length", truncation=True, max_length=25, return_tensors="pt")
    assert enc["input_ids"].shape == (3, 25)
    bert.eval()
    with torch.no_grad():
        hidden = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                      token_type_ids=torch.zeros_like(enc["input_ids"])).last_hidden_state
    proj = hidden @ sd["text_projection.linear.weight"].T
    expected = []
    for i in range(3):
        valid = proj[i][enc["attention_mask"][i].bool()]  # padded positions excluded from the max
        expected.append(F.normalize(valid.max(dim=0).values, dim=-1))
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=0)


def test_missing_key_is_a_clear_error(simseg_checkpoint, tokenizer_dir, tmp_path):
    _, sd, _, _ = simseg_checkpoint
    broken = dict(sd)
    del broken["image_encoder.model.model.blocks.1.attn.proj.weight"]
    path = tmp_path / "missing.pth"
    torch.save({"state_dict": broken}, path)
    with pytest.raises(SimSegCheckpointError, match=r"missing keys \(1\).*blocks\.1\.attn\.proj\.weight") as err:
        SimSegBackbone(path, tokenizer=str(tokenizer_dir))
    assert str(path) in str(err.value)


def test_unexpected_key_is_a_clear_error(simseg_checkpoint, tokenizer_dir, tmp_path):
    _, sd, _, _ = simseg_checkpoint
    extra = dict(sd)
    extra["module.image_encoder.model.model.norm.weight"] = torch.zeros(64)
    extra["image_encoder.model.model.head.weight"] = torch.zeros(3, 64)
    path = tmp_path / "extra.pth"
    torch.save({"state_dict": extra, "optimizer": {}, "meta": {}}, path)
    with pytest.raises(SimSegCheckpointError, match=r"unexpected keys \(2\)") as err:
        SimSegBackbone(path, tokenizer=str(tokenizer_dir))
    assert "image_encoder.model.model.head.weight" in str(err.value)


def test_known_extras_are_dropped_and_vit_b_width_is_read(tokenizer_dir, tmp_path, simseg_state_builder):
    vocab = len((tokenizer_dir / "vocab.txt").read_text().split())
    sd, _, _ = simseg_state_builder(vocab, width=128, depth=1)
    assert any(k.startswith("text_encoder.model.model.pooler.") for k in sd)
    assert "loss.temperature" in sd and "text_encoder.model.model.embeddings.position_ids" in sd
    path = tmp_path / "b.pth"
    torch.save({"state_dict": sd, "optimizer": {"x": torch.zeros(1)}, "meta": {"a": 1}, "scaler": {}}, path)
    backbone = SimSegBackbone(path, tokenizer=str(tokenizer_dir))
    assert backbone.image_arch == {"width": 128, "patch": 16, "mlp": 512, "depth": 1, "heads": 2}
    assert backbone.encode_image(torch.randn(1, 3, 288, 288))[1].shape == (1, 18, 18, 32)


def test_missing_checkpoint_and_tokenizer_errors(tmp_path, simseg_checkpoint):
    from llmseg.stage2.backbones.base import BackboneError

    with pytest.raises(SimSegCheckpointError, match="not found"):
        SimSegBackbone(tmp_path / "nope.pth")
    with pytest.raises(BackboneError, match="--checkpoint"):
        load_backbone(MethodConfig(backbone="simseg"))
    with pytest.raises(BackboneError, match="tokenizer"):
        SimSegBackbone(simseg_checkpoint[0], tokenizer=str(tmp_path / "no_such_folder"))


def test_pos_embed_is_resized_as_the_seed_loader_does(simseg_checkpoint, tokenizer_dir):
    """The released loader: patch part of pos_embed bicubic (align_corners=False, no antialias) 14x14 -> 18x18."""
    path, sd, _, _ = simseg_checkpoint
    backbone = SimSegBackbone(path, tokenizer=str(tokenizer_dir))
    pos = sd["image_encoder.model.model.pos_embed"]
    assert pos.shape == (1, 197, 64)
    grid = pos[:, 1:].reshape(1, 14, 14, 64).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(18, 18), mode="bicubic", align_corners=False, antialias=False)
    expected = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)
    assert torch.equal(backbone.model.image.pos_embed.detach(), expected)
