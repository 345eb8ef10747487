"""COCO instance-segmentation files: write synthetic datasets, read annotations as masks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from samkit.ops.rle import encode_coco_masks


def write_synthetic_coco(
    split: str, n: int, out_dir: str | os.PathLike[str], start: int = 0,
    progress: bool = True,
) -> Path:
    """Write scenes ``start .. start + n - 1`` of a synthetic split as a COCO dataset.

    Layout: ``out_dir/images/<split>_<index>.png`` and ``out_dir/annotations.json`` with RLE
    segmentations; each annotation also has ``level`` (0 whole, 1 part, 2 sub-part),
    ``parent_id`` and ``shape``.
    """
    from tqdm import tqdm

    from samkit.data.synthetic import make_scene

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(start, start + n), desc=f"synth {split}", disable=not progress):
        scene = make_scene(split, index)
        image_id = index + 1
        name = f"{split}_{index:06d}.png"
        Image.fromarray(scene.image).save(out / "images" / name)
        h, w = scene.image.shape[:2]
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        if not scene.instances:
            continue
        rles = encode_coco_masks(np.stack([inst.mask for inst in scene.instances]))
        first_id = len(annotations) + 1
        for j, (inst, rle) in enumerate(zip(scene.instances, rles)):
            x, y, bw, bh = mask_utils.toBbox({**rle, "counts": rle["counts"].encode()})
            annotations.append({
                "id": first_id + j, "image_id": image_id, "category_id": 1,
                "segmentation": rle, "area": int(inst.mask.sum()),
                "bbox": [float(x), float(y), float(bw), float(bh)], "iscrowd": 0,
                "level": inst.level, "shape": inst.kind,
                "parent_id": None if inst.parent is None else first_id + inst.parent,
            })
    data = {
        "info": {"description": f"samkit synthetic scenes, split {split!r}, "
                                f"indices {start}..{start + n - 1}"},
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
    }
    path = out / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def annotation_mask(ann: dict[str, Any], h: int, w: int) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO annotation given as RLE (compressed or not) or polygons."""
    seg = ann["segmentation"]
    if isinstance(seg, list):  # polygons
        if not seg:
            return np.zeros((h, w), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        counts = seg["counts"]
        rle = {"size": seg["size"], "counts": counts.encode() if isinstance(counts, str)
               else counts}
    return mask_utils.decode(rle).astype(bool)


def load_coco(path: str | os.PathLike[str]) -> tuple[list[dict], dict[int, list[dict]]]:
    """Images and annotations grouped by image id, with a clear error for bad files."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {p}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{p} is not a COCO instances file (needs 'images' and 'annotations')")
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    return data["images"], by_image


def iter_masks(anns: Iterable[dict], h: int, w: int) -> Iterable[tuple[dict, np.ndarray]]:
    for ann in anns:
        yield ann, annotation_mask(ann, h, w)
