"""Opt-in speed-ups applied to a built model (never a second copy of the model code).

Each switch flips a flag that the model's own modules read, so the plain path stays the
reference and every switch is tested for parity against it.
"""

from __future__ import annotations

import torch

from samkit.modeling import Sam
from samkit.modeling import image_encoder as _enc
from samkit.modeling import transformer as _tr


def use_fused_attention(model: Sam, enabled: bool = True,
                        query_chunk_rows: int | None = None) -> Sam:
    """Use ``scaled_dot_product_attention`` (carrying the relative-position bias) everywhere.

    Args:
        model: A built model; changed in place and returned.
        enabled: False restores the plain path.
        query_chunk_rows: For the global-attention blocks, process queries this many grid
            rows at a time, so their ``(N, N)`` attention matrix is never held whole (memory-
            lean; e.g. 16 of SAM's 64 rows holds a quarter). None: all rows at once.
    """
    for module in model.modules():
        if isinstance(module, _enc.Attention):
            module.use_sdpa = enabled
            is_global = module.use_rel_pos and module.rel_pos_h.shape[0] == 2 * (
                model.image_encoder.img_size // model.image_encoder.patch_embed.proj.stride[0]
            ) - 1
            module.query_chunk_rows = query_chunk_rows if (enabled and is_global) else None
        elif isinstance(module, _tr.Attention):
            module.use_sdpa = enabled
    return model


def use_fast_decoder(model: Sam, enabled: bool = True, prompt_chunk: int | None = 4) -> Sam:
    """Mask-decoder switches (on by default in every built model; same math as the official).

    - shared image side: with one image and no ``mask_input``, the first transformer block's
      projections of the image embedding are computed once and broadcast over the prompt
      sets instead of once per prompt set (a third of the decoder's per-prompt FLOPs).
    - prompt chunks: on CPU, prompt sets run ``prompt_chunk`` at a time so each
      ``(chunk, 4096, 256)`` activation stays in cache (SAM's ``points_per_batch=64`` makes
      268 MB tensors otherwise). GPUs take the batch whole.

    Args:
        model: A built model; changed in place and returned.
        enabled: False restores the plain path (the reference in the parity tests).
        prompt_chunk: Prompt sets per chunk on CPU; None: no chunking.
    """
    model.mask_decoder.share_image_side = enabled
    model.mask_decoder.prompt_chunk = prompt_chunk if enabled else None
    return model


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def set_precision(model: Sam, precision: str = "fp32") -> Sam:
    """Run the image encoder in ``"fp32"``, ``"bf16"`` or ``"fp16"`` (embeddings come back as
    float32; the prompt encoder and mask decoder stay float32). Changes ``model`` in place.

    bf16 pays off on CPUs with AVX-512 BF16 / AMX and on GPUs; fp16 is for GPUs.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    model.image_encoder.to(PRECISIONS[precision])
    return model


def optimize(model: Sam, precision: str = "fp32", fused_attention: bool = True,
             query_chunk_rows: int | None = 16) -> Sam:
    """Apply the recommended switches: fused attention (global blocks in query chunks) and
    the image encoder's precision. Changes ``model`` in place and returns it."""
    use_fused_attention(model, fused_attention, query_chunk_rows)
    return set_precision(model, precision)


__all__ = ["PRECISIONS", "optimize", "set_precision", "use_fast_decoder", "use_fused_attention"]
