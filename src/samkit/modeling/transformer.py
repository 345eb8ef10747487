"""Two-way transformer: prompt tokens and image embedding attend to each other."""

from __future__ import annotations

import math

import torch
from torch import nn

from samkit.modeling.common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention with optional down-projection of the internal width.

    Inputs are ``(B, N, C)`` token tensors; the output has the query's shape. A batch of 1 on
    either side broadcasts against the other side's batch.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal = embedding_dim // downsample_rate
        if internal % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} must divide embedding_dim // downsample_rate={internal}"
            )
        self.num_heads = num_heads
        self.internal_dim = internal
        self.q_proj = nn.Linear(embedding_dim, internal)
        self.k_proj = nn.Linear(embedding_dim, internal)
        self.v_proj = nn.Linear(embedding_dim, internal)
        self.out_proj = nn.Linear(internal, embedding_dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, internal)`` -> ``(B, heads, N, internal / heads)``."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attend ``q`` ``(B, Nq, C)`` to ``k``/``v`` ``(B, Nk, C)``; returns ``(B, Nq, C)``."""
        return self.attend(
            self.split_heads(self.q_proj(q)),
            self.split_heads(self.k_proj(k)),
            self.split_heads(self.v_proj(v)),
        )

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over already projected heads ``(B, heads, N, c)``, then the output
        projection: ``(B, Nq, C)``."""
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        out = attn.softmax(dim=-1) @ v
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayAttentionBlock(nn.Module):
    """Self-attention on tokens, token->image, MLP on tokens, image->token cross-attention."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block over prompt tokens ``queries`` ``(B, N, C)`` and image tokens ``keys``
        ``(B, H*W, C)``, with their positional encodings added to queries and keys."""
        queries = self.token_self_attention(queries, query_pe)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys

    def token_self_attention(self, queries: torch.Tensor, query_pe: torch.Tensor
                             ) -> torch.Tensor:
        """Self-attention on the prompt tokens ``(B, N, C)``, then ``norm1``; the first block
        attends without positional encoding and without a residual."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        return self.norm1(queries)


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayAttentionBlock` plus a final token->image attention."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                attention_downsample_rate,
                skip_first_layer_pe=i == 0,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Args:
            image_embedding: ``(B, C, H, W)``.
            image_pe: ``(B, C, H, W)`` positional encoding of the image grid.
            point_embedding: ``(B, N, C)`` prompt tokens.

        Returns:
            Processed tokens ``(B, N, C)`` and image features ``(B, H*W, C)``.
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
