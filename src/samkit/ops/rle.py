"""Run-length encoding of binary masks in COCO's column-major (Fortran) order.

An uncompressed RLE is ``{"size": [H, W], "counts": [n0, n1, ...]}`` where runs alternate
between 0 and 1, starting with 0 (a leading 0-length run when the first pixel is set).
A COCO RLE is the same with ``counts`` compressed to a string by pycocotools.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils


def mask_to_rle_pytorch(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Encode ``(B, H, W)`` bool masks as uncompressed RLEs, vectorised over the batch."""
    b, h, w = masks.shape
    if b == 0:
        return []
    flat = masks.transpose(1, 2).reshape(b, h * w)
    changes = (flat[:, 1:] != flat[:, :-1]).nonzero()
    n_changes = torch.bincount(changes[:, 0], minlength=b).cpu().tolist()
    positions = (changes[:, 1] + 1).cpu()
    first = flat[:, 0].cpu().tolist()
    out = []
    start = 0
    total = h * w
    for i in range(b):
        idx = positions[start : start + n_changes[i]]
        start += n_changes[i]
        bounds = torch.cat([torch.zeros(1, dtype=idx.dtype), idx, torch.full((1,), total)])
        runs = (bounds[1:] - bounds[:-1]).tolist()
        counts = [0, *runs] if first[i] else runs
        out.append({"size": [h, w], "counts": counts})
    return out


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode an uncompressed RLE to an ``(H, W)`` bool array."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise ValueError(f"RLE counts sum to {flat.size}, expected {h * w} for size {[h, w]}")
    return flat.reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
    """Number of set pixels of an uncompressed RLE."""
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    """Compress an uncompressed RLE to COCO's string form (``counts`` as ``str``)."""
    h, w = uncompressed_rle["size"]
    rle = mask_utils.frPyObjects(uncompressed_rle, h, w)
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def encode_coco_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Encode ``(B, H, W)`` bool masks straight to COCO RLEs with pycocotools."""
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("utf-8")
    return rles


def decode_coco_rle(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (string or bytes counts) to an ``(H, W)`` bool array."""
    counts = rle["counts"]
    if isinstance(counts, list):
        return rle_to_mask(rle)
    if isinstance(counts, str):
        rle = {"size": rle["size"], "counts": counts.encode("utf-8")}
    return mask_utils.decode(rle).astype(bool)
