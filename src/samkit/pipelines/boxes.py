"""Boxes -> masks: every detection of an image through SAM's decoder in batched calls."""

from __future__ import annotations

from typing import Any

import torch

from samkit.errors import InputError
from samkit.pipelines.detections import Detections
from samkit.predictor import as_predictor

#: Memory for the float mask logits of one decoder call at full image size.
MASK_MEMORY_BYTES = 512 * 1024 * 1024


def segment_boxes(predictor: Any, detections: Detections, image: Any | None = None,
                  batch_size: int | None = None, multimask: bool = False) -> Detections:
    """One mask per box, from a single batched decoder call per ``batch_size`` boxes.

    Args:
        predictor: A :class:`~samkit.SamPredictor`, an ``OnnxPredictor`` or a ``Sam`` model.
        detections: Boxes (XYXY pixels of ``image``) with their scores and classes.
        image: ``(H, W, 3)`` RGB image to embed first; None uses the predictor's current image
            (``predictor.set_image`` was called).
        batch_size: Boxes per decoder call. The default fits the full-size mask logits of
            a call in :data:`MASK_MEMORY_BYTES` (100 boxes on a 1024 x 1024 image go in one
            call; a 12-megapixel photo takes about 10 per call).
        multimask: Decode SAM's three candidates per box and keep the one with the highest
            predicted IoU (helps for thin or ambiguous objects; three times the decoding).

    Returns:
        A copy of ``detections`` clipped to the image, with ``masks`` ``(N, H, W)`` bool and
        ``mask_scores`` ``(N,)`` (predicted IoU) filled in.
    """
    predictor = as_predictor(predictor)
    if image is not None:
        predictor.set_image(image)
    if not getattr(predictor, "is_image_set", False):
        raise InputError("no image is set: pass image=... or call predictor.set_image first")
    h, w = predictor.original_size
    if batch_size is None:
        batch_size = max(1, MASK_MEMORY_BYTES // (4 * h * w * (3 if multimask else 1)))
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    out = detections.clip_to(h, w)
    boxes = torch.as_tensor(out.boxes, dtype=torch.float32, device=predictor.device)
    # Each call's logits are thresholded straight into one (N, H, W) buffer: no per-chunk
    # bool masks to concatenate afterwards.
    masks = torch.empty((len(out), h, w), dtype=torch.bool, device=predictor.device)
    scores = torch.empty(len(out), dtype=torch.float32, device=predictor.device)
    with torch.inference_mode():
        for start in range(0, len(out), batch_size):
            stop = min(start + batch_size, len(out))
            chunk = predictor.transform.apply_boxes_torch(boxes[start:stop], (h, w))
            logits, s, _ = predictor.predict_torch(None, None, boxes=chunk,
                                                   multimask_output=multimask,
                                                   return_logits=True)
            best = s.argmax(dim=1)
            rows = torch.arange(len(s), device=s.device)
            chosen = logits[rows, best] if multimask else logits[:, 0]
            torch.gt(chosen.to(masks.device), predictor.mask_threshold,
                     out=masks[start:stop])
            scores[start:stop] = s[rows, best].float().to(scores.device)
    out.masks = masks.cpu().numpy()
    out.mask_scores = scores.cpu().numpy()
    return out


__all__ = ["MASK_MEMORY_BYTES", "segment_boxes"]
