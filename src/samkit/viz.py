"""Overlays of masks, points and boxes on an image (used by the CLI)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

_PALETTE = np.array(
    [
        [30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211],
        [0, 206, 209], [255, 140, 0], [199, 21, 133], [154, 205, 50], [70, 130, 180],
    ],
    dtype=np.float64,
)


def color_for(index: int) -> np.ndarray:
    """A distinct RGB colour for mask ``index`` (cycles through a palette, then random)."""
    if index < len(_PALETTE):
        return _PALETTE[index]
    return np.random.default_rng(index).uniform(40, 255, 3)


def overlay(
    image: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray = (),
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    alpha: float = 0.5,
    outline: bool = True,
) -> np.ndarray:
    """Draw masks (filled, with outlines), points and boxes on a copy of ``image``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        masks: ``(N, H, W)`` bool masks (or a list of them).
        points: ``(P, 2)`` XY pixels; drawn green for label 1 and red for label 0.
        labels: ``(P,)`` point labels (default all foreground).
        boxes: ``(B, 4)`` XYXY pixels.
        alpha: Opacity of the mask fill.
        outline: Draw each mask's contour.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    out = image.astype(np.float64).copy()
    h, w = image.shape[:2]
    for i, m in enumerate(masks):
        m = np.asarray(m, dtype=bool)
        if m.shape != (h, w):
            raise ValueError(f"mask {i} has shape {m.shape}, image is {(h, w)}")
        out[m] = (1 - alpha) * out[m] + alpha * color_for(i)
    canvas = np.clip(out, 0, 255).astype(np.uint8)
    thickness = max(1, round(min(h, w) / 300))
    if outline:
        for i, m in enumerate(masks):
            contours, _ = cv2.findContours(
                np.asarray(m, dtype=np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in color_for(i)), thickness)
    if boxes is not None:
        for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            x0, y0, x1, y1 = (round(v) for v in b)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 255, 0), thickness + 1)
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labs = np.ones(len(pts), dtype=int) if labels is None else np.asarray(labels)
        radius = max(3, round(min(h, w) / 100))
        for (x, y), lab in zip(pts, labs):
            color = (0, 220, 0) if lab == 1 else (230, 0, 0)
            cv2.circle(canvas, (round(x), round(y)), radius, color, -1)
            cv2.circle(canvas, (round(x), round(y)), radius, (255, 255, 255), 1)
    return canvas
