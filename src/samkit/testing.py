"""Utilities for tests and benchmarks (not needed to use samkit)."""

from __future__ import annotations

import torch

from samkit.config import SamConfig
from samkit.registry import build_sam_from_config


def lively_state_dict(config: SamConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official layout that give non-trivial masks.

    Zero-initialised tensors (positions, relative positions) get noise, mask logits are
    sharpened so stability scores vary, and predicted IoUs are centred near 0.9 so that the
    generator's default thresholds keep some masks and drop others.
    """
    torch.manual_seed(seed)
    model = build_sam_from_config(config)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    for k, v in sd.items():
        if "pos_embed" in k or "rel_pos" in k:
            sd[k] = 0.2 * torch.randn(v.shape, generator=gen)
        elif "attention_biases" in k:  # TinyViT: per-offset attention biases
            sd[k] = 0.5 * torch.randn(v.shape, generator=gen)
        elif k.endswith("bn.running_var"):  # batch-norm statistics that are not the identity
            sd[k] = 0.5 + torch.rand(v.shape, generator=gen)
        elif k.endswith(("bn.running_mean", "bn.bias")):
            sd[k] = 0.1 * torch.randn(v.shape, generator=gen)
        elif k.endswith("bn.weight"):
            sd[k] = 1.0 + 0.1 * torch.randn(v.shape, generator=gen)
    # Spatially constant upscaling kernels make masks follow the image content (blobs) instead
    # of a 4x4 checkerboard, and a sharper positional encoding makes them depend on the click.
    for key in ("mask_decoder.output_upscaling.0.weight", "mask_decoder.output_upscaling.3.weight"):
        sd[key] = sd[key][:, :, :1, :1].expand_as(sd[key]).clone()
    sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] *= 4.0
    n_tokens = config.num_multimask_outputs + 1
    last = config.iou_head_depth - 1
    for i in range(n_tokens):
        key = f"mask_decoder.output_hypernetworks_mlps.{i}.layers.2.weight"
        sd[key] = sd[key] * 3000.0
    sd[f"mask_decoder.iou_prediction_head.layers.{last}.weight"] *= 0.3
    sd[f"mask_decoder.iou_prediction_head.layers.{last}.bias"] = 0.9 + 0.02 * torch.randn(
        n_tokens, generator=gen
    )
    return sd
