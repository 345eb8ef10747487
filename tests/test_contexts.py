"""The public API as users call it: plainly, under ``torch.no_grad()`` and under
``torch.inference_mode()``, with the model built inside and outside that context."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from samkit import SamAutomaticMaskGenerator, SamPredictor, build_sam, save_checkpoint
from samkit.registry import build_sam_from_config
from samkit.testing import lively_state_dict

from helpers import TINY, scene

CONTEXTS = {
    "plain": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def _build():
    model = build_sam_from_config(TINY)
    model.load_state_dict(lively_state_dict(TINY, seed=4))
    return model


@pytest.fixture(scope="module")
def reference():
    """Masks, scores and generator output of a model used with no context at all."""
    model = _build()
    return _use(model)


def _use(model):
    img = scene(120, 160, seed=2)
    predictor = SamPredictor(model)
    predictor.set_image(img)
    click = predictor.predict(point_coords=np.array([[60, 50]]), point_labels=np.array([1]))
    box = predictor.predict(box=np.array([10, 20, 90, 100]), multimask_output=False)
    refined = predictor.predict(point_coords=np.array([[60, 50], [20, 20]]),
                                point_labels=np.array([1, 0]),
                                mask_input=click[2][np.argmax(click[1])][None],
                                multimask_output=False)
    boxes = predictor.transform.apply_boxes_torch(
        torch.tensor([[10, 20, 90, 100], [50, 5, 150, 60], [0, 0, 160, 120]]), img.shape[:2])
    many = predictor.predict_torch(None, None, boxes=boxes, multimask_output=False)
    records = SamAutomaticMaskGenerator(model, points_per_side=6).generate(img)
    return {
        "click": click[0], "scores": click[1], "box": box[0], "refined": refined[0],
        "many": many[0].cpu().numpy(), "amg": [r["segmentation"] for r in records],
    }


def _same(a, b):
    for key in ("click", "scores", "box", "refined", "many"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert len(a["amg"]) == len(b["amg"]) > 0
    for x, y in zip(a["amg"], b["amg"]):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("use_in", list(CONTEXTS))
@pytest.mark.parametrize("build_in", list(CONTEXTS))
def test_predictor_and_generator_in_every_context(build_in, use_in, reference):
    with CONTEXTS[build_in]():
        model = _build()
    with CONTEXTS[use_in]():
        out = _use(model)
    _same(out, reference)


@pytest.mark.parametrize("build_in", ["no_grad", "inference_mode"])
def test_checkpoint_loaded_in_a_context(build_in, tmp_path, reference):
    path = save_checkpoint(_build(), tmp_path / "m.safetensors")
    with CONTEXTS[build_in]():
        model = build_sam(checkpoint=path)
    _same(_use(model), reference)
    with torch.inference_mode():
        _same(_use(model), reference)


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_cli_inside_a_context(context, tmp_path):
    from PIL import Image

    from samkit.cli import main

    path = save_checkpoint(_build(), tmp_path / "m.safetensors")
    Image.fromarray(scene(120, 160, seed=2)).save(tmp_path / "a.png")
    with CONTEXTS[context]():
        assert main(["segment", str(tmp_path / "a.png"), "--checkpoint", str(path),
                     "--point", "60,50", "-o", str(tmp_path / "seg")]) == 0
        assert main(["amg", str(tmp_path / "a.png"), "--checkpoint", str(path),
                     "--points-per-side", "4", "-o", str(tmp_path / "amg")]) == 0
    assert (tmp_path / "seg" / "a_mask.png").exists()
    assert (tmp_path / "amg" / "annotations.json").exists() or any((tmp_path / "amg").iterdir())
