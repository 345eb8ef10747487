"""``Sam``: wires the image encoder, prompt encoder and mask decoder together."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from samkit.modeling.image_encoder import ImageEncoderViT
from samkit.modeling.mask_decoder import MaskDecoder
from samkit.modeling.prompt_encoder import PromptEncoder
from samkit.transforms import postprocess_masks


class Sam(nn.Module):
    """Segment Anything Model.

    ``forward`` is differentiable (no ``no_grad`` inside), so it can be trained; wrap calls in
    ``torch.no_grad()`` / ``torch.inference_mode()`` for inference.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        #: Set by :func:`samkit.registry.build_sam`; the config the model was built from.
        self.config: Any = None

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        """Side of the square model input (1024 for SAM)."""
        return self.image_encoder.img_size

    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool
    ) -> list[dict[str, torch.Tensor]]:
        """Predict masks end to end for a batch of images.

        Args:
            batched_input: One dict per image with ``image`` ``(3, H, W)`` already resized so
                that its long side is ``img_size``, ``original_size`` ``(H, W)`` before resizing,
                and optionally ``point_coords`` ``(B, N, 2)``, ``point_labels`` ``(B, N)``,
                ``boxes`` ``(B, 4)``, ``mask_inputs`` ``(B, 1, 256, 256)`` in the resized frame.
            multimask_output: Return 3 masks per prompt instead of one.

        Returns:
            One dict per image with ``masks`` ``(B, M, H, W)`` bool, ``iou_predictions``
            ``(B, M)`` and ``low_res_logits`` ``(B, M, 256, 256)``.
        """
        images = torch.stack([self.preprocess(x["image"]) for x in batched_input], dim=0)
        embeddings = self.embed(images)
        outputs = []
        for record, emb in zip(batched_input, embeddings):
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            sparse, dense = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )
            low_res, iou = self.mask_decoder(
                image_embeddings=emb.unsqueeze(0),
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(
                low_res, tuple(record["image"].shape[-2:]), tuple(record["original_size"])
            )
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                }
            )
        return outputs

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(B, C, h, w)`` float32 of preprocessed ``(B, 3, S, S)`` images,
        in whatever precision the image encoder was set to (see ``samkit.accel``)."""
        dtype = next(self.image_encoder.parameters()).dtype
        return self.image_encoder(images.to(dtype)).float()

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, ...],
        original_size: tuple[int, ...],
    ) -> torch.Tensor:
        """Upscale ``(B, M, h, w)`` logits to ``original_size`` ``(H, W)``, removing padding.

        Args:
            masks: Low-resolution logits from the decoder.
            input_size: ``(H, W)`` of the resized image before padding.
            original_size: ``(H, W)`` of the image given by the user.
        """
        return postprocess_masks(masks, self.img_size, input_size, original_size)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(..., 3, h, w)`` pixels (0-255) and pad bottom/right to ``img_size``."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))
