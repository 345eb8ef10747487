"""Every speed-up switch against the plain path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit import SamAutomaticMaskGenerator, SamPredictor
from samkit.accel import use_fused_attention
from samkit.registry import build_sam_from_config

from helpers import TINY, lively_state_dict, scene


def _model():
    m = build_sam_from_config(TINY)
    m.load_state_dict(lively_state_dict(TINY, seed=2))
    return m


@pytest.mark.parametrize("chunk", [None, 3, 16])
def test_fused_attention_matches_plain(chunk):
    plain, fast = _model(), use_fused_attention(_model(), query_chunk_rows=chunk)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = plain.image_encoder(x), fast.image_encoder(x)
    assert (a - b).abs().max() <= 1e-4
    img = scene(120, 160, seed=1)
    p, q = SamPredictor(plain), SamPredictor(fast)
    p.set_image(img)
    q.set_image(img)
    kw = dict(point_coords=np.array([[50, 60], [10, 110]]), point_labels=np.array([1, 0]))
    (m1, s1, _), (m2, s2, _) = p.predict(**kw), q.predict(**kw)
    assert (m1 != m2).mean() < 1e-3
    np.testing.assert_allclose(s1, s2, atol=1e-4)
    r1 = SamAutomaticMaskGenerator(plain, points_per_side=8).generate(img)
    r2 = SamAutomaticMaskGenerator(fast, points_per_side=8).generate(img)
    assert len(r1) == len(r2)
    use_fused_attention(fast, enabled=False)
    with torch.no_grad():
        assert torch.equal(fast.image_encoder(x), a)  # switching off restores the plain path


def test_bf16_encoder_masks_agree_with_fp32():
    from samkit.accel import set_precision

    plain, low = _model(), set_precision(_model(), "bf16")
    img = scene(120, 160, seed=1)
    p, q = SamPredictor(plain), SamPredictor(low)
    p.set_image(img)
    q.set_image(img)
    assert q.features.dtype == torch.float32
    ious = []
    for xy in ([50, 60], [120, 30], [20, 100], [140, 100]):
        kw = dict(point_coords=np.array([xy]), point_labels=np.array([1]),
                  multimask_output=False)
        a, b = p.predict(**kw)[0][0], q.predict(**kw)[0][0]
        ious.append((a & b).sum() / max(1, (a | b).sum()))
    assert min(ious) >= 0.9, ious
    with pytest.raises(ValueError, match="precision must be one of"):
        set_precision(plain, "int3")
