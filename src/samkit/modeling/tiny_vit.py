"""TinyViT image encoder (MobileSAM's ``vit_t``): convolutional first stage, windowed
attention stages with learned relative-offset biases, and SAM's neck.

Input ``(B, 3, S, S)`` normalised, padded images; output ``(B, out_chans, S / 16, S / 16)``
embeddings, the grid SAM's prompt encoder and mask decoder expect. Stage ``i`` runs at
``S / 4 / 2**i`` for the first stages; the patch merging into the last stage keeps the
resolution, so the output stride is 16 like SAM's ViT. Parameter names follow MobileSAM's
``mobile_sam.pt`` so its checkpoints load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samkit.modeling.common import LayerNorm2d


class ConvBN(nn.Sequential):
    """Convolution without bias followed by batch norm (``c``, ``bn``)."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel, stride, padding,
                                       groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: ``(B, 3, S, S)`` -> ``(B, D, S/4, S/4)``."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 3, 2, 1), nn.GELU(),
                                 ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1, 3x3 depthwise (stride ``stride``), 1x1 convolutions between stages; returns
    tokens ``(B, H' * W', out_dim)``."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.act = nn.GELU()
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


def offset_index(window: int) -> torch.Tensor:
    """``(N, N)`` index, ``N = window**2``, of the offset ``(|dy|, |dx|)`` between every pair
    of positions in a window, numbered in order of first appearance (row-major pairs)."""
    points = [(y, x) for y in range(window) for x in range(window)]
    numbers: dict[tuple[int, int], int] = {}
    rows = []
    for y1, x1 in points:
        rows.append([numbers.setdefault((abs(y1 - y2), abs(x1 - x2)), len(numbers))
                     for y2, x2 in points])
    return torch.tensor(rows, dtype=torch.long)


class Attention(nn.Module):
    """Multi-head attention over ``(B, N, C)`` window tokens, with a pre-norm and a learned
    bias per head and relative offset (``attention_biases``)."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", offset_index(window), persistent=False)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, N, C)`` tokens -> queries, keys, values ``(B, heads, N, head_dim)``."""
        b, n, _ = x.shape
        # Per head, the projection holds the head's query, key and value one after another.
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = (t.permute(0, 2, 1, 3) for t in qkv.split(self.head_dim, dim=3))
        return q, k, v

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, heads, N, head_dim)`` -> the projected ``(B, N, C)``."""
        b, _, n, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        return self.merge_heads(attn.softmax(dim=-1) @ v)


class MLP(nn.Module):
    """Pre-norm MLP (``norm``, ``fc1``, GELU, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (zero-padded windows), a depthwise "local" convolution, an MLP."""

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int,
                 mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2,
                                 groups=dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, H * W, C)`` tokens of the ``resolution`` grid."""
        h, w = self.resolution
        b, n, c = x.shape
        ws = self.window
        if h == ws and w == ws:
            y = self.attn(x)
        else:
            grid = x.view(b, h, w, c)
            pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
            if pad_h or pad_w:
                grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))
            hp, wp = h + pad_h, w + pad_w
            windows = grid.view(b, hp // ws, ws, wp // ws, ws, c).transpose(2, 3)
            y = self.attn(windows.reshape(-1, ws * ws, c))
            y = y.view(b, hp // ws, wp // ws, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
            if pad_h or pad_w:
                y = y[:, :h, :w].contiguous()
            y = y.view(b, n, c)
        x = x + y
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w))
        x = x.view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks on the ``(B, C, H, W)`` map, then patch merging."""

    def __init__(self, dim: int, depth: int, expand_ratio: float,
                 downsample: PatchMerging) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """A stage of :class:`TinyViTBlock` on tokens, then patch merging (but the last)."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int,
                 window: int, mlp_ratio: float, local_conv_size: int,
                 downsample: PatchMerging | None) -> None:
        super().__init__()
        self.resolution = resolution
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window, mlp_ratio, local_conv_size)
            for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is None:
            return x
        h, w = self.resolution
        return self.downsample(x.transpose(1, 2).reshape(x.shape[0], -1, h, w))


class TinyViT(nn.Module):
    """TinyViT with SAM's neck.

    Args:
        img_size: Side of the square input (1024 for MobileSAM).
        embed_dims: Width of each stage.
        depths: Blocks per stage (stage 0 is convolutional).
        num_heads: Attention heads per stage (stage 0's entry is unused).
        window_sizes: Attention window per stage (stage 0's entry is unused).
        mlp_ratio: MLP hidden width over the stage width.
        mbconv_expand_ratio: Hidden width of stage 0's MBConv blocks over its width.
        local_conv_size: Kernel of the depthwise convolution in attention blocks.
        out_chans: Embedding channels (the prompt embedding width, 256 for SAM).
    """

    def __init__(self, img_size: int = 1024,
                 embed_dims: tuple[int, ...] = (64, 128, 160, 320),
                 depths: tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: tuple[int, ...] = (2, 4, 5, 10),
                 window_sizes: tuple[int, ...] = (7, 7, 14, 7),
                 mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0,
                 local_conv_size: int = 3, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(3, embed_dims[0])
        n = len(embed_dims)
        res = img_size // 4
        layers: list[nn.Module] = []
        for i in range(n):
            last = i == n - 1
            # merging halves the grid, except into the last stage (output stride 16)
            stride = 1 if i == n - 2 else 2
            down = None if last else PatchMerging(embed_dims[i], embed_dims[i + 1], stride)
            if i == 0:
                assert down is not None
                layers.append(ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, down))
            else:
                layers.append(AttentionStage(embed_dims[i], (res, res), depths[i], num_heads[i],
                                             window_sizes[i], mlp_ratio, local_conv_size, down))
            if not last:
                res = res // stride if stride == 1 else (res + 1) // 2
        self.layers = nn.ModuleList(layers)
        self.grid = res
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        return self.neck(x.transpose(1, 2).reshape(b, c, self.grid, self.grid))
