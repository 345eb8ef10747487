"""Mask decoder: predicts masks and their IoU from an image embedding and prompt embeddings."""

from __future__ import annotations

import torch
from torch import nn

from samkit.modeling.common import MLP, FreshGELU, LayerNorm2d
from samkit.modeling.transformer import TwoWayTransformer


def _batch_shared(x: torch.Tensor) -> bool:
    """True when every batch entry of ``x`` is the same tensor (batch 1, or expanded)."""
    return x.shape[0] == 1 or x.stride(0) == 0


class MaskDecoder(nn.Module):
    """SAM's mask decoder.

    Args:
        transformer_dim: Channel width of the image and prompt embeddings.
        transformer: The two-way transformer.
        num_multimask_outputs: Masks output for ambiguous prompts (3 for SAM); one more mask
            token is used for the single-mask output.
        iou_head_depth: Layers of the IoU-prediction MLP.
        iou_head_hidden_dim: Hidden width of the IoU-prediction MLP.
    """

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            FreshGELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            FreshGELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )
        # Speed switches (see samkit.accel.use_fast_decoder). Both keep the official math and,
        # in the parity tests, its exact output; False / None is the reference path.
        self.share_image_side = True
        self.prompt_chunk: int | None = 4  # CPU only; GPUs take the batch whole

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks.

        Args:
            image_embeddings: ``(1, C, H, W)`` embedding of one image, or ``(B, C, H, W)`` with
                one embedding per prompt set.
            image_pe: ``(1, C, H, W)`` positional encoding of the embedding grid.
            sparse_prompt_embeddings: ``(B, N, C)``.
            dense_prompt_embeddings: ``(B, C, H, W)``.
            multimask_output: Return the ``num_multimask_outputs`` ambiguity-aware masks
                instead of the single-mask output.

        Returns:
            Low-resolution mask logits ``(B, M, 4H, 4W)`` and predicted IoU ``(B, M)``, with
            ``M = 3`` for multimask output (SAM) and 1 otherwise.
        """
        bs = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, bs):
            raise ValueError(
                f"image_embeddings must hold 1 embedding or one per prompt set ({bs}), got "
                f"{image_embeddings.shape[0]}"
            )
        chunk = self.prompt_chunk
        if chunk is None or bs <= chunk or sparse_prompt_embeddings.device.type != "cpu":
            masks, iou_pred = self.predict_masks(
                image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
            )
        else:
            # Prompt sets a few at a time: the (chunk, H*W, C) activations stay in cache. A
            # shared image side is projected once for all chunks (image_cache).
            image_cache: dict[str, torch.Tensor] = {}
            parts = [
                self.predict_masks(
                    image_embeddings if image_embeddings.shape[0] == 1
                    else image_embeddings[i : i + chunk],
                    image_pe,
                    sparse_prompt_embeddings[i : i + chunk],
                    dense_prompt_embeddings if dense_prompt_embeddings.shape[0] == 1
                    else dense_prompt_embeddings[i : i + chunk],
                    image_cache,
                )
                for i in range(0, bs, chunk)
            ]
            masks = torch.cat([p[0] for p in parts])
            iou_pred = torch.cat([p[1] for p in parts])
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou_pred[:, sel]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        image_cache: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks ``(B, T, 4H, 4W)`` and IoU predictions ``(B, T)``.

        ``image_cache`` (a dict, empty at first) keeps the shared image side's first-block
        projections across calls for the same image, positional encoding and dense prompt.
        """
        bs = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(bs, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

        if self.share_image_side and image_embeddings.shape[0] == 1 and _batch_shared(
                dense_prompt_embeddings):
            # One image and the same dense prompt for every prompt set: the image side of the
            # first block is computed once and broadcast (same math, fewer FLOPs).
            src = image_embeddings + dense_prompt_embeddings[:1]
            pos_src = image_pe
        else:
            if image_embeddings.shape[0] != bs:
                image_embeddings = torch.repeat_interleave(image_embeddings, bs, dim=0)
            src = image_embeddings + dense_prompt_embeddings
            pos_src = torch.repeat_interleave(image_pe, bs, dim=0)
        _, c, h, w = src.shape
        b = bs

        shared = src.shape[0] == 1 and bs > 1
        hs, src = self.transformer(src, pos_src, tokens, image_cache if shared else None)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        src = src.expand(b, -1, -1)  # a no-op unless the transformer left it shared
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
