"""ViT image encoder: windowed + global attention with decomposed relative positions.

Input ``(B, 3, S, S)`` normalised, padded images (S = ``img_size``); output
``(B, out_chans, S / patch, S / patch)`` embeddings (for SAM: ``(B, 256, 64, 64)``).
Internally tokens are kept as ``(B, H, W, C)`` grids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samkit.modeling.common import LayerNorm2d, MLPBlock


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split ``(B, H, W, C)`` into ``(B * nW, window, window, C)`` windows, zero-padding H and W.

    Returns:
        The windows and the padded size ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    pad_h = (window - h % window) % window
    pad_w = (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, win, win, C)`` -> ``(B, H, W, C)``."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def relative_position_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Gather relative-position embeddings for every (query, key) pair along one axis.

    Args:
        q_size: Number of query positions along the axis.
        k_size: Number of key positions along the axis.
        rel_pos: ``(L, C)`` learned table; linearly resampled if ``L != 2 * max(q, k) - 1``.

    Returns:
        ``(q_size, k_size, C)`` embeddings.
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        table = F.interpolate(rel_pos.t().unsqueeze(0), size=length, mode="linear")
        table = table.squeeze(0).t()
    else:
        table = rel_pos
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    index = (q_coords - k_coords) + (k_size - 1) * k_scale
    return table[index.long()]


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_hw: tuple[int, int],
    k_hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative-position bias of MViTv2, split into a height and a width term.

    Args:
        q: ``(B, q_h * q_w, C)`` queries (unscaled).
        rel_pos_h: ``(Lh, C)`` table for the height axis.
        rel_pos_w: ``(Lw, C)`` table for the width axis.
        q_hw: Query grid size ``(q_h, q_w)``.
        k_hw: Key grid size ``(k_h, k_w)``.

    Returns:
        The height term ``(B, q_h, q_w, k_h, 1)`` and the width term ``(B, q_h, q_w, 1, k_w)``
        to add, in that order, to the ``(B, q_h, q_w, k_h, k_w)`` attention logits (adding
        them one after the other keeps the official code's rounding).
    """
    q_h, q_w = q_hw
    k_h, k_w = k_hw
    table_h = relative_position_table(q_h, k_h, rel_pos_h)
    table_w = relative_position_table(q_w, k_w, rel_pos_w)
    grid_q = q.reshape(q.shape[0], q_h, q_w, q.shape[-1])
    bias_h = torch.einsum("bhwc,hkc->bhwk", grid_q, table_h)
    bias_w = torch.einsum("bhwc,wkc->bhwk", grid_q, table_w)
    return bias_h[:, :, :, :, None], bias_w[:, :, :, None, :]


class Attention(nn.Module):
    """Multi-head self-attention over a ``(B, H, W, C)`` grid with optional relative positions."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos=True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        q, k, v = self.split_heads(x)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            bias_h, bias_w = decomposed_rel_pos_bias(
                q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w)
            )
            grid = (b * self.num_heads, h, w, h, w)
            attn = (attn.view(grid) + bias_h + bias_w).view(b * self.num_heads, h * w, h * w)
        attn = attn.softmax(dim=-1)
        return self.merge_heads(attn @ v, b, h, w)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project a ``(B, H, W, C)`` grid to queries, keys and values, each
        ``(B * heads, H * W, C / heads)``."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        return q, k, v

    def merge_heads(self, out: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        """``(B * heads, H * W, C / heads)`` attention output -> projected ``(B, H, W, C)``."""
        out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4)
        return self.proj(out.reshape(b, h, w, -1))


class Block(nn.Module):
    """Transformer block; ``window_size > 0`` attends within windows, ``0`` globally."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        use_rel_pos: bool,
        window_size: int,
        input_size: tuple[int, int],
        norm_eps: float = 1e-6,
        mlp_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, mlp_dim or int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded, hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: ``(B, C, H, W)`` -> ``(B, H/p, W/p, D)``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """SAM's ViT backbone with a convolutional neck."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (),
        mlp_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
                mlp_dim=mlp_dim,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
