"""Attention variants for the ViT image encoder and the two-way transformer.

- :class:`InPlaceAttention` (exact, on by default): at inference the relative-position terms
  are added to, and the softmax written into, the attention matrix itself: ViT-H's global
  blocks hold one 1 GB matrix instead of three.
- :class:`FusedAttention` / :class:`FusedTokenAttention` (opt-in, not bit-exact):
  ``scaled_dot_product_attention`` with the relative-position bias as its additive mask,
  global blocks optionally in chunks of query rows.
- :class:`FusedTinyViTAttention` (opt-in, not bit-exact): the same for TinyViT's window
  attention, its per-offset biases gathered straight into the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samkit.accel.layers import tracks_grad
from samkit.modeling import image_encoder as vit
from samkit.modeling import tiny_vit
from samkit.modeling import transformer as two_way


class InPlaceAttention(vit.Attention):
    """The plain attention, with the bias sums and the softmax done in place at inference.

    The softmax runs row by row and reads each row before writing it, so writing into its
    own input gives the same values as the out-of-place call (checked bit for bit by the
    parity tests)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tracks_grad(x, self):
            return super().forward(x)
        b, h, w, _ = x.shape
        q, k, v = self.split_heads(x)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            bias_h, bias_w = vit.decomposed_rel_pos_bias(
                q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w)
            )
            attn.view(b * self.num_heads, h, w, h, w).add_(bias_h).add_(bias_w)
        attn = torch.softmax(attn, dim=-1, out=attn)
        return self.merge_heads(attn @ v, b, h, w)


class FusedAttention(vit.Attention):
    """``scaled_dot_product_attention`` carrying the relative-position bias as its mask.

    ``query_chunk_rows`` (set by :func:`samkit.accel.use_fused_attention`): process queries
    this many grid rows at a time, so a global block's ``(N, N)`` bias is never held whole.
    """

    query_chunk_rows: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        q, k, v = self.split_heads(x)
        if not self.use_rel_pos:
            return self.merge_heads(F.scaled_dot_product_attention(q, k, v), b, h, w)
        # (B*heads, h, w, h) and (B*heads, h, w, w): small; only their sum is (N, N). Made
        # contiguous so that the sum comes out row-major and its reshape below is a view
        # (einsum's permuted output would make the (rows*w, N) mask a second copy).
        bias_h, bias_w = (t.contiguous() for t in vit.decomposed_rel_pos_bias(
            q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w)))
        rows = self.query_chunk_rows or h
        outs = []
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            mask = (bias_h[:, r0:r1] + bias_w[:, r0:r1]).reshape(q.shape[0], (r1 - r0) * w, h * w)
            outs.append(F.scaled_dot_product_attention(q[:, r0 * w : r1 * w], k, v,
                                                       attn_mask=mask))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return self.merge_heads(out, b, h, w)


class FusedTokenAttention(two_way.Attention):
    """Two-way transformer attention through ``scaled_dot_product_attention``; a batch-1 side
    (a shared image side) is broadcast against the other."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b = max(q.shape[0], k.shape[0])
        out = F.scaled_dot_product_attention(
            q.expand(b, -1, -1, -1), k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        )
        _, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


__all__ = ["FusedAttention", "FusedTokenAttention", "InPlaceAttention", "tracks_grad"]


class FusedTinyViTAttention(tiny_vit.Attention):
    """TinyViT window attention through ``scaled_dot_product_attention``, the learned bias per
    head and offset gathered (``torch.gather``, no advanced indexing) into its ``(heads, N,
    N)`` additive mask on every call: nothing is cached, so loaded or trained biases are
    always the ones used."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        n = q.shape[2]
        idx = self.attention_bias_idxs.reshape(1, -1).expand(self.num_heads, -1)
        bias = self.attention_biases.gather(1, idx).view(self.num_heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                             scale=self.scale)
        return self.merge_heads(out)
