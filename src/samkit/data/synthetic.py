"""Synthetic scenes with exact instance masks, for training and evaluating small SAMs.

Each scene holds many objects (polygons, ellipses, smooth blobs, thin strokes, shapes with
holes, objects made of parts and sub-parts) filled with solid colours, gradients, noise or
photo textures, over textured backgrounds, with occlusion, lighting gradients, blur, noise,
JPEG artefacts and sometimes grayscale. Every instance's mask is its exact *visible* region.

Everything is deterministic given ``(seed, index)``: scene ``i`` of a split is drawn from
``numpy.random.default_rng([SPLIT_SEEDS[split], i])``, so the held-out split never overlaps
the training stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

SPLIT_SEEDS = {"train": 1_000, "val": 2_000, "test": 3_000}

#: scikit-image photographs used as textures. ``coins`` is deliberately absent: it is the
#: real-photo check of the bundled model.
TEXTURE_NAMES = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "grass", "gravel", "rocket",
    "moon", "clock", "hubble_deep_field", "immunohistochemistry", "retina", "page",
)


@dataclass
class Instance:
    """One annotated object or part: an exact visible mask and its place in the hierarchy."""

    mask: np.ndarray  # (H, W) bool, visible pixels only
    kind: str  # shape family
    level: int  # 0 = whole object, 1 = part, 2 = sub-part
    parent: int | None = None  # index of the enclosing instance in the scene's list


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    instances: list[Instance] = field(default_factory=list)


@lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    try:
        from skimage import data as skdata
    except ImportError:  # textures are optional; noise fills stand in
        return ()
    out = []
    for name in TEXTURE_NAMES:
        try:
            img = getattr(skdata, name)()
        except Exception:  # a data file missing from this install
            continue
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    return tuple(out)


# -- fills ---------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """``(h, w)`` noise in [0, 1] with features about ``scale`` pixels wide."""
    sh, sw = max(2, int(h / scale)), max(2, int(w / scale))
    small = rng.random((sh, sw)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(big.min()), float(big.max())
    return (big - lo) / max(hi - lo, 1e-6)


def _texture_patch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    textures = _textures()
    if not textures:
        return _noise_fill(rng, h, w)
    tex = textures[rng.integers(len(textures))]
    scale = rng.uniform(0.5, 2.0)
    th, tw = tex.shape[:2]
    ch, cw = min(th, max(8, int(h / scale))), min(tw, max(8, int(w / scale)))
    y0, x0 = rng.integers(0, th - ch + 1), rng.integers(0, tw - cw + 1)
    patch = tex[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = cv2.resize(np.ascontiguousarray(patch), (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:  # tint so the same photo can look different
        patch = np.clip(patch * rng.uniform(0.6, 1.3, 3), 0, 255)
    return patch.astype(np.float32)


def _noise_fill(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = _smooth_noise(rng, h, w, rng.uniform(3, 40))[..., None]
    return (a * (1 - t) + b * t).astype(np.float32)


def _gradient_fill(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)


def _stripes_fill(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 40)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)


def _solid_fill(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return np.broadcast_to(rng.uniform(0, 255, 3).astype(np.float32), (h, w, 3)).copy()


_OBJECT_FILLS = ((_solid_fill, 0.3), (_gradient_fill, 0.2), (_noise_fill, 0.2),
                 (_texture_patch, 0.2), (_stripes_fill, 0.1))
_BACKGROUND_FILLS = ((_texture_patch, 0.45), (_noise_fill, 0.25), (_stripes_fill, 0.1),
                     (_gradient_fill, 0.1), (_solid_fill, 0.1))


def _pick(rng: np.random.Generator, table) -> object:
    weights = np.array([w for _, w in table])
    return table[rng.choice(len(table), p=weights / weights.sum())][0]


def _fill(rng: np.random.Generator, table, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return _pick(rng, table)(rng, y1 - y0, x1 - x0)


# -- shapes (each returns an (H, W) bool mask) ---------------------------------------------
def _polygon(rng, h, w, cx, cy, r) -> np.ndarray:
    n = rng.integers(3, 10)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.45 if rng.random() < 0.4 else 0.8, 1.0, n)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m.astype(bool)


def _ellipse(rng, h, w, cx, cy, r) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.3, 1.0))))
    cv2.ellipse(m, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    return m.astype(bool)


def _blob(rng, h, w, cx, cy, r) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    radius = np.ones_like(theta)
    for k in range(2, 6):
        radius += rng.uniform(0, 0.25 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = r * radius / radius.max()
    pts = np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], 1)
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m.astype(bool)


def _thin(rng, h, w, cx, cy, r) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    n = rng.integers(2, 5)
    angle = rng.uniform(0, 2 * np.pi)
    pts = [(cx, cy)]
    step = 2 * r / n
    for _ in range(n):
        angle += rng.uniform(-0.8, 0.8)
        pts.append((pts[-1][0] + step * np.cos(angle), pts[-1][1] + step * np.sin(angle)))
    thickness = int(rng.integers(3, max(4, int(r / 5)) + 1))
    cv2.polylines(m, [np.round(np.array(pts)).astype(np.int32)], False, 1, thickness)
    return m.astype(bool)


def _with_hole(rng, h, w, cx, cy, r) -> np.ndarray:
    outer = (_ellipse if rng.random() < 0.5 else _polygon)(rng, h, w, cx, cy, r)
    hole = _ellipse(rng, h, w, cx + rng.uniform(-0.15, 0.15) * r,
                    cy + rng.uniform(-0.15, 0.15) * r, r * rng.uniform(0.25, 0.5))
    ring = outer & ~hole
    return ring if ring.sum() > 0.3 * outer.sum() else outer


_SHAPES = {"polygon": (_polygon, 0.25), "ellipse": (_ellipse, 0.2), "blob": (_blob, 0.2),
           "thin": (_thin, 0.15), "holed": (_with_hole, 0.2)}


def _shape(rng, kind, h, w, cx, cy, r) -> np.ndarray:
    return _SHAPES[kind][0](rng, h, w, cx, cy, r)


# -- scenes --------------------------------------------------------------------------------
def _composite_parts(rng, h, w, cx, cy, r) -> list[tuple[np.ndarray, int, int | None]]:
    """A whole made of 2-3 parts, one of which may hold a sub-part: (mask, level, parent)."""
    body = _shape(rng, "blob" if rng.random() < 0.5 else "ellipse", h, w, cx, cy, r * 0.75)
    parts = [body]
    for _ in range(rng.integers(1, 3)):
        a = rng.uniform(0, 2 * np.pi)
        px, py = cx + 0.8 * r * np.cos(a), cy + 0.8 * r * np.sin(a)
        part = _shape(rng, "ellipse" if rng.random() < 0.6 else "polygon", h, w, px, py,
                      r * rng.uniform(0.3, 0.5))
        parts.append(part & ~np.logical_or.reduce(parts))
    out: list[tuple[np.ndarray, int, int | None]] = [(np.logical_or.reduce(parts), 0, None)]
    for p in parts:
        if p.sum() > 20:
            out.append((p, 1, 0))
    # a sub-part inside the body (e.g. an eye on a face)
    ys, xs = np.nonzero(body)
    if len(ys) > 400 and rng.random() < 0.7:
        i = rng.integers(len(ys))
        sub = _ellipse(rng, h, w, xs[i], ys[i], r * rng.uniform(0.12, 0.25)) & body
        if sub.sum() > 20:
            out.append((sub, 2, 1))
    return out


def generate_scene(
    rng: np.random.Generator,
    size: tuple[int, int] | None = None,
    min_objects: int = 3,
    max_objects: int = 12,
    min_visible: int = 24,
    radius_range: tuple[float, float] = (0.04, 0.28),
) -> Scene:
    """Draw one scene.

    Args:
        rng: Random generator (the scene is a pure function of its state).
        size: ``(H, W)``; drawn between 320 and 512 per side when None.
        min_objects, max_objects: Range of top-level objects.
        min_visible: Instances with fewer visible pixels are not annotated.
        radius_range: Object radius as a fraction of the short side (log-uniform).
    """
    if size is None:
        size = (int(rng.integers(320, 513)), int(rng.integers(320, 513)))
    h, w = size
    canvas = _fill(rng, _BACKGROUND_FILLS, (0, 0, w, h))
    # Each painted layer: (mask, level, parent layer index, kind).
    layers: list[tuple[np.ndarray, int, int | None, str]] = []
    n = int(rng.integers(min_objects, max_objects + 1))
    short = min(h, w)
    for _ in range(n):
        r = short * float(np.exp(rng.uniform(np.log(radius_range[0]), np.log(radius_range[1]))))
        cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h
        if rng.random() < 0.2:
            base = len(layers)
            for mask, level, parent in _composite_parts(rng, h, w, cx, cy, r):
                layers.append((mask, level, None if parent is None else base + parent, "parts"))
        else:
            kind = _pick(rng, [(k, p) for k, (_, p) in _SHAPES.items()])
            layers.append((_shape(rng, kind, h, w, cx, cy, r), 0, None, str(kind)))
    # Paint: a whole is painted through its parts (its own fill shows where no part is).
    for mask, _level, _parent, _kind in layers:
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            continue
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        fill = _fill(rng, _OBJECT_FILLS, box)
        region = canvas[box[1] : box[3], box[0] : box[2]]
        sub = mask[box[1] : box[3], box[0] : box[2]]
        region[sub] = fill[sub]
    # Visible masks: a layer is hidden by later layers that are not its own descendants.
    visible = []
    covered = np.zeros((h, w), bool)
    owners = [_root(layers, i) for i in range(len(layers))]
    later_cover: dict[int, np.ndarray] = {}
    for i in range(len(layers) - 1, -1, -1):
        root = owners[i]
        if root not in later_cover:
            later_cover[root] = covered.copy()  # everything painted after this object group
        visible.append(layers[i][0] & ~later_cover[root])
        covered |= layers[i][0]
    visible.reverse()
    instances: list[Instance] = []
    index_of: dict[int, int] = {}
    for i, (_mask, level, parent, kind) in enumerate(layers):
        vis = visible[i]
        if vis.sum() < min_visible:
            continue
        if parent is not None and parent not in index_of:
            continue
        index_of[i] = len(instances)
        instances.append(Instance(vis, kind, level, None if parent is None else index_of[parent]))
    image = _degrade(rng, canvas)
    return Scene(image=image, instances=instances)


def _root(layers, i: int) -> int:
    while layers[i][2] is not None:
        i = layers[i][2]
    return i


def _degrade(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    h, w = canvas.shape[:2]
    img = canvas
    if rng.random() < 0.6:  # lighting gradient
        light = 0.6 + 0.7 * _smooth_noise(rng, h, w, rng.uniform(100, 400))
        img = img * light[..., None]
    if rng.random() < 0.4:
        sigma = rng.uniform(0.3, 1.5)
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(1, 8), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.15:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        img = np.repeat(gray[..., None], 3, axis=2)
    if rng.random() < 0.4:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img)


def scene_rng(split: str, index: int) -> np.random.Generator:
    """The generator for scene ``index`` of ``split`` ("train", "val" or "test")."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    return np.random.default_rng([SPLIT_SEEDS[split], index])


def make_scene(split: str, index: int, size: tuple[int, int] | None = None,
               **kwargs: object) -> Scene:
    """Scene ``index`` of a split; the same arguments always give the same scene.

    ``kwargs`` go to :func:`generate_scene` (e.g. ``max_objects``, ``radius_range``).
    """
    return generate_scene(scene_rng(split, index), size=size, **kwargs)  # type: ignore[arg-type]
