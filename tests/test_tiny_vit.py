"""TinyViT (MobileSAM's vit_t) against the MobileSAM reference on shared random weights."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from samkit import SamAutomaticMaskGenerator, SamPredictor, build_sam
from samkit.checkpoint import infer_config
from samkit.config import SamConfig, TinyViTConfig
from samkit.registry import build_sam_from_config, get_config
from samkit.testing import lively_state_dict

from helpers import scene

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if os.environ.get("CI"):  # a dev dependency: CI must run these tests, never skip them
        import mobile_sam
    else:
        mobile_sam = pytest.importorskip("mobile_sam")

# A small TinyViT with MobileSAM's stage layout (the reference accepts it too: its last
# stage is 320 wide, where its patch merging keeps the resolution).
SMALL = SamConfig(
    TinyViTConfig(embed_dims=(16, 32, 48, 320), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4),
                  window_sizes=(7, 7, 14, 7)),
    image_size=256, prompt_embed_dim=32, mask_in_chans=8, decoder_depth=2,
    decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32,
)


def _reference(config: SamConfig, state: dict):
    from mobile_sam.modeling import MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer

    enc, grid = config.encoder, config.embedding_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny = TinyViT(img_size=config.image_size, in_chans=3, num_classes=1000,
                       embed_dims=list(enc.embed_dims), depths=list(enc.depths),
                       num_heads=list(enc.num_heads), window_sizes=list(enc.window_sizes),
                       mlp_ratio=enc.mlp_ratio, drop_rate=0.0, drop_path_rate=0.0,
                       mbconv_expand_ratio=enc.mbconv_expand_ratio,
                       local_conv_size=enc.local_conv_size)
    # the reference's neck is 256 wide and its final grid fixed at 64: only SAM-sized
    # configurations compare (see test_small_config_builds_and_runs for the rest)
    ref = Sam(
        image_encoder=tiny,
        prompt_encoder=PromptEncoder(embed_dim=config.prompt_embed_dim,
                                     image_embedding_size=(grid, grid),
                                     input_image_size=(config.image_size, config.image_size),
                                     mask_in_chans=config.mask_in_chans),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=config.decoder_depth, embedding_dim=config.prompt_embed_dim,
            mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_num_heads),
            transformer_dim=config.prompt_embed_dim, iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    extra = {k: v for k, v in ref.state_dict().items() if ".head." in k or "norm_head" in k}
    ref.load_state_dict({**state, **extra}, strict=True)
    # The reference caches its attention biases when .eval() is called: call it after
    # loading (its own build calls it before, and so keeps zero biases).
    return ref.eval()


@pytest.fixture(scope="module")
def pair():
    config = get_config("vit_t")
    state = lively_state_dict(config, seed=1)
    ours = build_sam_from_config(config)  # in eval mode already: then loaded, the reference's
    ours.load_state_dict(state)  # cached-zero-bias trap; samkit computes biases per call
    return ours, _reference(config, state), state


def test_vit_t_matches_mobilesam(pair):
    ours, ref, _ = pair
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours.image_encoder(x), ref.image_encoder(x)
    assert a.shape == (1, 256, 64, 64)
    assert torch.equal(a, b)
    img = scene(300, 400, seed=3)
    p, q = SamPredictor(ours), mobile_sam.SamPredictor(ref)
    p.set_image(img)
    q.set_image(img)
    assert torch.equal(p.get_image_embedding(), q.get_image_embedding())
    for kw in ({"point_coords": np.array([[120, 100]]), "point_labels": np.array([1])},
               {"box": np.array([40, 30, 300, 250]), "multimask_output": False}):
        (m1, s1, l1), (m2, s2, l2) = p.predict(**kw), q.predict(**kw)
        assert np.array_equal(m1, m2) and np.array_equal(s1, s2) and np.array_equal(l1, l2)


def test_vit_t_generator_matches_mobilesam(pair):
    ours, ref, _ = pair
    img = scene(200, 260, seed=4)
    r1 = SamAutomaticMaskGenerator(ours, points_per_side=4).generate(img)
    r2 = mobile_sam.SamAutomaticMaskGenerator(ref, points_per_side=4).generate(img)
    assert len(r1) == len(r2)
    for x, y in zip(r1, r2):
        assert np.array_equal(x["segmentation"], y["segmentation"])


def test_mobile_sam_checkpoint_loads_strictly_and_is_recognised(pair, tmp_path):
    from samkit import sam_model_registry

    _, ref, _ = pair
    path = tmp_path / "mobile_sam.pt"
    torch.save(ref.state_dict(), path)  # MobileSAM's layout, classification head included
    assert infer_config(torch.load(path, weights_only=True)) == get_config("vit_t")
    for model in (sam_model_registry["vit_t"](checkpoint=path), build_sam(checkpoint=path)):
        assert model.config == get_config("vit_t")
        assert torch.equal(model.image_encoder.neck[0].weight, ref.image_encoder.neck[0].weight)


def test_small_config_builds_and_runs():
    model = build_sam_from_config(SMALL).train()
    s = SMALL.image_size
    out = model([{"image": torch.rand(3, s, s) * 255, "original_size": (s, s),
                  "point_coords": torch.tensor([[[s / 3, s / 2]]]),
                  "point_labels": torch.tensor([[1]])}], multimask_output=True)[0]
    assert out["low_res_logits"].shape == (1, 3, 4 * s // 16, 4 * s // 16)
    out["low_res_logits"].mean().backward()
    assert all(p.grad is not None for p in model.image_encoder.parameters())
    assert SamConfig.from_dict(SMALL.to_dict()) == SMALL
