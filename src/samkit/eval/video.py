"""Video object segmentation measures (DAVIS) and the propagation benchmark.

J is the region similarity (IoU of the mask with the truth), F the boundary F-measure
(precision and recall of the mask's contour against the true contour, matched within
``0.008 x`` the image diagonal, as in the DAVIS toolkit), J&F their mean. A frame where both
masks are empty scores 1 on both; one empty and the other not scores 0.

:func:`evaluate_clips` prompts every object on its prompt frame with its true box, propagates,
and scores the other frames; it also reports the *bound* of giving the true box on every frame
(the same model, no propagation), so what propagation itself loses is visible.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from samkit.errors import InputError

BOUNDARY_FRACTION = 0.008


def region_j(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two ``(H, W)`` bool masks; 1 when both are empty."""
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                          borderValue=0)).astype(bool)


def boundary_f(pred: np.ndarray, truth: np.ndarray,
               fraction: float = BOUNDARY_FRACTION) -> float:
    """Boundary F-measure of two ``(H, W)`` bool masks: contour pixels match within
    ``ceil(fraction x diagonal)`` pixels. 1 when both are empty, 0 when only one is."""
    pb, tb = _boundary(pred), _boundary(truth)
    if not pb.any() and not tb.any():
        return 1.0
    if not pb.any() or not tb.any():
        return 0.0
    radius = int(np.ceil(fraction * np.hypot(*pred.shape)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    t_near = cv2.dilate(tb.astype(np.uint8), disk).astype(bool)
    p_near = cv2.dilate(pb.astype(np.uint8), disk).astype(bool)
    precision = (pb & t_near).sum() / pb.sum()
    recall = (tb & p_near).sum() / tb.sum()
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def jf_scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(J, F)`` of one frame's masks."""
    return region_j(pred, truth), boundary_f(pred, truth)


def evaluate_clip(predictor: Any, frames: np.ndarray, labels: np.ndarray,
                  prompt_frames: dict[int, int], config: Any = None, bound: bool = True
                  ) -> dict[str, Any]:
    """Propagate from true boxes on the prompt frames and score every other frame.

    Args:
        predictor: A predictor (or model) for :class:`samkit.video.VideoPropagator`.
        frames: ``(T, H, W, 3)`` uint8.
        labels: ``(T, H, W)`` integer label maps (0 background).
        prompt_frames: Object id -> frame to prompt it on with its true box.
        config: :class:`samkit.video.PropagationConfig`.
        bound: Also score the true box on every frame.

    Returns:
        ``{"objects": {id: {"J", "F", "bound_J", "bound_F", "frames"}}, "seconds", "fps"}``.
    """
    from samkit.video import Prompt, VideoPropagator, mask_box

    propagator = VideoPropagator(predictor, config)
    prompts: dict[int, dict[int, Prompt]] = {}
    for obj, f in prompt_frames.items():
        prompts.setdefault(f, {})[obj] = Prompt(box=mask_box(labels[f] == obj))
    scores: dict[int, list[tuple[float, float]]] = {obj: [] for obj in prompt_frames}
    start = time.perf_counter()
    n = 0
    for result in propagator.propagate(list(frames), prompts):
        n += 1
        for obj in prompt_frames:
            if result.index == prompt_frames[obj]:
                continue
            pred = result.masks.get(obj, np.zeros(labels.shape[1:], bool))
            scores[obj].append(jf_scores(pred, labels[result.index] == obj))
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {"objects": {}, "seconds": seconds, "fps": n / seconds}
    bounds = _true_box_bound(propagator, frames, labels, prompt_frames) if bound else None
    for obj, rows in scores.items():
        arr = np.array(rows).reshape(-1, 2)
        row = {"J": float(arr[:, 0].mean()), "F": float(arr[:, 1].mean()), "frames": len(arr)}
        if bounds is not None:
            b = np.array(bounds[obj]).reshape(-1, 2)
            row.update(bound_J=float(b[:, 0].mean()), bound_F=float(b[:, 1].mean()))
        out["objects"][obj] = row
    return out


def _true_box_bound(propagator: Any, frames: np.ndarray, labels: np.ndarray,
                    prompt_frames: dict[int, int]) -> dict[int, list[tuple[float, float]]]:
    """J and F of the model given each object's true box on every frame where it is visible
    (empty where it is not); overlaps resolved as in propagation."""
    from samkit.video.propagate import _resolve, mask_box

    p = propagator.predictor
    out: dict[int, list[tuple[float, float]]] = {obj: [] for obj in prompt_frames}
    for i, frame in enumerate(frames):
        p.set_image(frame)
        logits = {}
        for obj in prompt_frames:
            truth = labels[i] == obj
            if truth.any():
                lg, _, _ = p.predict(box=mask_box(truth), multimask_output=False,
                                     return_logits=True)
                logits[obj] = lg[0]
        masks = _resolve(logits, labels.shape[1:], p.mask_threshold, list(prompt_frames))
        for obj, f in prompt_frames.items():
            if i != f:
                out[obj].append(jf_scores(masks[obj], labels[i] == obj))
    return out


def summarize(rows: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per-group means over objects: ``{group: {"objects", "J", "F", "JF", "bound_J", ...,
    "ratio"}}``, plus ``"all"``; ``rows`` are ``(group, evaluate_clip result)``."""
    groups: dict[str, list[dict[str, float]]] = {}
    for group, result in rows:
        for obj in result["objects"].values():
            groups.setdefault(group, []).append(obj)
            groups.setdefault("all", []).append(obj)
    table: dict[str, dict[str, float]] = {}
    for group, objs in groups.items():
        row: dict[str, float] = {"objects": len(objs)}
        for key in ("J", "F", "bound_J", "bound_F"):
            if all(key in o for o in objs):
                row[key] = float(np.mean([o[key] for o in objs]))
        row["JF"] = (row["J"] + row["F"]) / 2
        if "bound_J" in row:
            row["bound_JF"] = (row["bound_J"] + row["bound_F"]) / 2
            row["ratio"] = row["JF"] / row["bound_JF"] if row["bound_JF"] else 0.0
        table[group] = row
    return table


def evaluate_dataset(predictor: Any, directory: str | os.PathLike[str], config: Any = None,
                     bound: bool = True, limit: int | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Evaluate every clip folder under ``directory``; the table of :func:`summarize` by
    difficulty, and per-clip results."""
    from tqdm import tqdm

    from samkit.data.video import read_clip

    d = Path(directory)
    clips = sorted(p.parent for p in d.glob("*/meta.json"))[:limit]
    if not clips:
        raise InputError(f"{d} holds no clips (folders with meta.json): write them with "
                         "'samkit data synth --domain videos -o DIR'")
    rows = []
    per_clip = {}
    for clip in tqdm(clips, desc="clips", disable=not progress):
        frames, labels, meta = read_clip(clip)
        prompt_frames = {int(k): int(v) for k, v in meta["prompt_frames"].items()}
        clip_config = config
        if meta["difficulty"] == "volume":  # what samkit track uses for volumes
            from samkit.video import PropagationConfig

            clip_config = (config or PropagationConfig()).for_volumes()
        result = evaluate_clip(predictor, frames, labels, prompt_frames, clip_config, bound)
        rows.append((meta["difficulty"], result))
        per_clip[clip.name] = {"difficulty": meta["difficulty"], **result}
    return {"table": summarize(rows), "clips": per_clip}


def format_video_table(table: dict[str, dict[str, float]]) -> str:
    """The :func:`summarize` table as text, one row per group."""
    head = f"{'group':<10} {'objects':>7} {'J':>6} {'F':>6} {'J&F':>6}"
    bound = any("bound_JF" in r for r in table.values())
    if bound:
        head += f" {'bound J&F':>9} {'ratio':>6}"
    lines = [head]
    for group in sorted(table, key=lambda g: (g == "all", g)):
        r = table[group]
        line = f"{group:<10} {int(r['objects']):>7} {r['J']:>6.3f} {r['F']:>6.3f} {r['JF']:>6.3f}"
        if bound:
            line += f" {r['bound_JF']:>9.3f} {r['ratio']:>6.3f}"
        lines.append(line)
    return "\n".join(lines)
