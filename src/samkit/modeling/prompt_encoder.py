"""Prompt encoder: points, boxes and low-resolution masks -> sparse and dense embeddings.

Coordinates given to the encoder are in the model's input frame (after
:class:`samkit.transforms.ResizeLongestSide`), as (X, Y) pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from samkit.modeling.common import LayerNorm2d

#: Label values understood by the prompt encoder.
LABEL_PAD, LABEL_BACKGROUND, LABEL_FOREGROUND = -1, 0, 1
LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT = 2, 3


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random spatial frequencies (Fourier features)."""

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode ``(..., 2)`` coordinates normalised to [0, 1] into ``(..., 2 * F)`` features."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an ``(H, W)`` grid, as ``(2 * F, H, W)``."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=matrix.device, dtype=matrix.dtype) + 0.5) / h
        xs = (torch.arange(w, device=matrix.device, dtype=matrix.dtype) + 0.5) / w
        grid = torch.stack(
            [xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1
        )
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Encode ``(B, N, 2)`` pixel coordinates (X, Y) in an image of size ``(H, W)``."""
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._encode(coords.to(torch.float))


class PromptEncoder(nn.Module):
    """Embeds prompts for :class:`samkit.modeling.mask_decoder.MaskDecoder`.

    Args:
        embed_dim: Prompt embedding size (256 for SAM).
        image_embedding_size: ``(H, W)`` of the image embedding (64 x 64 for SAM).
        input_image_size: ``(H, W)`` of the padded model input (1024 x 1024 for SAM).
        mask_in_chans: Hidden channels of the mask downscaling convolutions.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, ``(1, embed_dim, H, W)``.

        It depends on the fixed Fourier matrix only: callers that decode many prompts for
        one image compute it once (the predictor does so in ``set_image``).
        """
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_labeled_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Embed points of any kind in one call, as the official ONNX decoder takes them.

        Args:
            coords: ``(B, N, 2)`` XY pixels in the padded input frame.
            labels: ``(B, N)`` (int or float): 1 foreground, 0 background, 2 a box's top-left
                corner, 3 its bottom-right corner, -1 padding (its coordinates are ignored).

        Returns:
            ``(B, N, embed_dim)`` sparse embeddings; a box is its two corners.
        """
        emb = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)  # centres
        is_pad = (labels == LABEL_PAD).unsqueeze(-1)
        emb = torch.where(is_pad, self.not_a_point_embed.weight, emb)
        for code, table in enumerate(self.point_embeddings):  # 0 bg, 1 fg, 2 / 3 box corners
            emb = emb + (labels == code).unsqueeze(-1) * table.weight
        return emb

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        if pad:
            points = torch.cat([points, points.new_zeros((points.shape[0], 1, 2))], dim=1)
            labels = torch.cat([labels, -labels.new_ones((labels.shape[0], 1))], dim=1)
        return self.embed_labeled_points(points, labels)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = boxes.reshape(-1, 2, 2)
        labels = torch.tensor([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT], device=boxes.device)
        return self.embed_labeled_points(corners, labels.expand(corners.shape[0], 2))

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        return self.mask_downscaling(masks)

    @staticmethod
    def _batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        Args:
            points: ``(coords (B, N, 2) XY pixels, labels (B, N))`` with labels 1 = foreground,
                0 = background, -1 = padding; or None.
            boxes: ``(B, 4)`` XYXY pixels, or None.
            masks: ``(B, 1, 4*He, 4*We)`` low-resolution mask logits, or None.

        Returns:
            Sparse embeddings ``(B, N', embed_dim)`` and dense embeddings
            ``(B, embed_dim, He, We)``.
        """
        bs = self._batch_size(points, boxes, masks)
        weight = self.no_mask_embed.weight
        sparse = [weight.new_empty((bs, 0, self.embed_dim))]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse_embeddings = torch.cat(sparse, dim=1)
        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse_embeddings, dense
