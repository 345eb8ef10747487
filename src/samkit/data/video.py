"""Synthetic videos and volumes with exact per-frame masks, for evaluating propagation.

Videos: textured objects (the shapes and fills of :mod:`samkit.data.synthetic`) move, rotate,
scale and deform over a real photograph the camera pans across. Three difficulties, in turn
by index: ``"plain"`` (objects apart, always in the picture), ``"occlusion"`` (another object
passes over the tracked one) and ``"exit"`` (the object leaves the picture and comes back).
Every mask is the object's exact *visible* region; an object that is fully hidden or out of
the picture has an empty mask on that frame.

Volumes: CT-like scans (Hounsfield units, noise, a body outline) holding blob-shaped organs
whose cross-section grows, shrinks, drifts and changes shape from slice to slice.

Deterministic given ``(split, index)``; the ``test`` split is held out from tuning.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from samkit.data.synthetic import (
    _OBJECT_FILLS,
    _SHAPES,
    _fill,
    _pick,
    _shape,
    _smooth_noise,
    _textures,
)
from samkit.errors import InputError

VIDEO_SPLIT_SEEDS = {"train": 11_000, "val": 12_000, "test": 13_000}
DIFFICULTIES = ("plain", "occlusion", "exit")


@dataclass
class Clip:
    """A synthetic video or volume.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB (videos) or ``(Z, H, W)`` float32 HU (volumes).
        labels: ``(T, H, W)`` uint8 label maps: 0 background, k object k.
        difficulty: ``"plain"``, ``"occlusion"``, ``"exit"`` or ``"volume"``.
        prompt_frames: Object id -> the frame to prompt it on (first visible frame for
            videos, the largest cross-section for volumes).
        affine: Voxel to RAS+ mm (volumes), else None.
    """

    frames: np.ndarray
    labels: np.ndarray
    difficulty: str
    prompt_frames: dict[int, int] = field(default_factory=dict)
    affine: np.ndarray | None = None


def clip_rng(split: str, index: int) -> np.random.Generator:
    if split not in VIDEO_SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(VIDEO_SPLIT_SEEDS)}, got {split!r}")
    return np.random.default_rng([VIDEO_SPLIT_SEEDS[split], index])


@dataclass
class _Mover:
    shape: np.ndarray  # (S, S) float32 in [0, 1], the object on its own canvas
    fill: np.ndarray  # (S, S, 3) float32
    path: np.ndarray  # (T, 2) centre XY per frame
    angle: np.ndarray  # (T,) degrees
    scale: np.ndarray  # (T,)
    wobble: float  # deformation amplitude, fraction of S
    phase: float


def _mover(rng: np.random.Generator, radius: float, path: np.ndarray) -> _Mover:
    t = len(path)
    size = int(np.ceil(radius * 2.6)) | 1
    kinds = [(k, p) for k, (_, p) in _SHAPES.items() if k != "thin"]
    kind = _pick(rng, kinds)
    c = size / 2
    shape = _shape(rng, kind, size, size, c, c, radius).astype(np.float32)
    fill = _fill(rng, _OBJECT_FILLS, (0, 0, size, size))
    spin = rng.uniform(-4, 4) if rng.random() < 0.7 else 0.0
    angle = rng.uniform(0, 360) + spin * np.arange(t)
    scale = 1 + rng.uniform(0, 0.25) * np.sin(np.arange(t) * rng.uniform(0.05, 0.2)
                                              + rng.uniform(0, 6.3))
    return _Mover(shape, fill, path, angle, scale, rng.uniform(0, 0.04), rng.uniform(0, 6.3))


def _render(m: _Mover, i: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Object ``m`` on frame ``i``: ``(H, W)`` bool mask and ``(H, W, 3)`` float pixels."""
    size = m.shape.shape[0]
    shape, fill = m.shape, m.fill
    if m.wobble > 0:  # a smooth, time-varying warp of the object's own canvas
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        amp = m.wobble * size
        dx = amp * np.sin(yy / size * 2 * np.pi + 0.3 * i + m.phase)
        dy = amp * np.sin(xx / size * 2 * np.pi + 0.23 * i + 2 * m.phase)
        shape = cv2.remap(shape, xx + dx, yy + dy, cv2.INTER_LINEAR)
        fill = cv2.remap(fill, xx + dx, yy + dy, cv2.INTER_LINEAR)
    mat = cv2.getRotationMatrix2D((size / 2, size / 2), float(m.angle[i]), float(m.scale[i]))
    mat[:, 2] += m.path[i] - size / 2
    mask = cv2.warpAffine(shape, mat, (w, h), flags=cv2.INTER_LINEAR) > 0.5
    pixels = cv2.warpAffine(fill, mat, (w, h), flags=cv2.INTER_LINEAR)
    return mask, pixels


def _background(rng: np.random.Generator, h: int, w: int, t: int) -> list[np.ndarray]:
    """``t`` frames of a photograph the camera pans across (float32 RGB)."""
    photos = [p for p in _textures() if min(p.shape[:2]) >= 256]
    if photos:
        photo = photos[rng.integers(len(photos))].astype(np.float32)
    else:  # scikit-image's photographs missing: smooth noise stands in
        photo = _fill(rng, _OBJECT_FILLS, (0, 0, 2 * w, 2 * h))
    zoom = max(1.25 * h / photo.shape[0], 1.25 * w / photo.shape[1])
    photo = cv2.resize(photo, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    ph, pw = photo.shape[:2]
    start = np.array([rng.uniform(0, pw - w), rng.uniform(0, ph - h)])
    end = np.array([rng.uniform(0, pw - w), rng.uniform(0, ph - h)])
    out = []
    for i in range(t):
        x, y = start + (end - start) * i / max(t - 1, 1)
        mat = np.float32([[1, 0, -x], [0, 1, -y]])
        out.append(cv2.warpAffine(photo, mat, (w, h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT))
    return out


def _wander(rng: np.random.Generator, t: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A smooth path that stays inside the box ``lo``..``hi`` (XY)."""
    steps = np.arange(t)[:, None]
    centre = rng.uniform(lo + 0.3 * (hi - lo), hi - 0.3 * (hi - lo))
    amp = 0.5 * (hi - lo) * rng.uniform(0.2, 0.6, 2)
    freq = rng.uniform(0.04, 0.12, 2)
    return centre + amp * np.sin(steps * freq + rng.uniform(0, 6.3, 2))


def make_video(split: str, index: int, n_frames: int = 40, size: tuple[int, int] = (360, 480)
               ) -> Clip:
    """Video ``index`` of ``split``; its difficulty is ``DIFFICULTIES[index % 3]``."""
    rng = clip_rng(split, index)
    difficulty = DIFFICULTIES[index % len(DIFFICULTIES)]
    h, w = size
    t = n_frames
    short = min(h, w)
    movers: list[_Mover] = []
    if difficulty == "plain":  # two or three objects, each in its own column
        n = int(rng.integers(2, 4))
        for k in range(n):
            r = short * rng.uniform(0.1, 0.17)
            lo = np.array([k * w / n + r, r])
            hi = np.array([(k + 1) * w / n - r, h - r])
            movers.append(_mover(rng, r, _wander(rng, t, lo, hi)))
    elif difficulty == "occlusion":  # a tracked object and an occluder crossing over it
        r = short * rng.uniform(0.13, 0.18)
        target_path = _wander(rng, t, np.array([0.35 * w, 0.35 * h]),
                              np.array([0.65 * w, 0.65 * h]))
        movers.append(_mover(rng, r, target_path))
        r2 = short * rng.uniform(0.08, 0.14)
        steps = np.arange(t)[:, None] / max(t - 1, 1)
        y = target_path[t // 2, 1] + rng.uniform(-0.8, 0.8) * r
        a, b = np.array([-r2, y]), np.array([w + r2, y + rng.uniform(-0.2, 0.2) * h])
        if rng.random() < 0.5:
            a, b = b, a
        movers.append(_mover(rng, r2, a + (b - a) * steps))
        other = short * rng.uniform(0.08, 0.12)
        movers.insert(0, _mover(rng, other, _wander(
            rng, t, np.array([other, other]), np.array([0.3 * w, 0.3 * h]))))
    else:  # exit: the object leaves through a side and comes back
        r = short * rng.uniform(0.1, 0.16)
        steps = np.arange(t)
        start, period = rng.uniform(0.1, 0.25) * t, 0.6 * t
        x0, reach = w - 2 * r - 0.05 * w, 3.6 * r + 0.1 * w  # out for about a quarter
        u = np.clip((steps - start) / period, 0, 1)
        x = x0 + reach * (1 - np.cos(2 * np.pi * u)) / 2
        y = h / 2 + 0.2 * h * np.sin(steps * rng.uniform(0.05, 0.1))
        path = np.stack([x, y], 1)
        if rng.random() < 0.5:
            path[:, 0] = w - path[:, 0]
        movers.append(_mover(rng, r, path))
        other = short * rng.uniform(0.08, 0.12)
        movers.append(_mover(rng, other, _wander(
            rng, t, np.array([0.5 * w - 2 * other, other]),
            np.array([0.5 * w + 2 * other, 0.35 * h]))))
    background = _background(rng, h, w, t)
    frames = np.empty((t, h, w, 3), np.uint8)
    labels = np.zeros((t, h, w), np.uint8)
    noise = rng.uniform(1, 5)
    for i in range(t):
        canvas = background[i]
        for k, m in enumerate(movers):  # later objects are in front
            mask, pixels = _render(m, i, h, w)
            canvas[mask] = pixels[mask]
            labels[i][mask] = k + 1
        canvas = canvas + rng.normal(0, noise, canvas.shape)
        frames[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    prompt_frames = {}
    for k in range(len(movers)):
        visible = np.nonzero((labels == k + 1).reshape(t, -1).sum(1) >= 64)[0]
        if len(visible):
            prompt_frames[k + 1] = int(visible[0])
    return Clip(frames, labels, difficulty, prompt_frames)


def make_volume(split: str, index: int, n_slices: int = 32, size: tuple[int, int] = (192, 192)
                ) -> Clip:
    """CT-like volume ``index`` of ``split``: ``frames`` in HU, 2-3 organs as labels."""
    rng = clip_rng(split, 10_000 + index)
    h, w = size
    z = n_slices
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    body = ((xx - w / 2) / (0.46 * w)) ** 2 + ((yy - h / 2) / (0.4 * h)) ** 2 < 1
    data = np.where(body, 30.0, -1000.0)[None].repeat(z, 0).astype(np.float32)
    labels = np.zeros((z, h, w), np.uint8)
    n = int(rng.integers(2, 4))
    prompt_frames = {}
    densities = rng.permutation([-60.0, 80.0, 150.0, 230.0])  # organs differ in density
    for k in range(n):
        z0 = rng.uniform(0.3, 0.7) * z
        half = rng.uniform(0.25, 0.45) * z
        r = rng.uniform(0.1, 0.17) * min(h, w)
        c0 = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h])
        drift = rng.uniform(-0.4, 0.4, 2) * r / half
        harmonics = rng.uniform(0, 0.2, 4)
        phases = rng.uniform(0, 6.3, 4)
        turn = rng.uniform(-0.08, 0.08)
        hu = float(densities[k])
        areas = []
        for s in range(z):
            u = (s - z0) / half
            if abs(u) >= 1:
                areas.append(0)
                continue
            rad = r * np.sqrt(1 - u * u)
            cx, cy = c0 + drift * (s - z0)
            theta = np.arctan2(yy - cy, xx - cx)
            wave = 1 + sum(a * np.cos((j + 2) * theta + p + turn * s)
                           for j, (a, p) in enumerate(zip(harmonics, phases)))
            inside = np.hypot(xx - cx, yy - cy) < rad * wave
            labels[s][inside] = k + 1
            areas.append(int(inside.sum()))
        if max(areas) >= 64:
            prompt_frames[k + 1] = int(np.argmax(areas))
        data[labels == k + 1] = hu
    texture = np.stack([_smooth_noise(rng, h, w, 12) for _ in range(z)])
    data += 25 * (texture - 0.5) + rng.normal(0, 12, data.shape).astype(np.float32)
    data = cv2.GaussianBlur(data.transpose(1, 2, 0), (0, 0), 0.8).transpose(2, 0, 1)
    for k in list(prompt_frames):  # drop organs that an earlier one's label painted over
        if (labels == k).sum() < 64:
            prompt_frames.pop(k)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    return Clip(data.astype(np.float32), labels, "volume", prompt_frames, affine)


# -- datasets on disk ----------------------------------------------------------------------
def write_clip(clip: Clip, directory: str | os.PathLike[str], name: str) -> Path:
    """Write a :class:`samkit.data.video.Clip` as ``directory/name/``: videos as
    ``frames/00000.jpg`` + ``labels/00000.png``, volumes as ``volume.nii.gz`` +
    ``labels.nii.gz``; ``meta.json`` holds the difficulty and prompt frames."""
    from PIL import Image

    out = Path(directory) / name
    out.mkdir(parents=True, exist_ok=True)
    if clip.difficulty == "volume":
        from samkit.io.medical import write_nifti

        write_nifti(clip.frames, clip.affine, out / "volume.nii.gz")
        write_nifti(clip.labels, clip.affine, out / "labels.nii.gz")
    else:
        (out / "frames").mkdir(exist_ok=True)
        (out / "labels").mkdir(exist_ok=True)
        for i, (frame, label) in enumerate(zip(clip.frames, clip.labels)):
            Image.fromarray(frame).save(out / "frames" / f"{i:05d}.jpg", quality=92)
            Image.fromarray(label).save(out / "labels" / f"{i:05d}.png")
    meta = {"difficulty": clip.difficulty,
            "prompt_frames": {str(k): v for k, v in clip.prompt_frames.items()}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def read_clip(directory: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(frames (T, H, W, 3) uint8, labels (T, H, W), meta)`` of a folder written by
    :func:`write_clip` (volumes through the default CT window)."""
    d = Path(directory)
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise InputError(f"{d} has no meta.json: write clips with 'samkit data synth "
                         "--domain videos|volumes'")
    meta = json.loads(meta_path.read_text())
    if meta["difficulty"] == "volume":
        from samkit.io.video import open_frames

        source = open_frames(d / "volume.nii.gz")
        frames = np.stack([f for _, f in source.frames()])
        from samkit.io.medical import read_volume

        labels = np.rint(read_volume(d / "labels.nii.gz").data).astype(np.int64)
    else:
        from samkit.io.image import load_label_map
        from samkit.io.video import FolderFrames

        frames = np.stack([f for _, f in FolderFrames(d / "frames").frames()])
        names = sorted((d / "labels").glob("*.png"))
        labels = np.stack([load_label_map(p) for p in names])
    return frames, labels, meta


def write_synthetic_clips(split: str, n: int, directory: str | os.PathLike[str],
                          kind: str = "videos", start: int = 0, n_frames: int | None = None
                          ) -> Path:
    """Write clips ``start .. start + n - 1`` of ``split`` (``kind`` ``"videos"`` or
    ``"volumes"``) under ``directory`` as ``video_00000/`` or ``volume_00000/`` folders."""
    out = Path(directory)
    for i in range(start, start + n):
        if kind == "videos":
            clip = make_video(split, i, **({"n_frames": n_frames} if n_frames else {}))
            write_clip(clip, out, f"video_{i:05d}")
        elif kind == "volumes":
            clip = make_volume(split, i, **({"n_slices": n_frames} if n_frames else {}))
            write_clip(clip, out, f"volume_{i:05d}")
        else:
            raise InputError(f"kind must be 'videos' or 'volumes', got {kind!r}")
    return out
