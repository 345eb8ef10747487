"""Mask decoder: predicts masks and their IoU from an image embedding and prompt embeddings."""

from __future__ import annotations

import torch
from torch import nn

from samkit.modeling.common import MLP, LayerNorm2d
from samkit.modeling.transformer import TwoWayTransformer


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
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

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
            dense_prompt_embeddings: ``(B, C, H, W)``, or ``(1, C, H, W)`` when it is the
                same for every prompt set (no mask input).
            multimask_output: Return the ``num_multimask_outputs`` ambiguity-aware masks
                instead of the single-mask output.

        Returns:
            Low-resolution mask logits ``(B, M, 4H, 4W)`` and predicted IoU ``(B, M)``, with
            ``M = 3`` for multimask output (SAM) and 1 otherwise.
        """
        self.check_batch(image_embeddings, sparse_prompt_embeddings)
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        return self.select_outputs(masks, iou_pred, multimask_output)

    @staticmethod
    def check_batch(image_embeddings: torch.Tensor, sparse_prompt_embeddings: torch.Tensor
                    ) -> None:
        """Raise unless there is one image embedding, or one per prompt set."""
        bs = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, bs):
            raise ValueError(
                f"image_embeddings must hold 1 embedding or one per prompt set ({bs}), got "
                f"{image_embeddings.shape[0]}"
            )

    @staticmethod
    def select_outputs(masks: torch.Tensor, iou_pred: torch.Tensor, multimask_output: bool
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The multimask outputs ``[1:]`` or the single-mask output ``[0:1]``."""
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou_pred[:, sel]

    def output_tokens(self, sparse_prompt_embeddings: torch.Tensor) -> torch.Tensor:
        """IoU and mask tokens followed by the prompt tokens: ``(B, 1 + T + N, C)``."""
        bs = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(bs, -1, -1)
        return torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks ``(B, T, 4H, 4W)`` and IoU predictions ``(B, T)``."""
        tokens = self.output_tokens(sparse_prompt_embeddings)
        bs = tokens.shape[0]
        if image_embeddings.shape[0] != bs:
            image_embeddings = torch.repeat_interleave(image_embeddings, bs, dim=0)
        src = image_embeddings + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, bs, dim=0)
        hs, src = self.transformer(src, pos_src, tokens)
        return self.masks_from_tokens(hs, src, image_embeddings.shape[-2:])

    def masks_from_tokens(self, hs: torch.Tensor, src: torch.Tensor, hw: tuple[int, ...]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``(B, T, 4H, 4W)`` and IoU ``(B, T)`` from the transformer's output tokens
        ``hs`` ``(B, N, C)`` and image features ``src`` ``(B, H*W, C)``."""
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        b, c = hs.shape[0], src.shape[-1]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, *hw))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
