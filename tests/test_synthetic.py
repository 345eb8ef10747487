"""Synthetic scenes: exact masks, determinism, held-out split, COCO writing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samkit.data.coco import annotation_mask, load_coco, write_synthetic_coco
from samkit.data.synthetic import make_scene


def test_deterministic_and_splits_differ():
    a, b = make_scene("train", 5), make_scene("train", 5)
    assert np.array_equal(a.image, b.image)
    assert len(a.instances) == len(b.instances)
    for x, y in zip(a.instances, b.instances):
        assert np.array_equal(x.mask, y.mask)
    c = make_scene("test", 5)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)
    with pytest.raises(ValueError, match="split must be one of"):
        make_scene("holdout", 0)


@pytest.mark.parametrize("index", range(6))
def test_masks_are_exact_visible_regions(index):
    scene = make_scene("val", index, size=(200, 240))
    h, w = scene.image.shape[:2]
    assert (h, w) == (200, 240) and scene.image.dtype == np.uint8
    top = [inst for inst in scene.instances if inst.level == 0]
    assert top, "every scene has annotated objects"
    for inst in scene.instances:
        assert inst.mask.shape == (h, w) and inst.mask.dtype == bool and inst.mask.sum() >= 24
        if inst.parent is not None:
            parent = scene.instances[inst.parent]
            assert parent.level == inst.level - 1
            assert not (inst.mask & ~parent.mask).any(), "a part lies inside its whole"
    # Visible regions of whole objects never overlap: occlusion is resolved exactly.
    total = np.zeros((h, w), int)
    for inst in top:
        total += inst.mask
    assert total.max() <= 1


def test_scene_families_appear():
    kinds, levels = set(), set()
    for i in range(30):
        for inst in make_scene("train", i, size=(160, 160)).instances:
            kinds.add(inst.kind)
            levels.add(inst.level)
    assert {"polygon", "ellipse", "blob", "thin", "holed", "parts"} <= kinds
    assert {0, 1, 2} <= levels


def test_write_coco_roundtrip(tmp_path):
    path = write_synthetic_coco("test", 3, tmp_path, progress=False)
    images, by_image = load_coco(path)
    assert len(images) == 3
    info = images[0]
    scene = make_scene("test", 0)
    anns = by_image[info["id"]]
    assert len(anns) == len(scene.instances)
    for ann, inst in zip(anns, scene.instances):
        m = annotation_mask(ann, info["height"], info["width"])
        assert np.array_equal(m, inst.mask) and ann["area"] == int(m.sum())
    data = json.loads(path.read_text())
    parents = [a for a in data["annotations"] if a["parent_id"] is not None]
    ids = {a["id"] for a in data["annotations"]}
    assert all(a["parent_id"] in ids for a in parents)


def test_polygon_annotations_are_read():
    ann = {"segmentation": [[2, 2, 8, 2, 8, 6, 2, 6]]}
    m = annotation_mask(ann, 10, 10)
    assert m[3, 3] and not m[8, 8]


def test_bad_coco_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a COCO instances file"):
        load_coco(bad)
