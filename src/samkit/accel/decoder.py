"""A mask decoder that does the image side of its first block once per image.

With one image embedding and one dense prompt for every prompt set (no ``mask_input``), the
first two-way block's image-side work (keys plus positional encoding, the token->image keys
and values, the image->token queries) does not depend on the prompts. The plain decoder
repeats the embedding once per prompt set and redoes that work each time;
:class:`SharedImageMaskDecoder` does it once (:class:`ImageSide`) and broadcasts it: the same
operations on the same values, so the same bits, and a third fewer FLOPs per prompt. The
first block's residual is also summed token-major (the plain code sums a channel-major view,
which its LayerNorm then copies). With a mask input per prompt set the side is computed per
chunk, the same way.

Prompt sets are also decoded a few at a time (``prompt_chunk``) on the device types listed in
``chunk_devices`` (the CPU), so each ``(chunk, H*W, C)`` activation stays in cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from samkit.modeling.mask_decoder import MaskDecoder


@dataclass(frozen=True)
class ImageSide:
    """The prompt-independent part of the decoder's first block: for one image and dense
    prompt (batch 1, shared by every prompt set) or one per prompt set (batch B).

    Attributes:
        keys: ``(1 or B, H*W, C)`` image tokens (embedding + dense prompt), token-major.
        key_pe: ``(1, H*W, C)`` their positional encoding.
        t2i_k: ``(1 or B, heads, H*W, c)`` token->image attention keys (of ``keys + key_pe``).
        t2i_v: ``(1 or B, heads, H*W, c)`` token->image attention values (of ``keys``).
        i2t_q: ``(1 or B, heads, H*W, c)`` image->token queries (of ``keys + key_pe``).
        hw: ``(H, W)`` of the embedding grid.
    """

    keys: torch.Tensor
    key_pe: torch.Tensor
    t2i_k: torch.Tensor
    t2i_v: torch.Tensor
    i2t_q: torch.Tensor
    hw: tuple[int, int]


class SharedImageMaskDecoder(MaskDecoder):
    """:class:`MaskDecoder` with the shared image side and prompt chunks (see module doc).

    Attributes:
        prompt_chunk: Prompt sets decoded at a time on ``chunk_devices``; None: all at once.
        chunk_devices: Device types (``"cpu"``) on which prompt sets are chunked; elsewhere
            (GPUs) the batch is taken whole.
    """

    prompt_chunk: int | None = 4
    chunk_devices: tuple[str, ...] = ("cpu",)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as :meth:`MaskDecoder.forward`."""
        self.check_batch(image_embeddings, sparse_prompt_embeddings)
        bs = sparse_prompt_embeddings.shape[0]
        step = bs
        if self.prompt_chunk and sparse_prompt_embeddings.device.type in self.chunk_devices:
            step = min(bs, self.prompt_chunk)
        shared = image_embeddings.shape[0] == 1 and dense_prompt_embeddings.shape[0] == 1
        side = self.image_side(image_embeddings, image_pe, dense_prompt_embeddings) if shared \
            else None

        def rows(x: torch.Tensor, i: int) -> torch.Tensor:
            return x if x.shape[0] == 1 else x[i : i + step]

        parts = []
        for i in range(0, bs, step):
            # Without a shared side (a mask input per prompt set), each chunk has its own.
            chunk_side = side or self.image_side(rows(image_embeddings, i), image_pe,
                                                 rows(dense_prompt_embeddings, i))
            parts.append(self.predict_masks_shared(chunk_side,
                                                   sparse_prompt_embeddings[i : i + step]))
        masks = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
        iou_pred = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
        return self.select_outputs(masks, iou_pred, multimask_output)

    def image_side(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                   dense_prompt_embedding: torch.Tensor) -> ImageSide:
        """The first block's image-side work for a ``(1 or B, C, H, W)`` embedding, a
        ``(1, C, H, W)`` positional encoding and a ``(1 or B, C, H, W)`` dense prompt (batch
        1 when the side is shared by every prompt set)."""
        src = image_embedding + dense_prompt_embedding
        # Token-major views of channel-major tensors, read as the plain path reads them (a
        # GEMM's rounding depends on its input's layout).
        keys = src.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        block = self.transformer.layers[0]
        t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
        k = keys + key_pe
        return ImageSide(
            keys=keys.contiguous(),
            key_pe=key_pe,
            t2i_k=t2i.split_heads(t2i.k_proj(k)),
            t2i_v=t2i.split_heads(t2i.v_proj(keys)),
            i2t_q=i2t.split_heads(i2t.q_proj(k)),
            hw=(src.shape[-2], src.shape[-1]),
        )

    def predict_masks_shared(self, side: ImageSide, sparse_prompt_embeddings: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """All masks ``(B, T, 4H, 4W)`` and IoU ``(B, T)`` for ``(B, N, C)`` prompts over a
        shared image side: the plain transformer, with the first block reading ``side``."""
        tokens = self.output_tokens(sparse_prompt_embeddings)
        transformer = self.transformer
        block = transformer.layers[0]
        query_pe = tokens
        queries = block.token_self_attention(tokens, query_pe)

        t2i = block.cross_attn_token_to_image
        q = queries + query_pe
        queries = block.norm2(
            queries + t2i.attend(t2i.split_heads(t2i.q_proj(q)), side.t2i_k, side.t2i_v)
        )
        queries = block.norm3(queries + block.mlp(queries))

        i2t = block.cross_attn_image_to_token
        q = queries + query_pe
        keys = block.norm4(side.keys + i2t.attend(
            side.i2t_q, i2t.split_heads(i2t.k_proj(q)), i2t.split_heads(i2t.v_proj(queries))
        ))
        for layer in transformer.layers[1:]:
            queries, keys = layer(queries, keys, query_pe, side.key_pe)
        q = queries + query_pe
        k = keys + side.key_pe
        queries = transformer.norm_final_attn(
            queries + transformer.final_attn_token_to_image(q, k, keys)
        )
        return self.masks_from_tokens(queries, keys, side.hw)


__all__ = ["ImageSide", "SharedImageMaskDecoder"]
