"""Contract tests over every registered model (meta tensors: no memory, no time)."""

from __future__ import annotations

import pytest
import torch

from samkit import SamConfig, build_sam, list_models
from samkit.registry import build_sam_from_config, get_config

from helpers import TINY

# Parameter counts of the official models.
OFFICIAL_PARAMS = {"vit_b": 93_735_472, "vit_l": 312_342_832, "vit_h": 641_090_608}


@pytest.mark.parametrize("name", list(OFFICIAL_PARAMS))
def test_registered_models_build_with_official_sizes(name):
    with torch.device("meta"):
        model = build_sam_from_config(get_config(name))
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]
    assert model.prompt_encoder.image_embedding_size == (64, 64)
    assert model.prompt_encoder.mask_input_size == (256, 256)


def test_every_registered_model_builds():
    assert set(OFFICIAL_PARAMS) < set(list_models())
    for name in list_models():
        with torch.device("meta"):
            model = build_sam_from_config(get_config(name))
        grid = get_config(name).embedding_size
        assert model.prompt_encoder.mask_input_size == (4 * grid, 4 * grid)
    with torch.device("meta"):
        nano = build_sam_from_config(get_config("nano"))
    assert sum(p.numel() for p in nano.parameters()) == 5_636_336


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        SamConfig.vit(encoder_embed_dim=48, encoder_depth=2, encoder_num_heads=3,
                  encoder_global_attn_indexes=(1,), image_size=128, patch_size=8,
                  window_size=4, prompt_embed_dim=64, decoder_num_heads=4),
    ],
)
def test_any_config_runs_forward_and_backward(config):
    model = build_sam_from_config(config).train()
    s = config.image_size
    out = model(
        [{"image": torch.rand(3, s, s) * 255, "original_size": (s, s),
          "point_coords": torch.tensor([[[s / 3, s / 2]]]), "point_labels": torch.tensor([[1]])}],
        multimask_output=True,
    )[0]
    grid = config.embedding_size
    assert out["low_res_logits"].shape == (1, 3, 4 * grid, 4 * grid)
    assert out["masks"].shape == (1, 3, s, s)
    out["low_res_logits"].mean().backward()
    assert all(p.grad is not None for p in model.mask_decoder.transformer.parameters())
    assert all(p.grad is not None for p in model.image_encoder.parameters())


def test_bad_config_is_explained():
    with pytest.raises(ValueError, match="encoder_num_heads must divide"):
        SamConfig.vit(encoder_embed_dim=30, encoder_num_heads=4)
    with pytest.raises(ValueError, match="global_attn_indexes"):
        SamConfig.vit(encoder_depth=2, encoder_global_attn_indexes=(5,))


def test_build_sam_needs_something():
    with pytest.raises(ValueError, match="needs a model_type, a checkpoint"):
        build_sam()
