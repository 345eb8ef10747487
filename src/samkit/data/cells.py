"""A synthetic microscopy domain that the bundled model never saw: crowded, touching,
low-contrast cells in 16-bit grayscale, for measuring what fine-tuning buys.

Each image is a fluorescence-like field: a dim, unevenly lit background; 15-70 cells whose
outlines are noisy ellipses, packed so that many touch (a pixel claimed by two cells goes to
the one whose shape it is deeper inside, so neighbours share a boundary instead of one
hiding the other); a cell is only 6-30% brighter than the background, with a brighter
nucleus, granular texture and sometimes a faint dark membrane; the optics blur it and the
camera adds shot and read noise. Values sit in a 12-bit range stored as uint16. The
instance masks are exact.

Deterministic given ``(split, index)``, with seeds of their own (no overlap with the scene
splits of :mod:`samkit.data.synthetic`).
"""

from __future__ import annotations

import cv2
import numpy as np

from samkit.data.synthetic import Instance, Scene, _smooth_noise

CELL_SPLIT_SEEDS = {"train": 11_000, "val": 12_000, "test": 13_000}


def make_cells(split: str, index: int, size: tuple[int, int] | None = None,
               min_visible: int = 30) -> Scene:
    """Cell image ``index`` of ``split``. Unlike the RGB scenes, ``scene.image`` is a
    single-channel ``(H, W)`` uint16 picture (12-bit values).

    Args:
        split: ``train``, ``val`` or ``test``.
        index: Image index within the split.
        size: ``(H, W)``; drawn between 320 and 512 per side when None.
        min_visible: Cells with fewer pixels (after touching neighbours claim theirs) are
            not annotated.
    """
    if split not in CELL_SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(CELL_SPLIT_SEEDS)}, got {split!r}")
    rng = np.random.default_rng([CELL_SPLIT_SEEDS[split], index])
    if size is None:
        size = (int(rng.integers(320, 513)), int(rng.integers(320, 513)))
    h, w = size
    n = int(rng.integers(15, 71))
    mean_r = float(np.sqrt(0.55 * h * w / (n * np.pi)))  # cells cover about half the field
    depth = np.full((h, w), np.inf, dtype=np.float32)  # normalised distance of the owner
    label = np.zeros((h, w), dtype=np.int32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle_noise = rng.random((n, 8))
    for i in range(n):
        r = mean_r * rng.uniform(0.6, 1.35)
        a, b = r * rng.uniform(1.0, 1.5), r * rng.uniform(0.7, 1.0)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        theta = rng.uniform(0, np.pi)
        x0, x1 = int(max(0, cx - 1.6 * a)), int(min(w, cx + 1.6 * a + 1))
        y0, y1 = int(max(0, cy - 1.6 * a)), int(min(h, cy + 1.6 * a + 1))
        if x1 <= x0 or y1 <= y0:
            continue
        dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        phi = np.arctan2(v, u)
        # a wobbly outline: the radius varies smoothly with the angle (3 harmonics)
        wobble = 1.0 + sum(0.06 * (angle_noise[i, 2 * k] - 0.5) * 2 *
                           np.cos((k + 2) * phi + 6.3 * angle_noise[i, 2 * k + 1])
                           for k in range(3))
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2) / wobble
        region_depth, region_label = depth[y0:y1, x0:x1], label[y0:y1, x0:x1]
        claim = (d < 1.0) & (d < region_depth)
        region_depth[claim] = d[claim]
        region_label[claim] = i + 1
    # intensities (12-bit camera): background, cells a little brighter, nuclei brighter still
    bg_level = rng.uniform(300, 900)
    light = 0.75 + 0.5 * _smooth_noise(rng, h, w, rng.uniform(150, 400))
    signal = np.full((h, w), bg_level, dtype=np.float32)
    signal += bg_level * 0.08 * _smooth_noise(rng, h, w, rng.uniform(20, 60))
    brightness = rng.uniform(0.06, 0.30, n + 1).astype(np.float32)
    grain = _smooth_noise(rng, h, w, 3.0)
    inside = label > 0
    cell_gain = brightness[label] * (1.0 - 0.35 * depth.clip(0, 1) ** 2)
    cell_gain *= 0.85 + 0.3 * grain
    cell_gain += np.where(depth < rng.uniform(0.25, 0.45), brightness[label] * 0.8, 0.0)
    signal = np.where(inside, signal * (1.0 + cell_gain), signal)
    if rng.random() < 0.5:  # a faint dark membrane at the outline
        signal = np.where(inside & (depth > 0.85), signal * 0.93, signal)
    signal *= light
    signal = cv2.GaussianBlur(signal, (0, 0), rng.uniform(0.8, 2.0))
    photons = rng.poisson(np.maximum(signal, 0) * 0.5) / 0.5  # shot noise
    image = photons + rng.normal(0, rng.uniform(8, 25), (h, w)) + 100  # read noise, offset
    image = np.clip(image, 0, 4095).astype(np.uint16)
    instances = []
    for i in range(1, n + 1):
        mask = label == i
        if mask.sum() >= min_visible:
            instances.append(Instance(mask, "cell", 0))
    return Scene(image=image, instances=instances)
