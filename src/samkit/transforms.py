"""Resize so the long side equals the model input size, and map coordinates accordingly.

Coordinates are (X, Y) pixels; boxes are XYXY; sizes are (H, W).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class ResizeLongestSide:
    """Resize images, points and boxes so the longest image side is ``target_length``."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """``(H, W)`` after scaling the long side to ``long_side_length`` (rounded half up)."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        return int(oldh * scale + 0.5), int(oldw * scale + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """Resize an ``(H, W, 3)`` uint8 image with bilinear (antialiased) PIL resampling."""
        h, w = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """Map ``(..., 2)`` XY coordinates from an ``original_size`` (H, W) image."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        out = np.array(coords, dtype=float, copy=True)
        out[..., 0] = out[..., 0] * (new_w / old_w)
        out[..., 1] = out[..., 1] * (new_h / old_h)
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """Map ``(B, 4)`` XYXY boxes from an ``original_size`` (H, W) image."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """Resize a ``(B, C, H, W)`` float tensor (antialiased bilinear)."""
        h, w = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, (h, w), mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(
        self, coords: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Torch version of :meth:`apply_coords` (returns float)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        out = coords.to(torch.float).clone()
        out[..., 0] = out[..., 0] * (new_w / old_w)
        out[..., 1] = out[..., 1] * (new_h / old_h)
        return out

    def apply_boxes_torch(
        self, boxes: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Torch version of :meth:`apply_boxes`: ``(B, 4)`` XYXY -> ``(B, 4)``."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def postprocess_masks(masks: torch.Tensor, img_size: int, input_size: tuple[int, ...],
                      original_size: tuple[int, ...]) -> torch.Tensor:
    """Upscale ``(B, M, h, w)`` low-res logits to ``original_size`` ``(H, W)``: bilinear to the
    padded ``img_size`` square, crop the padding off (``input_size`` ``(H', W')``), bilinear to
    the original size, as the official ``Sam.postprocess_masks``.
    """
    size = img_size
    h, w = masks.shape[-2:]
    f = size // h
    if f * h == size and f * w == size:
        # Rows below input_size are cropped away, so only the low-res rows that the kept
        # rows read (one past the last) are upsampled. The scale stays 1/f and rows are
        # computed independently, so every kept value is the same as in the full
        # upsampling. (Columns are not cropped: the kernel vectorises along them.)
        rows = min(h, -(-input_size[0] // f) + 1)
        masks = F.interpolate(masks[..., :rows, :], (rows * f, size),
                              mode="bilinear", align_corners=False)
    else:
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    if tuple(input_size) == tuple(original_size):
        return masks  # resizing to the same size is the identity (exactly, for bilinear)
    return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)
