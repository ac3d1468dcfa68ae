"""Dense modes: how the patch tokens of a ViT's last block are recomputed (docs/methods.md, "Dense modes").

A dense mode is a registered rule `rule(parts: BlockParts) -> Tensor [B, N, C]` (the class row
of its output is ignored): the tokens that go on to ln_post and the projection. The class token
always takes the ordinary block, so the global image vector is the model's own. A new mode is one
module outside the package:

    from llmseg.stage2.registry_tables import DENSE_MODES

    @DENSE_MODES.register("mine")
    def mine(parts):
        return parts.out_proj(parts.softmax(parts.q @ parts.k.transpose(-2, -1) * parts.scale) @ parts.v)

A mode with settings of its own registers their pydantic model, `config=MineSettings`; users set them
with `--mode-option NAME=VALUE` (MethodConfig.mode_options), checked against that model before
anything is built (`methods.presets.mode_settings`), and the rule reads them from `parts.options`.

Built-in modes, each as its peer's released code computes it:

- vanilla:   the block unchanged.
- maskclip:  out_proj(v); residual and FFN dropped.
- sclip:     (softmax(q q^T s) + softmax(k k^T s)) v, out_proj; residual and FFN kept (SCLIP).
- clearclip: softmax(q q^T s) v, out_proj; residual and FFN dropped (ClearCLIP, ignore_residual).
- naclip:    softmax(k k^T s + G) v, out_proj, G a Gaussian over the patch grid; residual and FFN
             dropped (NACLIP, arch 'reduced', attn 'naclip').
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from llmseg.stage2.registry_tables import DENSE_MODES

DenseRule = Callable[["BlockParts"], torch.Tensor]

BUILTIN_DENSE_MODES = ("vanilla", "maskclip", "sclip", "clearclip", "naclip")


@dataclass
class BlockParts:
    """The last block's input and its attention projections, in batch-first layout."""

    block: Any  # open_clip's ResidualAttentionBlock (untyped; an nn.Module): ln_1, attn, ls_1, ln_2, mlp, ls_2
    x: torch.Tensor  # [B, N, C] the block's input, class token first
    q: torch.Tensor  # [B, H, N, d]
    k: torch.Tensor
    v: torch.Tensor
    scale: float  # d ** -0.5
    grid: tuple[int, int]  # (rows, cols) of patches
    options: Mapping[str, Any] = field(default_factory=dict)  # e.g. naclip_std

    @staticmethod
    def softmax(a: torch.Tensor) -> torch.Tensor:
        return torch.softmax(a, dim=-1)

    def out_proj(self, heads: torch.Tensor) -> torch.Tensor:
        """[B, H, N, d] -> merged heads -> the attention's output projection [B, N, C]."""
        b, h, n, d = heads.shape
        return self.block.attn.out_proj(heads.transpose(1, 2).reshape(b, n, h * d))

    def residual(self, attn_out: torch.Tensor) -> torch.Tensor:
        return self.x + self.block.ls_1(attn_out)

    def ffn(self, t: torch.Tensor) -> torch.Tensor:
        return t + self.block.ls_2(self.block.mlp(self.block.ln_2(t)))

    def plain(self, rows: slice = slice(None)) -> torch.Tensor:
        """The ordinary block's output for the token rows `rows` (queries restricted, keys all)."""
        q = self.q[:, :, rows]
        a = self.softmax((q @ self.k.transpose(-2, -1)) * self.scale)
        b, h, n, d = q.shape
        out = self.block.attn.out_proj((a @ self.v).transpose(1, 2).reshape(b, n, h * d))
        return self.ffn(self.x[:, rows] + self.block.ls_1(out))


def block_parts(block: Any, x: torch.Tensor, grid: tuple[int, int], options: Mapping[str, Any]) -> BlockParts:
    """q, k, v of the block's attention (open_clip's fused in_proj) for a batch-first input."""
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention) or getattr(attn, "in_proj_weight", None) is None:
        raise ValueError(
            f"dense modes need a last block with a plain nn.MultiheadAttention (found {type(attn).__name__}); "
            "this open_clip architecture is not supported"
        )
    y = block.ln_1(x)
    q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    b, n, c = q.shape
    heads = attn.num_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, n, heads, c // heads).transpose(1, 2)

    return BlockParts(block, x, split(q), split(k), split(v), (c // heads) ** -0.5, (grid[0], grid[1]), options)


@DENSE_MODES.register("vanilla")
def vanilla(parts: BlockParts) -> torch.Tensor:
    """The last block unchanged."""
    return parts.plain()


@DENSE_MODES.register("maskclip")
def maskclip(parts: BlockParts) -> torch.Tensor:
    """MaskCLIP: each token's own value, out_proj; no residual, no FFN."""
    return parts.out_proj(parts.v)


@DENSE_MODES.register("sclip")
def sclip(parts: BlockParts) -> torch.Tensor:
    """SCLIP's correlative self-attention (q-q plus k-k); residual and FFN kept."""
    s = parts.scale
    a = parts.softmax((parts.q @ parts.q.transpose(-2, -1)) * s) + parts.softmax((parts.k @ parts.k.transpose(-2, -1)) * s)
    return parts.ffn(parts.residual(parts.out_proj(a @ parts.v)))


@DENSE_MODES.register("clearclip")
def clearclip(parts: BlockParts) -> torch.Tensor:
    """ClearCLIP: q-q self-attention; residual and FFN dropped."""
    a = parts.softmax((parts.q @ parts.q.transpose(-2, -1)) * parts.scale)
    return parts.out_proj(a @ parts.v)


@lru_cache(maxsize=32)
def _naclip_window(rows: int, cols: int, std: float) -> torch.Tensor:
    """NACLIP's window: a (2 rows - 1) x (2 cols - 1) Gaussian, exp(-(dy^2 + dx^2) / (2 std^2)), float32.

    NACLIP builds it in float32 from linspace'd offsets scaled by 1 / (std sqrt 2); the same steps
    here keep its rounding.
    """
    c = 1.0 / (std * math.sqrt(2.0))
    axes = []
    for dim in (2 * rows - 1, 2 * cols - 1):
        start = -(dim - 1) / 2.0
        axes.append(torch.linspace(start * c, (start + dim - 1) * c, steps=dim, dtype=torch.float32))
    yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.exp(-(yy**2 + xx**2))


def naclip_bias(grid: tuple[int, int], std: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """[1+h*w, 1+h*w] attention addition: between patches p, r the window value at offset r - p; 0 on the class row/column.

    The window spans every offset of the grid, so each patch sees the whole (non-square) grid,
    as NACLIP's same-padded convolution of one-hot maps with the window gives.
    """
    h, w = grid
    window = _naclip_window(h, w, float(std))
    ys = torch.arange(h).repeat_interleave(w)
    xs = torch.arange(w).repeat(h)
    dy = ys[None, :] - ys[:, None] + (h - 1)
    dx = xs[None, :] - xs[:, None] + (w - 1)
    bias = torch.zeros(h * w + 1, h * w + 1, dtype=torch.float32)
    bias[1:, 1:] = window[dy, dx]
    return bias.to(device=device, dtype=dtype)


class NaclipSettings(BaseModel):
    """NACLIP's own setting: `--mode-option std=3` is the same as `--naclip-std 3`."""

    model_config = ConfigDict(extra="forbid")

    std: float | None = Field(None, gt=0, le=1000, allow_inf_nan=False,
                              description="Gaussian neighbourhood std, in patches (default: the preset's, else 5.0).")


@DENSE_MODES.register("naclip", config=NaclipSettings)
def naclip(parts: BlockParts) -> torch.Tensor:
    """NACLIP: k-k attention plus a Gaussian neighbourhood bias (std `naclip_std`, 5); residual and FFN dropped."""
    std = float(parts.options.get("naclip_std") or 5.0)
    bias = naclip_bias(parts.grid, std, parts.x.device, parts.x.dtype)
    a = parts.softmax((parts.k @ parts.k.transpose(-2, -1)) * parts.scale + bias)
    return parts.out_proj(a @ parts.v)


def dense_rule(mode: str) -> DenseRule:
    """The registered rule of a mode (ConfigError listing the known modes when unknown)."""
    return DENSE_MODES.get(mode)


