"""The image tower of an open_clip ViT run for dense features, without changing the model.

Only public open_clip modules are used (conv1, class_embedding, positional_embedding, ln_pre,
transformer.resblocks, ln_post, proj, pool_type, final_ln_after_pool): the blocks run as they are
up to the last one, whose patch tokens are recomputed by a registered dense mode
(dense_modes.py) while the global vector follows open_clip's own pooling. The patch positional
embedding is interpolated to the input's grid by a `PosEmbedRule` (data: presets name the peer's
rule, so results match the peer's released code).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from .dense_modes import BUILTIN_DENSE_MODES, DENSE_MODES, block_parts, dense_rule

__all__ = ["BUILTIN_DENSE_MODES", "DENSE_MODES", "PosEmbedRule", "interpolate_pos_embed", "run_tower"]


class PosEmbedRule(BaseModel):
    """How the [1+G, C] positional table is resized to another patch grid.

    - by "size": F.interpolate to the grid size (torch maps coordinates by native/grid).
    - by "scale_factor": F.interpolate with scale_factor (grid + offset) / native per axis, which
      torch also uses to map coordinates; SCLIP, ClearCLIP and NACLIP do this with offset 0.1.
    - keep_if_same_count: a grid with the native number of patches keeps the table as it is
      (the peers only interpolate when the token count differs).
    The interpolation runs in the table's dtype on the [1, C, g, g] patch part; the class position is kept.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["bicubic", "bilinear", "nearest", "area"] = "bicubic"
    align_corners: bool | None = False
    antialias: bool = False
    by: Literal["size", "scale_factor"] = "size"
    offset: float = 0.0
    keep_if_same_count: bool = False


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int], rule: PosEmbedRule) -> torch.Tensor:
    """[1+G, C] table (square native grid) -> [1+h*w, C] for grid (h, w) by `rule`."""
    n = pos.shape[0] - 1
    native = math.isqrt(n)
    if native * native != n:
        raise ValueError(f"positional embedding with {n} patch positions is not a square grid")
    h, w = grid
    if (h, w) == (native, native) or (rule.keep_if_same_count and h * w == n):
        return pos
    table = pos[1:].reshape(1, native, native, -1).permute(0, 3, 1, 2)
    align = rule.align_corners if rule.mode in ("bilinear", "bicubic") else None
    if rule.by == "size":
        out = F.interpolate(table, size=(h, w), mode=rule.mode, align_corners=align, antialias=rule.antialias)
    else:
        factor = ((h + rule.offset) / native, (w + rule.offset) / native)
        out = F.interpolate(table, scale_factor=factor, mode=rule.mode, align_corners=align, antialias=rule.antialias,
                            recompute_scale_factor=False)
        if out.shape[-2:] != (h, w):
            raise ValueError(f"pos_embed rule {rule.model_dump()} gives a {tuple(out.shape[-2:])} grid for {grid}")
    return torch.cat([pos[:1], out.permute(0, 2, 3, 1).reshape(h * w, -1)])


def _pool_type(visual) -> str:
    pool = getattr(visual, "pool_type", None)
    if pool is None:  # open_clip releases before pool_type
        pool = "avg" if getattr(visual, "global_average_pool", False) else "tok"
    return pool


def _pool(visual, x: torch.Tensor) -> torch.Tensor:
    """open_clip's global vector from the final tokens: pool_type, then ln_post before or after it."""
    pool = _pool_type(visual)
    if pool not in ("tok", "avg"):
        raise ValueError(f"open_clip pool_type '{pool}' gives no single image vector; dense features need 'tok' or 'avg'")

    def take(t: torch.Tensor) -> torch.Tensor:
        return t[:, 0] if pool == "tok" else t[:, 1:].mean(dim=1)

    if getattr(visual, "final_ln_after_pool", False):
        return visual.ln_post(take(x))
    return take(visual.ln_post(x))


def run_tower(
    visual,
    images: torch.Tensor,
    grid: tuple[int, int],
    mode: str,
    pos_rule: PosEmbedRule,
    options: Mapping[str, Any],
    pos_cache: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [B, C'] as open_clip's encode_image, dense tokens [B, h*w, C'] after ln_post and proj), not normalised."""
    rule = dense_rule(mode)
    b = images.shape[0]
    x = visual.conv1(images)
    x = x.reshape(b, x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(b, 1, -1)
    key = (grid, pos_rule, visual.positional_embedding.dtype, visual.positional_embedding.device)
    if pos_cache is not None and key in pos_cache:
        pos = pos_cache[key]
    else:
        pos = interpolate_pos_embed(visual.positional_embedding.detach(), grid, pos_rule)
        if pos_cache is not None:
            pos_cache[key] = pos
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + pos.to(x.dtype))

    blocks = list(visual.transformer.resblocks)
    batch_first = getattr(blocks[0].attn, "batch_first", False) if hasattr(blocks[0], "attn") else True
    if not batch_first:
        x = x.transpose(0, 1)
    for blk in blocks[:-1]:
        x = blk(x)
    last = blocks[-1]
    if mode == "vanilla" or _pool_type(visual) != "tok":
        final = last(x)  # the ordinary last block, as open_clip runs it
        final = final if batch_first else final.transpose(0, 1)
    else:
        final = None
    if not batch_first:
        x = x.transpose(0, 1)

    if mode == "vanilla":
        tokens = final
    else:
        parts = block_parts(last, x, grid, options)
        tokens = rule(parts)
        if final is None:  # 'tok' pooling needs only the class row of the ordinary block
            final = parts.plain(slice(0, 1))
    pooled = _pool(visual, final)
    dense = visual.ln_post(tokens[:, 1:])
    if visual.proj is not None:
        pooled = pooled @ visual.proj
        dense = dense @ visual.proj
    return pooled, dense
