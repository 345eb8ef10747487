"""The bundled nano model: loads with no arguments, runs the demo, segments real coins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from samkit import SamPredictor, build_sam, sam_model_registry
from samkit.cli import main
from samkit.registry import MODELS, get_config


@pytest.fixture(scope="module")
def nano():
    return build_sam("nano")


def test_bundled_weights_load_without_arguments(nano):
    info = MODELS["nano"].weights
    assert info is not None and info.bundled_path().stat().st_size <= 25 * 2**20
    assert nano.config == get_config("nano")
    again = sam_model_registry["nano"]()
    for (k, a), b in zip(nano.state_dict().items(), again.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy()), k


def test_nano_is_a_tiny_vit_sam_recognised_from_its_weights(nano, tmp_path):
    """nano v2 keeps SAM's interface (TinyViT encoder -> 32 x 32 embedding grid -> SAM's
    prompt encoder and mask decoder) in MobileSAM's key layout, so its weights are recognised
    without the stored config too."""
    from safetensors.torch import save_file

    from samkit.checkpoint import infer_config

    assert nano.config.encoder.kind == "tiny_vit"
    emb = nano.image_encoder(torch.zeros(1, 3, 512, 512))
    assert emb.shape == (1, 128, 32, 32)
    state = nano.state_dict()
    assert infer_config(state).encoder == get_config("nano").encoder
    bare = tmp_path / "bare.safetensors"  # no config in the metadata
    save_file({k: v.contiguous() for k, v in state.items()}, str(bare))
    again = build_sam(checkpoint=bare)
    assert again.config.encoder == nano.config.encoder


def coin_masks() -> tuple[np.ndarray, list[np.ndarray]]:
    """scikit-image's coins photograph and one mask per coin derived from the image itself
    (edge map + threshold markers -> watershed -> fill holes -> connected components)."""
    from scipy import ndimage as ndi
    from skimage import data, filters, segmentation

    img = data.coins()
    markers = np.zeros_like(img)
    markers[img < 30] = 1
    markers[img > 150] = 2
    fg = ndi.binary_fill_holes(segmentation.watershed(filters.sobel(img), markers) - 1)
    labels, n = ndi.label(fg)
    masks = [labels == i for i in range(1, n + 1)]
    return img, [m for m in masks if m.sum() > 500]


def test_coins_one_click_each(nano):
    img, coins = coin_masks()
    assert len(coins) == 24
    predictor = SamPredictor(nano)
    predictor.set_image(img)  # grayscale: replicated to RGB
    good = 0
    for m in coins:
        ys, xs = np.nonzero(m)
        click = np.array([[xs.mean(), ys.mean()]])
        masks, scores, _ = predictor.predict(point_coords=click, point_labels=np.array([1]))
        pred = masks[np.argmax(scores)]
        good += (pred & m).sum() / (pred | m).sum() >= 0.8
    assert good >= 18, f"only {good} of 24 coins at IoU >= 0.8"


def test_demo_writes_overlay(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "demo_overlay.png") in out
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["click_area"] > 100
    overlay = np.asarray(Image.open(tmp_path / "demo_overlay.png"))
    assert overlay.shape == (384, 2 * 512 + 8, 3)


def test_the_fast_generator_finds_most_of_the_exact_generators_masks():
    from pycocotools import mask as mask_utils
    from skimage import data

    from samkit import SamAutomaticMaskGenerator

    nano = build_sam("nano")
    img = data.coins()[::2, ::2]
    exact = SamAutomaticMaskGenerator(nano, points_per_side=16).generate(img)
    fast = SamAutomaticMaskGenerator(nano, points_per_side=16, strategy="fast").generate(img)
    assert len(exact) >= 10

    def enc(masks):
        return [mask_utils.encode(np.asfortranarray(m["segmentation"].astype(np.uint8)))
                for m in masks]

    ious = mask_utils.iou(enc(exact), enc(fast), [0] * len(fast)).max(axis=1)
    assert (ious >= 0.9).mean() >= 0.85, ious
