"""Pure helpers: RLE against pycocotools (property test), boxes, crops, stability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from samkit.ops import (
    MaskData,
    area_from_rle,
    batched_mask_to_box,
    build_point_grid,
    calculate_stability_score,
    coco_encode_rle,
    decode_coco_rle,
    encode_coco_masks,
    generate_crop_boxes,
    mask_to_rle_pytorch,
    remove_small_regions,
    rle_to_mask,
)

masks_strategy = st.integers(1, 12).flatmap(
    lambda h: st.integers(1, 12).flatmap(
        lambda w: st.integers(1, 4).flatmap(
            lambda b: arrays(np.bool_, (b, h, w))
        )
    )
)


@settings(max_examples=200, deadline=None)
@given(masks_strategy)
def test_rle_agrees_with_pycocotools(masks):
    rles = mask_to_rle_pytorch(torch.from_numpy(masks))
    coco = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for m, rle, ref in zip(masks, rles, coco):
        assert rle["size"] == list(m.shape)
        assert np.array_equal(rle_to_mask(rle), m)
        assert area_from_rle(rle) == int(m.sum()) == int(mask_utils.area(ref))
        compressed = coco_encode_rle(rle)
        assert compressed["counts"] == ref["counts"].decode()
        assert np.array_equal(decode_coco_rle(compressed), m)
    assert [r["counts"] for r in encode_coco_masks(masks)] == [r["counts"].decode() for r in coco]


def test_rle_size_mismatch():
    with pytest.raises(ValueError, match="sum to"):
        rle_to_mask({"size": [2, 2], "counts": [1, 1]})


def test_mask_to_box():
    m = torch.zeros(3, 10, 12, dtype=torch.bool)
    m[0, 2:5, 3:9] = True
    m[1, 9, 11] = True
    assert batched_mask_to_box(m).tolist() == [[3, 2, 8, 4], [11, 9, 11, 9], [0, 0, 0, 0]]


def test_crop_boxes_cover_image():
    boxes, layers = generate_crop_boxes((600, 800), 2, 512 / 1500)
    assert boxes[0] == [0, 0, 800, 600] and layers == [0] + [1] * 4 + [2] * 16
    cover = np.zeros((600, 800), bool)
    for x0, y0, x1, y1 in boxes[1:5]:
        cover[y0:y1, x0:x1] = True
    assert cover.all()


def test_point_grid():
    g = build_point_grid(4)
    assert g.shape == (16, 2) and g.min() == 0.125 and g.max() == 0.875
    assert g[1].tolist() == [0.375, 0.125]  # x varies fastest


def test_stability_score():
    logits = torch.tensor([[[-3.0, -0.5, 0.5, 3.0]]])
    # > +1: 1 pixel; > -1: 3 pixels
    assert calculate_stability_score(logits, 0.0, 1.0).item() == pytest.approx(1 / 3)


def test_remove_small_regions():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5, 5] = False  # a 1-pixel hole
    m[17, 17] = True  # a 1-pixel island
    filled, changed = remove_small_regions(m, 4, "holes")
    assert changed and filled[5, 5]
    cleaned, changed = remove_small_regions(filled, 4, "islands")
    assert changed and not cleaned[17, 17] and cleaned.sum() == 100
    with pytest.raises(ValueError, match="mode"):
        remove_small_regions(m, 4, "blobs")


def test_mask_data_filter_and_cat():
    d = MaskData(a=torch.arange(4), b=np.arange(4), c=["w", "x", "y", "z"])
    d.filter(torch.tensor([True, False, True, False]))
    d.cat(MaskData(a=torch.tensor([9]), b=np.array([9]), c=["q"]))
    assert d["a"].tolist() == [0, 2, 9] and d["b"].tolist() == [0, 2, 9]
    assert d["c"] == ["w", "y", "q"]
    d.filter(torch.tensor([2, 0]))
    assert d["c"] == ["q", "w"]


def test_the_fast_generators_first_pass_is_every_other_grid_point():
    from samkit.amg import coarse_subset
    from samkit.ops import build_point_grid

    grid = build_point_grid(8)
    first = coarse_subset(len(grid))
    assert first.sum() == 16
    xs, ys = np.unique(grid[first, 0]), np.unique(grid[first, 1])
    assert len(xs) == len(ys) == 4  # a 4 x 4 sub-grid, spread over the whole image
    np.testing.assert_allclose(xs, np.unique(grid[:, 0])[::2])
    assert coarse_subset(10).tolist() == [i % 4 == 0 for i in range(10)]  # not a square grid
