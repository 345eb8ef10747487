"""Every speed-up switch against the plain path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit import SamAutomaticMaskGenerator, SamPredictor
from samkit.accel import SharedImageMaskDecoder, use_fused_attention
from samkit.modeling.mask_decoder import MaskDecoder
from samkit.registry import build_sam_from_config

from helpers import TINY, lively_state_dict, scene


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


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
    assert len(r1) == len(r2) > 0
    for rec in r1:  # every mask has its counterpart (order may differ on near-equal scores)
        best = max(_iou(rec["segmentation"], other["segmentation"]) for other in r2)
        assert best >= 0.99, best
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


@pytest.mark.parametrize("chunk", [None, 1, 4, 5])
def test_fast_decoder_matches_plain(chunk):
    from samkit.accel import use_fast_decoder

    plain = use_fast_decoder(_model(), enabled=False)
    fast = use_fast_decoder(_model(), prompt_chunk=chunk)
    assert isinstance(fast.mask_decoder, SharedImageMaskDecoder)
    assert type(plain.mask_decoder) is MaskDecoder
    img = scene(120, 160, seed=3)
    p, q = SamPredictor(plain), SamPredictor(fast)
    p.set_image(img)
    q.set_image(img)
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(13, 2, 2, generator=gen) * 128
    labels = torch.randint(0, 2, (13, 2), generator=gen)
    boxes = torch.sort(torch.rand(13, 2, 2, generator=gen) * 128, dim=1)[0].reshape(13, 4)
    for kw in (dict(point_coords=pts, point_labels=labels),
               dict(point_coords=None, point_labels=None, boxes=boxes),
               dict(point_coords=pts, point_labels=labels, boxes=boxes, multimask_output=False)):
        a, sa, la = p.predict_torch(**kw)
        b, sb, lb = q.predict_torch(**kw)
        assert torch.equal(a, b)  # identical masks
        assert (la - lb).abs().max() <= 1e-5 * la.abs().max() and torch.allclose(sa, sb, atol=1e-5)
        # refinement: per-prompt mask_input means no shared image side, chunks still apply
        a2 = p.predict_torch(**kw, mask_input=la[:, :1])[0]
        b2 = q.predict_torch(**kw, mask_input=lb[:, :1])[0]
        assert torch.equal(a2, b2)
    r1 = SamAutomaticMaskGenerator(plain, points_per_side=8).generate(img)
    r2 = SamAutomaticMaskGenerator(fast, points_per_side=8).generate(img)
    assert [r["segmentation"].tolist() for r in r1] == [r["segmentation"].tolist() for r in r2]


def test_fast_decoder_keeps_gradients_and_is_default():
    from samkit.accel import use_fast_decoder

    fast = _model()
    assert isinstance(fast.mask_decoder, SharedImageMaskDecoder)
    assert fast.mask_decoder.prompt_chunk == 4
    plain = use_fast_decoder(_model(), enabled=False)
    emb = torch.randn(1, TINY.prompt_embed_dim, 16, 16, generator=torch.Generator().manual_seed(1))
    grads, outs = [], []
    for m in (plain, fast):
        e = emb.clone().requires_grad_(True)
        pts = torch.tensor([[[10.0, 20.0]], [[40.0, 50.0]], [[100.0, 30.0]], [[5.0, 5.0]],
                            [[70.0, 70.0]], [[30.0, 90.0]]])
        sp, de = m.prompt_encoder(points=(pts, torch.ones(6, 1, dtype=torch.long)), boxes=None,
                                  masks=None)
        # batch-1 dense prompt: the fast decoder takes its shared-image-side path
        out, iou = m.mask_decoder(e, m.prompt_encoder.get_dense_pe(), sp, de[:1], True)
        (out.square().mean() + iou.sum()).backward()
        outs.append(out.detach())
        grads.append((e.grad, m.mask_decoder.transformer.layers[0].cross_attn_token_to_image
                      .k_proj.weight.grad))
    assert torch.equal(outs[0], outs[1])  # forward: the same bits
    # Backward sums the shared side's gradient over prompts in another order, so gradients
    # agree to rounding relative to their size (AVX2 and AVX-512 kernels round differently).
    for a, b in zip(grads[0], grads[1]):
        assert a is not None and b is not None and a.abs().max() > 0
        assert (a - b).abs().max() <= 1e-4 * a.abs().max(), (a - b).abs().max()


def test_inference_layers_match_their_training_path_bit_for_bit():
    from samkit.accel import InPlaceGELU as FreshGELU
    from samkit.accel import InPlaceLayerNorm2d as LayerNorm2d

    gen = torch.Generator().manual_seed(0)
    norm = LayerNorm2d(8)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8, generator=gen))
        norm.bias.copy_(torch.randn(8, generator=gen))
    x = torch.randn(3, 8, 5, 7, generator=gen) * 3 + 1
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        trained = norm(xl.clone().requires_grad_(True))  # the plain (autograd) path
        with torch.no_grad():
            fast = norm(xl)
        assert torch.equal(trained.detach(), fast)
        assert torch.equal(xl, x)  # the input is not overwritten
    y = torch.randn(4, 6, generator=gen)
    ref = torch.nn.functional.gelu(y)
    with torch.no_grad():
        out = FreshGELU()(y.clone())
    assert torch.equal(ref, out)
    g = y.clone().requires_grad_(True)
    FreshGELU()(g).sum().backward()  # training path keeps gradients
    assert g.grad is not None and torch.equal(g, y)


@pytest.mark.parametrize("input_size", [(96, 128), (128, 72), (128, 128), (1, 128), (127, 5),
                                        (4, 4)])
def test_postprocess_upsamples_only_kept_rows_with_the_same_values(input_size):
    import torch.nn.functional as F

    model = _model()
    size = model.image_encoder.img_size
    low = torch.randn(3, 2, size // 4, size // 4, generator=torch.Generator().manual_seed(0)) * 9
    full = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)
    full = full[..., : input_size[0], : input_size[1]]
    assert torch.equal(model.postprocess_masks(low, input_size, input_size), full)
    orig = (input_size[0] * 3 + 1, input_size[1] + 2)
    resized = F.interpolate(full, orig, mode="bilinear", align_corners=False)
    assert torch.equal(model.postprocess_masks(low, input_size, orig), resized)


def _have_cxx() -> bool:
    import os
    import shutil

    return any(shutil.which(c) for c in (os.environ.get("CXX") or "g++", "clang++"))


@pytest.mark.skipif(not _have_cxx() and not __import__("os").environ.get("CI"),
                    reason="torch.compile on CPU needs a C++ compiler (CI has one)")
def test_compiled_model_agrees_with_eager_and_switches_off():
    from samkit.accel import use_compile

    eager, comp = _model(), use_compile(_model())
    assert set(comp.state_dict()) == set(eager.state_dict())  # modules untouched
    img = scene(120, 160, seed=5)
    p, q = SamPredictor(eager), SamPredictor(comp)
    p.set_image(img)
    q.set_image(img)
    emb_p, emb_q = p.get_image_embedding(), q.get_image_embedding()
    assert (emb_p - emb_q).abs().max() <= 1e-4 * emb_p.abs().max()
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(9, 1, 2, generator=gen) * 128
    labels = torch.ones(9, 1, dtype=torch.long)
    a, sa, la = p.predict_torch(pts, labels)
    b, sb, lb = q.predict_torch(pts, labels)
    assert (la - lb).abs().max() <= 1e-3 * la.abs().max()
    assert torch.allclose(sa, sb, atol=1e-4)
    assert (a ^ b).float().mean() <= 1e-3  # boundary pixels of near-zero logits only
    inter = (a & b).sum((-1, -2)).float()
    union = (a | b).sum((-1, -2)).float()
    assert (inter / union)[union >= 100].min() >= 0.99
    use_compile(comp, enabled=False)  # back to the eager forwards: exact again
    q.set_image(img)
    assert torch.equal(q.get_image_embedding(), emb_p)
    assert torch.equal(q.predict_torch(pts, labels)[2], la)


def test_threads_follow_the_cpus_this_process_may_use(monkeypatch, tmp_path):
    import samkit.accel.runtime as accel

    assert accel.available_cpus() >= 1
    monkeypatch.setattr(accel.os, "sched_getaffinity", lambda pid: set(range(64)))
    real_path = accel.Path
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # a container limited to 1.5 CPUs
    monkeypatch.setattr(accel, "Path", lambda p: quota if p == "/sys/fs/cgroup/cpu.max"
                        else real_path(p))
    assert accel.available_cpus() == 1
    quota.write_text("max 100000\n")
    assert accel.available_cpus() == 64
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(accel, "available_cpus", lambda: 1)
        assert accel.set_threads() == 1 and torch.get_num_threads() == 1
        assert accel.set_threads(2) == 2 and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="threads must be >= 1"):
            accel.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_fused_tiny_vit_attention_matches_plain():
    from samkit.accel import FusedTinyViTAttention
    from samkit.config import SamConfig, TinyViTConfig

    config = SamConfig(TinyViTConfig((16, 32, 48, 64), (1, 1, 2, 1), (0, 2, 3, 4), (0, 4, 8, 16)),
                       image_size=256, prompt_embed_dim=32, mask_in_chans=8, decoder_depth=1,
                       decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32)
    state = lively_state_dict(config, seed=4)
    plain = build_sam_from_config(config)
    plain.load_state_dict(state)
    fast = use_fused_attention(build_sam_from_config(config))
    fast.load_state_dict(state)  # loaded after the switch: the biases are read per call
    assert any(isinstance(m, FusedTinyViTAttention) for m in fast.modules())
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = plain.image_encoder(x), fast.image_encoder(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    img = scene(120, 160, seed=1)
    p, q = SamPredictor(plain), SamPredictor(fast)
    p.set_image(img)
    q.set_image(img)
    kw = dict(point_coords=np.array([[50, 60]]), point_labels=np.array([1]))
    (m1, _, _), (m2, _, _) = p.predict(**kw), q.predict(**kw)
    assert (m1 != m2).mean() < 1e-3
    use_fused_attention(fast, enabled=False)
    with torch.no_grad():
        assert torch.equal(fast.image_encoder(x), a)  # switching off restores the plain path


def test_dynamic_int8_quantizes_the_encoder_and_keeps_masks_close():
    from samkit.accel import quantize_dynamic_int8

    exact = build_sam_from_config(TINY)
    exact.load_state_dict(lively_state_dict(TINY, seed=2))
    q = build_sam_from_config(TINY)
    q.load_state_dict(lively_state_dict(TINY, seed=2))
    assert quantize_dynamic_int8(q) is q
    assert not any(type(m) is torch.nn.Linear for m in q.image_encoder.modules())
    img = scene(120, 160, seed=4)
    a, b = SamPredictor(exact), SamPredictor(q)
    with torch.inference_mode():
        a.set_image(img)
        b.set_image(img)
    ious = []
    for box in ([10, 10, 90, 80], [60, 40, 150, 110], [20, 50, 130, 119]):
        ma = a.predict(box=np.array(box), multimask_output=False)[0][0]
        mb = b.predict(box=np.array(box), multimask_output=False)[0][0]
        ious.append((ma & mb).sum() / max(1, (ma | mb).sum()))
    assert np.median(ious) >= 0.8, ious
