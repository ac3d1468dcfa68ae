"""`openclip:<arch>`: any open_clip ViT, with the dense modes applied to its last block.

The model is never changed: `encode_image(images, dense_mode=..., naclip_std=..., pos_embed=...)`
chooses the mode per call, and `with_mode(mode, ...)` returns a light view (same weights) whose
`encode_image` uses that mode, so two methods on one backbone each keep their own. The pooled
image embedding is open_clip's own `encode_image` output; the dense features are the patch tokens
after the dense last block, ln_post and proj (dense_block.py, public open_clip modules only). The
patch positional embedding is resized per grid by a `PosEmbedRule` (presets give the peers' rule).
Text uses open_clip's tokenizer and modules; for causal CLIP text towers the token context is cut
to the longest prompt of the batch (exact: pooling is at the EOT token).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from llmseg.errors import ConfigError
from llmseg.io import atomic_path, sha256_file

from .base import Backbone, BackboneError, refuse_non_finite
from .dense_block import PosEmbedRule, run_tower
from .dense_modes import DENSE_MODES

log = logging.getLogger(__name__)

_QUICKGELU_HINTS = ("openai", "dfn", "metaclip")
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """[1+G, C] (or [1, 1+G, C]) positional embedding -> new grid, bicubic on the patch part, cls kept.

    The SimSeg backbone's rule (size-based bicubic in float32); open_clip towers use a PosEmbedRule.
    """
    squeeze = pos.ndim == 2
    p = pos.unsqueeze(0) if squeeze else pos
    if tuple(old_grid) == tuple(new_grid):
        return pos
    cls, patch = p[:, :1], p[:, 1:]
    if patch.shape[1] != old_grid[0] * old_grid[1]:
        raise BackboneError(f"positional embedding has {patch.shape[1]} patch positions, expected grid {old_grid}")
    c = patch.shape[-1]
    grid = patch.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    patch = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c).to(p.dtype)
    out = torch.cat([cls, patch], dim=1)
    return out[0] if squeeze else out


def _quickgelu_needed(arch: str, pretrained: str | None) -> bool:
    """True when the weights are known to use QuickGELU but the architecture name does not say so."""
    if pretrained is None or arch.endswith("-quickgelu"):
        return False
    cfg = open_clip.get_model_config(arch) or {}
    if cfg.get("quick_gelu", False):
        return False
    if Path(pretrained).is_file():
        return any(hint in Path(pretrained).name.lower() for hint in _QUICKGELU_HINTS)
    try:
        tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained) or {}
    except Exception:  # unknown tag: open_clip itself reports it when loading
        return False
    return bool(tag_cfg.get("quick_gelu", False))


def _warn_about_weights(arch: str, pretrained: str | None, *, force_quick: bool, local: bool, init_seed: int) -> None:
    """Say when the weights may not be what the user meant: QuickGELU forced or likely needed, or random weights."""
    if force_quick:
        warnings.warn(
            f"openclip:{arch} with weights '{pretrained}': these weights use QuickGELU; "
            f"building with force_quick_gelu=True (use '{arch}-quickgelu' to silence this)",
            stacklevel=3,  # the caller of OpenClipBackbone(...)
        )
    if local and not arch.endswith("-quickgelu") and not force_quick:
        log.warning("openclip: loading %s into %s; OpenAI/DFN/MetaCLIP weights need the -quickgelu config", pretrained, arch)
    if pretrained is None:
        log.warning("openclip:%s without --pretrained: random weights (seed %d), for tests and speed runs only", arch, init_seed)


def _create_model(arch: str, pretrained: str | None, *, device: str, force_quick: bool, local: bool, init_seed: int) -> Any:
    """open_clip's model in eval mode, its loaded weights checked finite; BackboneError (with a hint) if it cannot be built."""
    try:
        # Random weights are seeded so every torchrun rank, run and benchmark gets the same model.
        with torch.random.fork_rng(devices=[]):
            if pretrained is None:
                torch.manual_seed(init_seed)
            model = open_clip.create_model(arch, pretrained=pretrained, device=device, force_quick_gelu=force_quick)
    except Exception as exc:
        hint = ""
        if local and (str(pretrained).endswith(".pt") or "weights_only" in str(exc) or "TorchScript" in str(exc)):
            hint = (
                "; if this is an OpenAI TorchScript archive, convert it once with "
                "llmseg.stage2.backbones.openclip.convert_torchscript_checkpoint(src, 'dst.safetensors')"
            )
        raise BackboneError(f"openclip: cannot build {arch} with pretrained={pretrained!r}: {exc}{hint}") from exc
    model.eval()
    if pretrained is not None:
        refuse_non_finite(model.state_dict().items(), f"openclip:{arch} weights {pretrained}")
    return model


def _dense_ready_tower(arch: str, model: Any) -> Any:
    """The model's image tower, if the dense modes can run on it: a plain ViT with one pooled vector and a
    last block whose attention is a plain nn.MultiheadAttention; else a BackboneError naming what is missing."""
    visual = model.visual
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    missing = [name for name in needed if not hasattr(visual, name)]
    if missing or getattr(visual, "attn_pool", None) is not None:
        raise BackboneError(f"openclip:{arch}: dense features need a plain ViT image tower (missing {missing or 'attn_pool'})")
    if getattr(visual, "pool_type", "tok") not in ("tok", "avg"):
        raise BackboneError(f"openclip:{arch}: pool_type '{visual.pool_type}' gives no single image vector")
    attn = getattr(visual.transformer.resblocks[-1], "attn", None)
    if not isinstance(attn, torch.nn.MultiheadAttention) or getattr(attn, "in_proj_weight", None) is None:
        raise BackboneError(
            f"openclip:{arch}: dense modes need a last block with a plain nn.MultiheadAttention "
            f"(found {type(attn).__name__}); this architecture is not supported"
        )
    return visual


class OpenClipBackbone(Backbone):
    """An open_clip CLIP model in eval mode with a dense-mode last block."""

    has_dense_modes = True

    def __init__(
        self,
        arch: str,
        pretrained: str | None = None,
        *,
        dense_mode: str = "vanilla",
        device: str = "cpu",
        precision: str = "fp32",
        naclip_std: float = 5.0,
        mode_options: Mapping[str, Any] | None = None,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        if open_clip.get_model_config(arch) is None:
            hint = "; the bundled demo CLIP is --backbone demo-clip" if arch == "llmseg-demo-clip" else ""
            raise BackboneError(f"openclip: unknown architecture '{arch}' (see open_clip.list_models()){hint}")
        force_quick = _quickgelu_needed(arch, pretrained)
        local = pretrained is not None and Path(pretrained).is_file()
        _warn_about_weights(arch, pretrained, force_quick=force_quick, local=local, init_seed=init_seed)
        model = _create_model(arch, pretrained, device=device, force_quick=force_quick, local=local, init_seed=init_seed)
        visual = _dense_ready_tower(arch, model)

        self.model = model
        self.arch = arch
        self.pretrained = pretrained
        self.dense_mode = check_dense_mode(dense_mode)
        self.naclip_std = float(naclip_std)
        self.mode_options = dict(mode_options or {})  # the dense mode's own settings (dense_modes.mode_settings)
        self.pos_embed = PosEmbedRule()
        self.device = device
        self.precision = precision
        self.name = f"openclip:{arch}"
        self.quick_gelu_forced = force_quick
        self.weights_sha256 = sha256_file(pretrained) if local and pretrained is not None else None
        self.patch_size = int(visual.patch_size[0])
        self.native_size = int(visual.image_size[0])
        self.native_grid = tuple(int(g) for g in visual.grid_size)
        self.embed_dim = int(visual.proj.shape[1]) if visual.proj is not None else int(visual.ln_post.normalized_shape[0])
        pp = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = tuple(pp.get("mean", _CLIP_MEAN))
        self.std = tuple(pp.get("std", _CLIP_STD))
        self._pos_cache: dict = {}
        self.tokenizer = open_clip.get_tokenizer(arch)

    # ------------------------------------------------------------------ image

    def with_mode(self, mode: str, *, naclip_std: float | None = None, pos_embed: PosEmbedRule | dict | None = None,
                  mode_options: Mapping[str, Any] | None = None):
        """A view of this backbone (same weights, no copy) whose `encode_image` uses this dense mode and options."""
        return DenseModeView(self, mode, naclip_std=naclip_std, pos_embed=pos_embed, mode_options=mode_options)

    def _autocast(self):
        if self.precision == "fp32":
            return torch.autocast(device_type=torch.device(self.device).type, enabled=False)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype)

    @torch.no_grad()
    def encode_image(
        self,
        images: torch.Tensor,
        *,
        dense_mode: str | None = None,
        naclip_std: float | None = None,
        pos_embed: PosEmbedRule | dict | None = None,
        mode_options: Mapping[str, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(global [B, D], dense [B, h, w, D]), L2-normalised; the mode/options default to the backbone's."""
        mode = check_dense_mode(dense_mode or self.dense_mode)
        rule = as_pos_rule(pos_embed) if pos_embed is not None else self.pos_embed
        options = {**(self.mode_options if mode_options is None else mode_options),
                   "naclip_std": float(naclip_std if naclip_std is not None else self.naclip_std)}
        b, _, height, width = images.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"{self.name}: input {height}x{width} is not a multiple of the patch size {p}")
        grid = (height // p, width // p)
        with self._autocast():
            pooled, tokens = run_tower(self.model.visual, images.to(self.device), grid, mode, rule, options, self._pos_cache)
        pooled = F.normalize(pooled.float(), dim=-1)
        dense = F.normalize(tokens.float(), dim=-1).reshape(b, grid[0], grid[1], -1)
        return pooled, dense

    # ------------------------------------------------------------------ text

    def _can_truncate(self) -> bool:
        m = self.model
        return (
            all(hasattr(m, name) for name in ("token_embedding", "positional_embedding", "transformer", "ln_final"))
            and getattr(m, "text_pool_type", None) == "argmax"
            and getattr(m, "attn_mask", None) is not None
        )

    @torch.no_grad()
    def encode_text(self, texts: list[str], batch_size: int = 256, truncate: bool = True) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[start : start + batch_size]).to(self.device)
            with self._autocast():
                if truncate and self._can_truncate():
                    feats = self._encode_truncated(tokens)
                else:
                    feats = self.model.encode_text(tokens)
            out.append(F.normalize(feats.float(), dim=-1))
        if not out:
            return torch.zeros(0, self.embed_dim, device=self.device)
        return torch.cat(out)

    def _encode_truncated(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's CLIP.encode_text steps on tokens[:, :L], L = last EOT position + 1 (causal: exact)."""
        m = self.model
        eot = tokens.argmax(dim=-1)
        length = int(eot.max().item()) + 1
        tokens = tokens[:, :length]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        proj = m.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj

    def text_parameters(self) -> Iterable[torch.Tensor]:
        for name, tensor in self.model.state_dict().items():
            if not name.startswith("visual."):
                yield tensor

    def describe(self) -> dict[str, Any]:
        return {
            "backbone": self.name,
            "arch": self.arch,
            "pretrained": self.pretrained,
            "random_weights": self.pretrained is None,
            "weights_sha256": self.weights_sha256,
            "quick_gelu_forced": self.quick_gelu_forced,
            "dense_mode": self.dense_mode,
            "naclip_std": self.naclip_std if self.dense_mode == "naclip" else None,
            **({"mode_options": dict(self.mode_options)} if self.mode_options else {}),  # absent when none: old records hold
            "pos_embed": self.pos_embed.model_dump(),
            "patch_size": self.patch_size,
            "native_size": self.native_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "precision": self.precision,
        }


def check_dense_mode(mode: str) -> str:
    """The mode name if registered, else a ConfigError listing the registered dense modes."""
    if mode not in DENSE_MODES:
        raise ConfigError(f"unknown dense mode '{mode}': use one of {', '.join(DENSE_MODES.names())} (--dense-mode)")
    return mode


def as_pos_rule(value: PosEmbedRule | dict) -> PosEmbedRule:
    """A preset's `pos_embed` entry as a rule (ConfigError naming the bad field)."""
    if isinstance(value, PosEmbedRule):
        return value
    try:
        return PosEmbedRule.model_validate(value)
    except Exception as exc:
        raise ConfigError(f"preset key 'pos_embed' {value!r}: {exc}") from None


class DenseModeView:
    """An open_clip backbone seen through one dense mode: shares the model, text cache and every attribute.

    Only `encode_image` (this view's mode and options), `dense_mode` and `describe` differ, so a
    method holding a view never changes what another method sees on the same backbone.
    """

    def __init__(self, base: OpenClipBackbone, mode: str, *, naclip_std: float | None = None,
                 pos_embed: PosEmbedRule | dict | None = None, mode_options: Mapping[str, Any] | None = None) -> None:
        base = base.base if isinstance(base, DenseModeView) else base
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "dense_mode", check_dense_mode(mode))
        object.__setattr__(self, "naclip_std", float(naclip_std) if naclip_std is not None else base.naclip_std)
        object.__setattr__(self, "pos_embed", as_pos_rule(pos_embed) if pos_embed is not None else base.pos_embed)
        object.__setattr__(self, "mode_options", dict(mode_options) if mode_options is not None else base.mode_options)

    def __getattr__(self, name: str):
        return getattr(self.base, name)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"a dense-mode view is read-only; set '{name}' on its backbone or make a new view")

    def with_mode(self, mode: str, **options):
        return DenseModeView(self.base, mode, **options)

    def encode_image(self, images: torch.Tensor, **overrides):
        kwargs = {"dense_mode": self.dense_mode, "naclip_std": self.naclip_std, "pos_embed": self.pos_embed,
                  "mode_options": self.mode_options}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return self.base.encode_image(images, **kwargs)

    def describe(self) -> dict[str, Any]:
        info = self.base.describe()
        info.update(
            dense_mode=self.dense_mode,
            naclip_std=self.naclip_std if self.dense_mode == "naclip" else None,
            pos_embed=self.pos_embed.model_dump(),
        )
        info.pop("mode_options", None)
        if self.mode_options:
            info["mode_options"] = dict(self.mode_options)
        return info


def convert_torchscript_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """One-time conversion of an OpenAI TorchScript CLIP archive to a safetensors state dict.

    torch.jit.load reads the TorchScript archive without unpickling arbitrary Python objects; the
    result loads offline with `--pretrained dst.safetensors` (use the `-quickgelu` architecture).
    """
    archive = torch.jit.load(str(src), map_location="cpu")
    # OpenAI's archives carry these as tensors; scripted open_clip models also save the causal mask
    skip = {"input_resolution", "context_length", "vocab_size", "attn_mask"}
    state = {k: v.contiguous() for k, v in archive.state_dict().items() if k.rsplit(".", 1)[-1] not in skip}
    with atomic_path(dst) as tmp:
        save_file(state, str(tmp))
    return Path(dst)
