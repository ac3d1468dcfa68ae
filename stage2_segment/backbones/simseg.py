"""`simseg`: the seed's backbone (docs/methods.md, "SimSeg") loaded strictly from a SimSeg checkpoint.

Image: a timm ViT (width, depth, MLP and patch read from the checkpoint: S/16 or B/16) at 288x288,
its pos_embed resized bicubically to 18x18 at load as the seed's loader does (align_corners=False,
no antialias, class position kept); patch tokens after the final norm go through a bias-free
projection. Global vector: LoDA top-5 pooling per channel.
Text: BERT (no pooler) over 25 tokens, projected per token, padded positions masked, per-channel
max. The released code loads with strict=False; here any missing or unexpected key is an error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizer

from llmseg.io import sha256_file

from .base import Backbone, BackboneError, refuse_non_finite
from .openclip import resize_pos_embed

IMAGE_PREFIX = "image_encoder.model.model."
TEXT_PREFIX = "text_encoder.model.model."
IMAGE_PROJ = "image_projection.linear.weight"
TEXT_PROJ = "text_projection.linear.weight"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 288
MAX_TEXT_LENGTH = 25
LODA_TOP_K = 5
PAD_FILL = -1e4  # "a large negative value" at padded token positions before the max
_DROPPED_EXACT = {TEXT_PREFIX + "embeddings.position_ids", TEXT_PREFIX + "embeddings.token_type_ids", "loss.temperature"}
_DROPPED_PREFIX = (TEXT_PREFIX + "pooler.",)


class SimSegCheckpointError(BackboneError):
    """A SimSeg checkpoint whose keys or shapes do not match the expected layout."""


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's `state_dict` (top-level optimizer/meta/scaler ignored), tensors only, safely unpickled."""
    path = Path(path)
    if not path.is_file():
        raise SimSegCheckpointError(f"simseg checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SimSegCheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True): {exc}. Re-save only its "
            "'state_dict' (torch.save({'state_dict': sd}, path)) on a machine you trust."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SimSegCheckpointError(f"{path}: expected a dict with a 'state_dict' of tensors")
    refuse_non_finite(obj.items(), f"simseg checkpoint {path}")
    return dict(obj)


def _infer_image_arch(sd: dict[str, torch.Tensor], source: str) -> dict[str, int]:
    try:
        width = int(sd[IMAGE_PREFIX + "cls_token"].shape[-1])
        patch = int(sd[IMAGE_PREFIX + "patch_embed.proj.weight"].shape[-1])
        mlp = int(sd[IMAGE_PREFIX + "blocks.0.mlp.fc1.weight"].shape[0])
    except KeyError as exc:
        raise SimSegCheckpointError(f"{source}: not a SimSeg checkpoint: missing {exc.args[0]}") from exc
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(re.escape(IMAGE_PREFIX) + r"blocks\.(\d+)\.", k)))
    return {"width": width, "patch": patch, "mlp": mlp, "depth": depth, "heads": max(1, width // 64)}


def _infer_text_config(sd: dict[str, torch.Tensor], source: str):
    try:
        vocab, hidden = sd[TEXT_PREFIX + "embeddings.word_embeddings.weight"].shape
        positions = sd[TEXT_PREFIX + "embeddings.position_embeddings.weight"].shape[0]
        types = sd[TEXT_PREFIX + "embeddings.token_type_embeddings.weight"].shape[0]
        inter = sd[TEXT_PREFIX + "encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as exc:
        raise SimSegCheckpointError(f"{source}: not a SimSeg checkpoint: missing {exc.args[0]}") from exc
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(re.escape(TEXT_PREFIX) + r"encoder\.layer\.(\d+)\.", k)))
    return BertConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=layers,
        num_attention_heads=max(1, int(hidden) // 64),
        intermediate_size=int(inter),
        max_position_embeddings=int(positions),
        type_vocab_size=int(types),
        layer_norm_eps=1e-12,
        hidden_act="gelu",
    )


class SimSegModel(nn.Module):
    """The SimSeg towers and projections, named so that `state_dict` keys are the checkpoint's."""

    def __init__(self, image_arch: dict[str, int], text_config, embed_dim: int) -> None:
        super().__init__()
        self.image = VisionTransformer(
            img_size=IMAGE_SIZE,
            patch_size=image_arch["patch"],
            embed_dim=image_arch["width"],
            depth=image_arch["depth"],
            num_heads=image_arch["heads"],
            mlp_ratio=image_arch["mlp"] / image_arch["width"],
            qkv_bias=True,
            num_classes=0,
            global_pool="token",
        )
        self.text = BertModel(text_config, add_pooling_layer=False)
        self.image_proj = nn.Linear(image_arch["width"], embed_dim, bias=False)
        self.text_proj = nn.Linear(text_config.hidden_size, embed_dim, bias=False)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """This model's state under the checkpoint's key names (persistent tensors only)."""
        out = {IMAGE_PREFIX + k: v for k, v in self.image.state_dict().items()}
        out.update({TEXT_PREFIX + k: v for k, v in self.text.state_dict().items()})
        out[IMAGE_PROJ] = self.image_proj.weight
        out[TEXT_PROJ] = self.text_proj.weight
        return out


def load_simseg_state(model: SimSegModel, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load: drop only the known extras, resize pos_embed, fail listing missing/unexpected keys."""
    given = {k: v for k, v in sd.items() if k not in _DROPPED_EXACT and not k.startswith(_DROPPED_PREFIX)}
    expected = model.checkpoint_state()
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise SimSegCheckpointError(
            f"{source}: checkpoint does not match the SimSeg layout; "
            f"missing keys ({len(missing)}): {missing}; unexpected keys ({len(unexpected)}): {unexpected}"
        )
    pos_key = IMAGE_PREFIX + "pos_embed"
    pos = given[pos_key]
    grid_out = model.image.patch_embed.grid_size
    old = int(round((pos.shape[1] - 1) ** 0.5))
    if old * old != pos.shape[1] - 1:
        raise SimSegCheckpointError(f"{source}: {pos_key} has {pos.shape[1] - 1} patch positions, not a square grid")
    given[pos_key] = resize_pos_embed(pos, (old, old), tuple(grid_out))
    wrong = [f"{k}: {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if given[k].shape != v.shape]
    if wrong:
        raise SimSegCheckpointError(f"{source}: tensor shapes do not match the inferred architecture: {wrong}")
    model.image.load_state_dict({k[len(IMAGE_PREFIX) :]: v for k, v in given.items() if k.startswith(IMAGE_PREFIX)})
    text_state = {k[len(TEXT_PREFIX) :]: v for k, v in given.items() if k.startswith(TEXT_PREFIX)}
    result = model.text.load_state_dict(text_state, strict=False)
    leftover = [k for k in result.missing_keys if k not in ("embeddings.position_ids", "embeddings.token_type_ids")]
    if leftover or result.unexpected_keys:
        raise SimSegCheckpointError(f"{source}: BERT keys do not load: {leftover + list(result.unexpected_keys)}")
    model.image_proj.weight.data.copy_(given[IMAGE_PROJ])
    model.text_proj.weight.data.copy_(given[TEXT_PROJ])


def load_tokenizer(name_or_path: str | None):
    """bert-base-uncased (needs the Hugging Face cache or network) or a local folder with vocab.txt."""
    name = name_or_path or "bert-base-uncased"
    try:
        return BertTokenizer.from_pretrained(name)
    except Exception as exc:
        raise BackboneError(
            f"simseg: cannot load the BERT tokenizer '{name}': {exc}. Pass --text-tokenizer <folder with vocab.txt>"
        ) from exc


class SimSegBackbone(Backbone):
    """SimSeg's ViT + BERT with LoDA pooling (global) and projected patch tokens (dense)."""

    name = "simseg"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    native_size = IMAGE_SIZE

    def __init__(self, checkpoint: str | Path, *, tokenizer: str | None = None, device: str = "cpu", precision: str = "fp32"):
        super().__init__()
        source = str(checkpoint)
        sd = read_checkpoint(checkpoint)
        image_arch = _infer_image_arch(sd, source)
        text_config = _infer_text_config(sd, source)
        if IMAGE_PROJ not in sd or TEXT_PROJ not in sd:
            raise SimSegCheckpointError(f"{source}: missing keys: {[k for k in (IMAGE_PROJ, TEXT_PROJ) if k not in sd]}")
        embed_dim = int(sd[IMAGE_PROJ].shape[0])
        self.model = SimSegModel(image_arch, text_config, embed_dim)
        load_simseg_state(self.model, sd, source)
        self.model.eval().to(device)
        self.tokenizer = load_tokenizer(tokenizer)
        self.tokenizer_name = tokenizer or "bert-base-uncased"
        self.checkpoint = source
        self.checkpoint_sha256 = sha256_file(checkpoint)
        self.device = device
        self.precision = precision
        self.image_arch = image_arch
        self.patch_size = image_arch["patch"]
        self.embed_dim = embed_dim
        rows, cols = self.model.image.patch_embed.grid_size
        self.native_grid = (int(rows), int(cols))
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def _autocast(self):
        kind = torch.device(self.device).type
        if self.precision == "fp32":
            return torch.autocast(device_type=kind, enabled=False)
        return torch.autocast(device_type=kind, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Final-norm patch tokens [B, h*w, width] (cls dropped), pos_embed resized for non-288 inputs."""
        vit = self.model.image
        b, _, height, width = images.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"simseg: input {height}x{width} is not a multiple of the patch size {p}")
        grid = (height // p, width // p)
        pos_embed, cls_token = vit.pos_embed, vit.cls_token
        assert pos_embed is not None and cls_token is not None  # SimSeg's ViT has both (timm allows neither)
        if grid not in self._pos_cache:
            self._pos_cache[grid] = resize_pos_embed(pos_embed.detach(), self.native_grid, grid)
        x = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1) + self._pos_cache[grid].to(x.dtype)
        x = vit.norm_pre(vit.patch_drop(vit.pos_drop(x)))
        x = vit.norm(vit.blocks(x))
        return x[:, 1:]

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, height, width = images.shape
        with self._autocast():
            feats = self.model.image_proj(self.patch_tokens(images.to(self.device))).float()
        k = min(LODA_TOP_K, feats.shape[1])
        pooled = feats.topk(k, dim=1).values.mean(dim=1)
        grid = (height // self.patch_size, width // self.patch_size)
        dense = F.normalize(feats, dim=-1).reshape(b, grid[0], grid[1], -1)
        return F.normalize(pooled, dim=-1), dense

    @torch.no_grad()
    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding="max_length",
                truncation=True,
                max_length=MAX_TEXT_LENGTH,
                return_tensors="pt",
            )
            ids = enc["input_ids"].to(self.device)
            mask = enc["attention_mask"].to(self.device)
            with self._autocast():
                hidden = self.model.text(
                    input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
                ).last_hidden_state
                tokens = self.model.text_proj(hidden).float()
            tokens = tokens.masked_fill(mask[..., None] == 0, PAD_FILL)
            out.append(F.normalize(tokens.max(dim=1).values, dim=-1))
        if not out:
            return torch.zeros(0, self.embed_dim, device=self.device)
        return torch.cat(out)

    def text_parameters(self) -> Iterable[torch.Tensor]:
        yield from self.model.text.state_dict().values()
        yield self.model.text_proj.weight
        vocab = "\n".join(token for token, _ in sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1]))
        yield torch.frombuffer(bytearray(hashlib.sha256(vocab.encode("utf-8")).digest()), dtype=torch.uint8)

    def describe(self) -> dict[str, Any]:
        return {
            "backbone": "simseg",
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "image_arch": dict(self.image_arch),
            "text_tokenizer": self.tokenizer_name,
            "native_size": self.native_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "precision": self.precision,
        }
