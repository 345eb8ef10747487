"""Two-way transformer: prompt tokens and image embedding attend to each other."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
        self.use_sdpa = False  # opt-in fused kernel (see samkit.accel)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def project(self, x: torch.Tensor, which: str) -> torch.Tensor:
        """``x`` through the ``which`` ("q", "k" or "v") projection, split into heads
        ``(B, heads, N, C / heads)``."""
        return self._split(getattr(self, f"{which}_proj")(x))

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        heads: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend ``q`` to ``k``/``v``. ``heads`` may hold already projected inputs (from
        :meth:`project`) by name; those inputs are then not used."""
        heads = heads or {}
        q = heads["q"] if "q" in heads else self.project(q, "q")
        k = heads["k"] if "k" in heads else self.project(k, "k")
        v = heads["v"] if "v" in heads else self.project(v, "v")
        if self.use_sdpa:
            b = max(q.shape[0], k.shape[0])  # a batch-1 side broadcasts (shared image side)
            out = F.scaled_dot_product_attention(
                q.expand(b, -1, -1, -1), k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
            )
        else:
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
        image_cache: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block. ``image_cache``: a dict, empty at first, that keeps the prompt-
        independent image side (``keys`` of batch 1) across calls on the same image."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        if image_cache is not None and not image_cache:
            k = keys + key_pe
            image_cache.update(
                k=k,
                t2i_k=self.cross_attn_token_to_image.project(k, "k"),
                t2i_v=self.cross_attn_token_to_image.project(keys, "v"),
                i2t_q=self.cross_attn_image_to_token.project(k, "q"),
                keys=keys.contiguous(),
            )
        if image_cache is not None:
            k = image_cache["k"]
            t2i = {"k": image_cache["t2i_k"], "v": image_cache["t2i_v"]}
            i2t = {"q": image_cache["i2t_q"]}
            keys = image_cache["keys"]
        else:
            k = keys + key_pe
            t2i, i2t = {}, {}
        q = queries + query_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys, t2i))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        # keys may be a token-major view of a channel-major embedding (first block): the
        # projections above read it as it is (their GEMMs, hence bits, depend on the layout),
        # but the residual sum is made token-major so the LayerNorm need not copy it.
        keys = self.norm4(keys.contiguous() + self.cross_attn_image_to_token(k, q, queries, i2t))
        return queries, keys


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
        image_cache: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Args:
            image_embedding: ``(B, C, H, W)``.
            image_pe: ``(B, C, H, W)`` positional encoding of the image grid.
            point_embedding: ``(B, N, C)`` prompt tokens.
            image_cache: With a batch-1 (shared) image side, a dict that the first block
                fills on the first call and reuses on later calls for the same image and
                positional encoding (prompt chunks). None: compute everything.

        Returns:
            Processed tokens ``(B, N, C)`` and image features ``(B, H*W, C)``.
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            cache = image_cache if i == 0 and keys.shape[0] == 1 else None
            queries, keys = layer(queries, keys, point_embedding, key_pe, cache)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
