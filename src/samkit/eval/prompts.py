"""Prompt placement for evaluation, as in the SAM paper.

The first click goes to the interior point farthest from the object boundary; later clicks
go to the centre (farthest-from-boundary point) of the largest error region.
"""

from __future__ import annotations

import cv2
import numpy as np


def interior_point(mask: np.ndarray) -> np.ndarray:
    """The pixel of an ``(H, W)`` bool mask farthest from its boundary, as ``(2,)`` XY."""
    m = np.pad(mask.astype(np.uint8), 1)  # pixels on the image edge count as boundary
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x, y], dtype=np.float64)


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Corrective click at the centre of the largest error region.

    Returns:
        ``((2,) XY, label)``, label 1 for a missed region and 0 for a false one, or None
        when the prediction is perfect.
    """
    best: tuple[int, np.ndarray, int] | None = None
    for region, label in ((gt & ~pred, 1), (pred & ~gt, 0)):
        n, cc, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), 8)
        if n <= 1:
            continue
        i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[i, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, cc == i, label)
    if best is None:
        return None
    return interior_point(best[1]), best[2]
