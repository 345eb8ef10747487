"""Validation of user prompts, the one place for it: the predictor's numpy layer and torch
core, the command line and the studio call these. Coordinates are (X, Y) pixels, boxes XYXY."""

from __future__ import annotations

from typing import Any

import numpy as np

from samkit.errors import InputError, InputTypeError


def _as_float_array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"{name} must be numeric, got {type(value).__name__}") from exc
    return arr


def check_points(
    point_coords: Any, point_labels: Any
) -> tuple[np.ndarray, np.ndarray] | None:
    """Validate points; returns ``(coords (N, 2) float, labels (N,) int)`` or None.

    Raises:
        ValueError: coords without labels (or the reverse), coords not ``(N, 2)``, NaN/inf
            coordinates, label count mismatch, labels outside {0, 1}.
    """
    if point_coords is None and point_labels is None:
        return None
    if point_labels is None:
        raise InputError(
            "point_labels is required with point_coords: 1 for foreground, 0 for background, "
            "e.g. point_labels=np.array([1])"
        )
    if point_coords is None:
        raise InputError("point_labels was given without point_coords")
    coords = _as_float_array(point_coords, "point_coords")
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise InputError(
            f"point_coords must be an (N, 2) array of (x, y) pixels with N >= 1, got shape "
            f"{coords.shape}; e.g. np.array([[500, 375]])"
        )
    if not np.isfinite(coords).all():
        raise InputError("point_coords contains NaN or infinite values")
    labels = np.asarray(point_labels)
    if labels.ndim != 1 or labels.shape[0] != coords.shape[0]:
        raise InputError(
            f"point_labels must be a 1-D array with one label per point: got shape "
            f"{labels.shape} for {coords.shape[0]} points"
        )
    if not np.isin(labels, (0, 1)).all():
        raise InputError(
            f"point_labels must be 1 (foreground) or 0 (background); got values "
            f"{sorted(set(np.asarray(labels).tolist()))}"
        )
    return coords, labels.astype(np.int64)


def check_box(box: Any) -> np.ndarray | None:
    """Validate one box; returns ``(1, 4)`` float XYXY or None.

    Raises:
        ValueError: not 4 numbers, NaN/inf, or x1 < x0 / y1 < y0.
    """
    if box is None:
        return None
    arr = _as_float_array(box, "box")
    if arr.size != 4 or arr.ndim > 2 or (arr.ndim == 2 and arr.shape[0] != 1):
        raise InputError(
            f"box must be 4 numbers [x0, y0, x1, y1] (shape (4,) or (1, 4)), got shape "
            f"{arr.shape}; for many boxes use predict_torch with boxes of shape (B, 4)"
        )
    arr = arr.reshape(1, 4)
    if not np.isfinite(arr).all():
        raise InputError("box contains NaN or infinite values")
    if arr[0, 2] < arr[0, 0] or arr[0, 3] < arr[0, 1]:
        raise InputError(
            f"box must be XYXY with x0 <= x1 and y0 <= y1, got {arr[0].tolist()} "
            "(XYWH boxes must be converted first)"
        )
    return arr


def check_mask_input(mask_input: Any, size: tuple[int, int]) -> np.ndarray | None:
    """Validate low-res mask logits; returns ``(1, h, w)`` float32 or None.

    Args:
        mask_input: ``(1, h, w)`` or ``(h, w)`` logits, normally ``logits[i][None]`` from a
            previous ``predict`` call.
        size: Expected ``(h, w)`` (256 x 256 for SAM).
    """
    if mask_input is None:
        return None
    arr = np.asarray(mask_input, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (1, *size):
        raise InputError(
            f"mask_input must have shape (1, {size[0]}, {size[1]}): the low-res logits of a "
            f"previous predict call, e.g. logits[np.argmax(scores)][None]; got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InputError("mask_input contains NaN or infinite values")
    return arr


def check_torch_prompts(
    point_coords: Any, point_labels: Any, boxes: Any, mask_input: Any,
    mask_input_size: tuple[int, int],
) -> None:
    """Validate the torch core's batched prompts: ``point_coords`` ``(B, N, 2)`` with
    ``point_labels`` ``(B, N)``, ``boxes`` ``(B, 4)``, ``mask_input`` ``(B, 1, h, w)`` with
    ``(h, w) = mask_input_size``; every given B equal."""
    if (point_coords is None) != (point_labels is None):
        raise InputError("point_coords and point_labels must be given together")
    sizes = {}
    if point_coords is not None and point_labels is not None:
        if point_coords.ndim != 3 or point_coords.shape[-1] != 2:
            raise InputError(f"point_coords must be (B, N, 2), got {tuple(point_coords.shape)}")
        if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
            raise InputError(
                f"point_labels must be (B, N) = {tuple(point_coords.shape[:2])}, got "
                f"{tuple(point_labels.shape)}"
            )
        sizes["point_coords"] = point_coords.shape[0]
    if boxes is not None:
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise InputError(f"boxes must be (B, 4) XYXY, got {tuple(boxes.shape)}")
        sizes["boxes"] = boxes.shape[0]
    if mask_input is not None:
        expected = (1, *mask_input_size)
        if mask_input.ndim != 4 or tuple(mask_input.shape[1:]) != expected:
            raise InputError(
                f"mask_input must be (B, {expected[0]}, {expected[1]}, {expected[2]}), got "
                f"{tuple(mask_input.shape)}"
            )
        sizes["mask_input"] = mask_input.shape[0]
    if len(set(sizes.values())) > 1:
        raise InputError(f"prompt batch sizes differ: {sizes}")


def points_from_triples(points: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``[[x, y, label], ...]`` (the studio's and the CLI's form) -> validated
    ``(coords (N, 2), labels (N,))``, or None for no points."""
    if points is None or len(points) == 0:
        return None
    arr = _as_float_array(points, "points")
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"points must be [[x, y, label], ...], got shape {arr.shape}")
    return check_points(arr[:, :2], arr[:, 2].astype(np.int64))


def require_prompt(points: Any, box: Any) -> None:
    """Raise unless there is at least one point or a box."""
    if (points is None or len(points) == 0) and box is None:
        raise InputError("give at least one point or a box")


def prompts_outside(coords: Any, box: Any, hw: tuple[int, int]) -> list[str]:
    """Descriptions of prompts outside an ``(H, W)`` image: SAM accepts them, but they are
    usually a mistake of coordinates, so callers warn."""
    h, w = hw
    out = []
    for x, y in ([] if coords is None else np.asarray(coords, dtype=np.float64).reshape(-1, 2)):
        if not (0 <= x < w and 0 <= y < h):
            out.append(f"point {x:g},{y:g} is outside the {w}x{h} image (X in 0..{w - 1}, "
                       f"Y in 0..{h - 1})")
    if box is not None:
        b = np.asarray(box, dtype=np.float64).reshape(4)
        shown = ",".join(f"{v:g}" for v in b)
        if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
            out.append(f"box {shown} lies entirely outside the {w}x{h} image")
        elif b[0] < 0 or b[1] < 0 or b[2] > w or b[3] > h:
            out.append(f"box {shown} reaches outside the {w}x{h} image")
    return out
