"""Images in every accepted form, and a clear error for each bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from samkit import SamPredictor, load_image
from samkit.io.image import to_rgb_uint8
from samkit.registry import build_sam_from_config

from helpers import TINY, lively_state_dict, scene


@pytest.fixture(scope="module")
def predictor():
    model = build_sam_from_config(TINY)
    model.load_state_dict(lively_state_dict(TINY))
    p = SamPredictor(model)
    p.set_image(scene(60, 80))
    return p


# -- accepted forms ------------------------------------------------------------------------
def test_grayscale_forms_equal_rgb():
    gray = scene(30, 40)[..., 0]
    rgb = np.repeat(gray[..., None], 3, axis=2)
    assert np.array_equal(to_rgb_uint8(gray), rgb)
    assert np.array_equal(to_rgb_uint8(gray[..., None]), rgb)


def test_rgba_drops_alpha_and_bgr_reverses():
    img = scene(30, 40)
    rgba = np.concatenate([img, np.full((30, 40, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(to_rgb_uint8(rgba), img)
    assert np.array_equal(to_rgb_uint8(img[..., ::-1], "BGR"), img)


def test_uint16_rescaled_by_range():
    x = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    out = to_rgb_uint8(x)[..., 0]
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[1, 1] == 255 and out[0, 1] == round(255 / 4)


def test_float_unit_range():
    x = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    assert to_rgb_uint8(x)[..., 0].tolist() == [[0, 128], [255, 64]]


def test_non_contiguous_and_pil(predictor):
    img = scene(60, 80)
    predictor.set_image(img)
    ref = predictor.get_image_embedding().clone()
    wide = np.zeros((60, 160, 3), np.uint8)
    wide[:, ::2] = img
    predictor.set_image(wide[:, ::2])
    assert torch.equal(predictor.get_image_embedding(), ref)
    predictor.set_image(Image.fromarray(img))
    assert torch.equal(predictor.get_image_embedding(), ref)


def test_load_image_applies_exif_orientation(tmp_path):
    img = scene(20, 30)
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    pil.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.shape == (30, 20, 3)


def test_load_16bit_png(tmp_path):
    x = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 50).astype(np.uint16)
    path = tmp_path / "micro.png"
    Image.fromarray(x).save(path)
    out = load_image(path)
    assert out.shape == (20, 30, 3) and out.min() == 0 and out.max() == 255


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*bad\.png"):
        load_image(bad)


# -- bad images ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "exc", "pattern"),
    [
        (np.zeros((4, 4, 4, 3), np.uint8), ValueError, r"must have shape \(H, W\)"),
        (np.zeros((0, 10, 3), np.uint8), ValueError, "image is empty"),
        (np.zeros((10, 10, 5), np.uint8), ValueError, "1, 3 or 4 channels"),
        (np.zeros((3, 10, 12), np.uint8), ValueError, "channels-first"),
        (np.full((4, 4, 3), np.nan, np.float32), ValueError, "NaN or infinite"),
        (np.full((4, 4, 3), 3.0, np.float32), ValueError, r"values in \[0, 1\]"),
        ([[1, 2], [3, 4]], TypeError, "numpy array"),
        (torch.zeros(3, 4, 4), TypeError, "set_torch_image"),
        (np.zeros((4, 4), bool), TypeError, "boolean"),
    ],
)
def test_bad_images(predictor, image, exc, pattern):
    with pytest.raises(exc, match=pattern):
        predictor.set_image(image)


def test_unknown_image_format(predictor):
    with pytest.raises(ValueError, match="image_format must be one of"):
        predictor.set_image(scene(10, 10), image_format="RGBA")


# -- bad prompts ---------------------------------------------------------------------------
P1 = np.array([[10, 20]])


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(point_coords=np.array([10, 20]), point_labels=np.array([1])), r"\(N, 2\)"),
        (dict(point_coords=np.zeros((2, 3)), point_labels=np.array([1, 1])), r"\(N, 2\)"),
        (dict(point_coords=P1), "point_labels is required"),
        (dict(point_labels=np.array([1])), "without point_coords"),
        (dict(point_coords=P1, point_labels=np.array([1, 0])), "one label per point"),
        (dict(point_coords=P1, point_labels=np.array([2])), "1 \\(foreground\\) or 0"),
        (dict(point_coords=np.array([[np.nan, 1.0]]), point_labels=np.array([1])), "NaN"),
        (dict(box=np.array([1, 2, 3])), "box must be 4 numbers"),
        (dict(box=np.array([[1, 2, 3, 4], [1, 2, 3, 4]])), "box must be 4 numbers"),
        (dict(box=np.array([50, 50, 10, 10])), "x0 <= x1"),
        (dict(point_coords=P1, point_labels=np.array([1]), mask_input=np.zeros((1, 32, 32))),
         r"mask_input must have shape \(1, 64, 64\)"),
    ],
)
def test_bad_prompts(predictor, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        predictor.predict(**kwargs)


def test_predict_before_set_image():
    p = SamPredictor(build_sam_from_config(TINY))
    with pytest.raises(RuntimeError, match=r"call predictor\.set_image"):
        p.predict(point_coords=P1, point_labels=np.array([1]))


def test_predict_torch_shape_errors(predictor):
    with pytest.raises(ValueError, match=r"boxes must be \(B, 4\)"):
        predictor.predict_torch(None, None, boxes=torch.zeros(4))
    with pytest.raises(ValueError, match="batch sizes differ"):
        predictor.predict_torch(torch.zeros(2, 1, 2), torch.ones(2, 1), boxes=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="long side must be 256"):
        predictor.set_torch_image(torch.zeros(1, 3, 100, 100), (100, 100))


def test_set_image_batch_matches_single(predictor):
    imgs = [scene(60, 80, seed=0), scene(50, 50, seed=1)]
    predictor.set_image_batch(imgs)
    masks, scores, _logits = predictor.predict_batch(
        point_coords_batch=[P1, P1], point_labels_batch=[np.array([1])] * 2
    )
    for img, m, s in zip(imgs, masks, scores):
        predictor.set_image(img)
        m1, s1, _ = predictor.predict(point_coords=P1, point_labels=np.array([1]))
        assert m.shape == m1.shape
        assert (m != m1).mean() < 1e-3
        np.testing.assert_allclose(s, s1, atol=1e-4)
    boxes = [np.array([[0, 0, 30, 30], [10, 10, 60, 40]]), np.array([5, 5, 40, 40])]
    masks, _, _ = predictor.predict_batch(box_batch=boxes, multimask_output=False)
    assert masks[0].shape == (2, 1, 60, 80) and masks[1].shape == (1, 50, 50)
