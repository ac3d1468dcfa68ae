"""The last ViT block of an open_clip image tower, recomputed in one of the training-free dense modes.

Built from the block's own modules (ln_1, attn.in_proj_weight/bias, attn.out_proj, ln_2, mlp,
ls_1/ls_2); the class token always takes the ordinary path so the pooled image embedding is the
model's normal one, while the patch tokens take the chosen mode (protocols.md section 3):

- vanilla:   the block unchanged.
- maskclip:  out_proj(v); residual and FFN dropped.
- sclip:     (softmax(q q^T s) + softmax(k k^T s)) v, out_proj; residual and FFN kept.
- clearclip: softmax(q q^T s) v, out_proj; residual and FFN dropped.
- naclip:    softmax(k k^T s + G) v, out_proj, G a Gaussian over the patch grid; residual and FFN dropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DENSE_MODES = ("vanilla", "maskclip", "sclip", "clearclip", "naclip")


def gaussian_bias(grid: tuple[int, int], std: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """[1+h*w, 1+h*w] additive attention bias: exp(-d^2 / (2 std^2)) between patches, 0 for the class token."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    coords = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1).to(torch.float64)
    dist2 = torch.cdist(coords, coords).pow(2)
    bias = torch.zeros(h * w + 1, h * w + 1, dtype=torch.float64, device=device)
    bias[1:, 1:] = torch.exp(-dist2 / (2.0 * std * std))
    return bias.to(dtype)


class DenseLastBlock(nn.Module):
    """Wraps `resblocks[-1]`; `grid` must be set (by the backbone) before each forward in naclip mode."""

    def __init__(self, block: nn.Module, mode: str, naclip_std: float = 5.0) -> None:
        super().__init__()
        if mode not in DENSE_MODES:
            raise ValueError(f"unknown dense mode '{mode}': use one of {', '.join(DENSE_MODES)}")
        attn = getattr(block, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention) or not getattr(attn, "_qkv_same_embed_dim", False):
            raise ValueError(
                f"dense mode '{mode}' needs a last block with a plain nn.MultiheadAttention "
                f"(found {type(attn).__name__}); this open_clip architecture is not supported"
            )
        self.block = block
        self.mode = mode
        self.naclip_std = naclip_std
        self.grid: tuple[int, int] | None = None
        self._bias_cache: dict[tuple, torch.Tensor] = {}

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        heads = self.block.attn.num_heads
        return t.reshape(b, n, heads, c // heads).transpose(1, 2)  # [B, H, N, hd]

    @staticmethod
    def _merge(t: torch.Tensor) -> torch.Tensor:
        b, h, n, d = t.shape
        return t.transpose(1, 2).reshape(b, n, h * d)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block.ls_2(self.block.mlp(self.block.ln_2(x)))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "vanilla":
            return self.block(x, attn_mask=attn_mask)
        batch_first = getattr(self.block.attn, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        out = self._dense(x)
        return out if batch_first else out.transpose(0, 1)

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        blk = self.block
        attn = blk.attn
        y = blk.ln_1(x)
        q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        scale = q.shape[-1] ** -0.5

        # class token: the ordinary block (global embedding unchanged)
        cls_attn = torch.softmax((q[:, :, :1] @ k.transpose(-2, -1)) * scale, dim=-1) @ v
        cls = x[:, :1] + blk.ls_1(attn.out_proj(self._merge(cls_attn)))
        cls = self._ffn(cls)

        if self.mode == "maskclip":
            patches = attn.out_proj(self._merge(v))
        elif self.mode == "sclip":
            a = torch.softmax((q @ q.transpose(-2, -1)) * scale, dim=-1)
            a = a + torch.softmax((k @ k.transpose(-2, -1)) * scale, dim=-1)
            patches = self._ffn(x + blk.ls_1(attn.out_proj(self._merge(a @ v))))
        elif self.mode == "clearclip":
            a = torch.softmax((q @ q.transpose(-2, -1)) * scale, dim=-1)
            patches = attn.out_proj(self._merge(a @ v))
        else:  # naclip
            if self.grid is None:
                raise RuntimeError("naclip: the patch grid was not set before the forward")
            key = (self.grid, x.device, x.dtype)
            if key not in self._bias_cache:
                self._bias_cache = {key: gaussian_bias(self.grid, self.naclip_std, x.device, x.dtype)}
            a = torch.softmax((k @ k.transpose(-2, -1)) * scale + self._bias_cache[key], dim=-1)
            patches = attn.out_proj(self._merge(a @ v))
        return torch.cat([cls, patches[:, 1:]], dim=1)
