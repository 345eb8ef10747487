"""COCO instance-segmentation files: write synthetic datasets, read annotations as masks."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from samkit.errors import InputError
from samkit.io.formats import (
    DatasetWriter,
    ImageEntry,
    Instance,
    decode_segmentation,
    directory_sink,
    read_coco,
)

DOMAINS = ("scenes", "cells")


def write_synthetic_coco(
    split: str, n: int, out_dir: str | os.PathLike[str], start: int = 0,
    progress: bool = True, domain: str = "scenes",
) -> Path:
    """Write images ``start .. start + n - 1`` of a synthetic split as a COCO dataset.

    Layout: ``out_dir/images/<split>_<index>.png`` and ``out_dir/annotations.json`` with RLE
    segmentations; each annotation also has ``level`` (0 whole, 1 part, 2 sub-part),
    ``parent_id`` and ``shape``.

    Args:
        domain: ``scenes`` (:mod:`samkit.data.synthetic`, what nano trains on) or ``cells``
            (:mod:`samkit.data.cells`: 16-bit grayscale PNGs of crowded, touching cells).
    """
    from tqdm import tqdm

    from samkit.data.cells import make_cells
    from samkit.data.synthetic import make_scene

    if domain not in DOMAINS:
        raise InputError(f"unknown synthetic domain {domain!r}; use one of {', '.join(DOMAINS)}")
    make = make_scene if domain == "scenes" else make_cells
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter("coco", directory_sink(out), info={
        "description": f"samkit synthetic {domain}, split {split!r}, indices "
                       f"{start}..{start + n - 1}"})
    next_id = 1
    for index in tqdm(range(start, start + n), desc=f"synth {split}", disable=not progress):
        scene = make(split, index)
        name = f"{split}_{index:06d}.png"
        Image.fromarray(scene.image).save(out / "images" / name)
        h, w = scene.image.shape[:2]
        instances = [
            Instance(mask=inst.mask, id=next_id + j, extra={
                "level": inst.level, "shape": inst.kind,
                "parent_id": None if inst.parent is None else next_id + inst.parent})
            for j, inst in enumerate(scene.instances)
        ]
        next_id += len(instances)
        writer.add(ImageEntry(name, h, w, instances, id=index + 1))
    writer.close()
    return out / "annotations.json"


def annotation_mask(ann: dict[str, Any], h: int, w: int) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO annotation given as RLE (compressed or not) or polygons."""
    return decode_segmentation(ann["segmentation"], h, w)


def load_coco(path: str | os.PathLike[str]) -> tuple[list[dict], dict[int, list[dict]]]:
    """Images and annotations grouped by image id, with a clear error for bad files."""
    data = read_coco(path)
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    return data["images"], by_image


def iter_masks(anns: Iterable[dict], h: int, w: int) -> Iterable[tuple[dict, np.ndarray]]:
    for ann in anns:
        yield ann, annotation_mask(ann, h, w)
