"""Mask scoring and clean-up."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def calculate_stability_score(
    mask_logits: torch.Tensor, mask_threshold: float, threshold_offset: float
) -> torch.Tensor:
    """IoU between the masks thresholded at ``threshold +/- offset``, for ``(N, H, W)`` logits.

    Returns:
        ``(N,)`` float scores in [0, 1].
    """
    inter = (mask_logits > (mask_threshold + threshold_offset)).sum(-1, dtype=torch.int16)
    union = (mask_logits > (mask_threshold - threshold_offset)).sum(-1, dtype=torch.int16)
    return inter.sum(-1, dtype=torch.int32) / union.sum(-1, dtype=torch.int32)


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Fill small holes (``mode="holes"``) or drop small islands (``mode="islands"``).

    Args:
        mask: ``(H, W)`` bool.
        area_thresh: Regions with fewer pixels than this are removed.
        mode: ``"holes"`` or ``"islands"``.

    Returns:
        The new mask and whether it changed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    working = (holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[:, -1][1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0, *small]
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True
