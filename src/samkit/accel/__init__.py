"""Speed switches applied to a built model (never a second copy of the model code).

``samkit.modeling`` holds the plain computation of the official code. Each switch here swaps
modules for a named subclass that computes faster (``module.__class__``: parameters, buffers,
state-dict keys and hooks stay as they are) and can be switched off again, restoring the plain
path that the parity tests use as the reference.

On by default in every model :func:`samkit.build_sam` builds (exact: the same bits as the
official code; :func:`use_exact_defaults`):
    :func:`use_inplace_inference` (in-place attention softmax and bias sums, LayerNorm2d and
    the decoder's GELUs at inference; training falls back to the plain layers) and
    :func:`use_fast_decoder` (a shared image side, prompt chunks on CPU).
    :func:`use_reference` switches all of them off (plain modules, e.g. for export).

Opt-in (not bit-exact; masks at IoU >= 0.999 against the exact path):
    :func:`use_fused_attention`, :func:`use_compile`, :func:`set_precision` (bf16/fp16), or
    all at once with :func:`optimize`. Lower still: :func:`quantize_dynamic_int8`.

Training memory: :func:`use_gradient_checkpointing` (same gradients, one block's activations).

Threads: :func:`set_threads`, :func:`available_cpus` (the command line caps threads).
"""

from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from samkit.accel.attention import (
    FusedAttention,
    FusedTinyViTAttention,
    FusedTokenAttention,
    InPlaceAttention,
)
from samkit.accel.decoder import ImageSide, SharedImageMaskDecoder
from samkit.accel.layers import InPlaceGELU, InPlaceLayerNorm2d
from samkit.accel.memory import use_gradient_checkpointing
from samkit.accel.runtime import available_cpus, set_threads
from samkit.errors import InputError
from samkit.modeling import Sam
from samkit.modeling import image_encoder as _vit
from samkit.modeling import tiny_vit as _tiny_vit
from samkit.modeling import transformer as _two_way
from samkit.modeling.common import LayerNorm2d
from samkit.modeling.mask_decoder import MaskDecoder


def _swap(module: nn.Module, cls: type[nn.Module]) -> None:
    """Make ``module`` an instance of ``cls`` (a subclass of its plain class, or the plain
    class itself) without touching its parameters, buffers or hooks."""
    module.__class__ = cls


def use_inplace_inference(model: Sam, enabled: bool = True) -> Sam:
    """Exact in-place inference layers (on by default; same bits as the plain path).

    - ViT attention: the relative-position terms are added to, and the softmax written into,
      the attention matrix (ViT-H global blocks: one 1 GB matrix instead of three). Modules
      switched to fused attention are left as they are.
    - ``LayerNorm2d``: ``x - mean`` computed once, the rest in place.
    - The mask decoder's upscaling GELUs overwrite their (fresh) inputs.

    Each falls back to the plain computation when autograd records the call.

    Args:
        model: A built model; changed in place and returned.
        enabled: False restores the plain modules.
    """
    for module in model.modules():
        if type(module) in (_vit.Attention, InPlaceAttention):
            _swap(module, InPlaceAttention if enabled else _vit.Attention)
        elif type(module) in (LayerNorm2d, InPlaceLayerNorm2d):
            _swap(module, InPlaceLayerNorm2d if enabled else LayerNorm2d)
    for module in model.mask_decoder.output_upscaling:
        if type(module) in (nn.GELU, InPlaceGELU):
            _swap(module, InPlaceGELU if enabled else nn.GELU)
    return model


def use_fast_decoder(model: Sam, enabled: bool = True, prompt_chunk: int | None = 4) -> Sam:
    """The mask decoder as :class:`SharedImageMaskDecoder` (on by default; same bits).

    - shared image side: with one image and no ``mask_input``, the first transformer block's
      projections of the image embedding are computed once (:class:`ImageSide`) and
      broadcast over the prompt sets instead of once per prompt set (a third of the
      decoder's per-prompt FLOPs).
    - prompt chunks: on CPU, prompt sets run ``prompt_chunk`` at a time so each
      ``(chunk, 4096, 256)`` activation stays in cache (SAM's ``points_per_batch=64`` makes
      268 MB tensors otherwise). GPUs take the batch whole.

    Args:
        model: A built model; changed in place and returned.
        enabled: False restores the plain :class:`MaskDecoder` (the parity reference).
        prompt_chunk: Prompt sets per chunk on CPU; None: no chunking.
    """
    decoder = model.mask_decoder
    if enabled:
        _swap(decoder, SharedImageMaskDecoder)
        decoder.prompt_chunk = prompt_chunk
    else:
        _swap(decoder, MaskDecoder)
        decoder.__dict__.pop("prompt_chunk", None)
    return model


def use_exact_defaults(model: Sam) -> Sam:
    """The exact speed-ups every built model gets: :func:`use_inplace_inference` and
    :func:`use_fast_decoder`."""
    return use_fast_decoder(use_inplace_inference(model))


def use_fused_attention(model: Sam, enabled: bool = True,
                        query_chunk_rows: int | None = None) -> Sam:
    """Use ``scaled_dot_product_attention`` (carrying the relative-position bias) everywhere:
    ViT and TinyViT image encoders and the two-way transformer.

    Args:
        model: A built model; changed in place and returned.
        enabled: False restores the exact attention (:class:`InPlaceAttention` and the plain
            two-way attention).
        query_chunk_rows: For the global-attention blocks, process queries this many grid
            rows at a time, so their ``(N, N)`` bias is never held whole (memory-lean; e.g.
            16 of SAM's 64 rows holds a quarter). None: all rows at once.
    """
    grid = model.prompt_encoder.image_embedding_size[0]
    for module in model.modules():
        if isinstance(module, _vit.Attention):
            if not enabled:
                _swap(module, InPlaceAttention)
                module.__dict__.pop("query_chunk_rows", None)
                continue
            _swap(module, FusedAttention)
            is_global = module.use_rel_pos and module.rel_pos_h.shape[0] == 2 * grid - 1
            module.query_chunk_rows = query_chunk_rows if is_global else None
        elif isinstance(module, _tiny_vit.Attention):
            _swap(module, FusedTinyViTAttention if enabled else _tiny_vit.Attention)
        elif isinstance(module, _two_way.Attention):
            _swap(module, FusedTokenAttention if enabled else _two_way.Attention)
    return model


def use_reference(model: Sam) -> Sam:
    """Switch every speed-up off: the plain modules of ``samkit.modeling`` (the official
    computation), eager forwards and no chunking. Precision is left as it is."""
    use_compile(model, enabled=False)
    use_fused_attention(model, enabled=False)
    use_inplace_inference(model, enabled=False)
    return use_fast_decoder(model, enabled=False)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def set_precision(model: Sam, precision: str = "fp32") -> Sam:
    """Run the image encoder in ``"fp32"``, ``"bf16"`` or ``"fp16"`` (embeddings come back as
    float32; the prompt encoder and mask decoder stay float32). Changes ``model`` in place.

    bf16 pays off on CPUs with AVX-512 BF16 / AMX and on GPUs; fp16 is for GPUs.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    model.image_encoder.to(PRECISIONS[precision])
    return model


_COMPILED = ("forward", "predict_masks", "predict_masks_shared")


def use_compile(model: Sam, enabled: bool = True, mode: str | None = None) -> Sam:
    """Run the image encoder and the mask decoder's per-chunk work through ``torch.compile``.

    Inductor fuses the element-wise work (LayerNorms, GELUs, softmaxes, residual adds) around
    the matmuls. Measured on a 2-core CPU with ViT-B (``benchmarks/compare_official.py``):
    about 20% off the encoder with fused attention and 15% off the decoder. Not bit-exact
    (mask logits move by ~1e-3; the parity test bounds them). Compilation happens on first
    use and again for each new input shape (for ViT-B on that CPU: ~45 s for the encoder,
    ~30 s for the decoder; inductor keeps a disk cache for later processes), so it pays off
    for long runs: the automatic generator over many images, batch jobs, servers.

    The modules themselves are untouched (the state dict keeps its keys); ``enabled=False``
    restores the eager forwards.

    Args:
        model: A built model; changed in place and returned.
        enabled: False removes the compiled forwards.
        mode: ``torch.compile`` mode (None, ``"max-autotune"``, ...).

    Raises:
        RuntimeError: On CPU without a C++ compiler (inductor generates C++ there).
    """
    encoder, decoder = model.image_encoder, model.mask_decoder
    if not enabled:
        for module in (encoder, decoder):
            for name in _COMPILED:
                module.__dict__.pop(name, None)
        return model
    device = next(model.parameters()).device
    compiler = os.environ.get("CXX") or "g++"
    if device.type == "cpu" and shutil.which(compiler) is None and shutil.which("clang++") is None:
        raise RuntimeError(
            f"torch.compile on CPU needs a C++ compiler and none was found ({compiler!r} or "
            "clang++); install one (Debian: apt-get install g++) or leave compilation off"
        )
    # Fixed shapes: a generator batch, a single click and the last partial chunk are a few
    # distinct shapes, each compiled once, with kernels specialised to it.
    encoder.forward = torch.compile(type(encoder).forward.__get__(encoder), dynamic=False,
                                    mode=mode)
    for name in _COMPILED[1:]:
        method = getattr(type(decoder), name, None)
        if method is not None:
            setattr(decoder, name, torch.compile(method.__get__(decoder), dynamic=False,
                                                 mode=mode))
    return model


def quantize_dynamic_int8(model: Sam) -> Sam:
    """The seed's section 8.2 on the PyTorch path: the image encoder's ``nn.Linear`` layers as
    dynamically quantized int8 (``torch.ao.quantization.quantize_dynamic``: int8 weights,
    activations quantized per call). CPU only, and one way: rebuild the model to undo it.
    Not bit-exact (ViT-B click masks: see ``benchmarks/deploy.py``); ONNX Runtime's static
    int8 (``samkit export onnx --quantize int8``) is the faster deployment path.

    Args:
        model: A built float32 model on the CPU; changed in place and returned.
    """
    import warnings

    if model.device.type != "cpu":
        raise InputError("dynamic int8 quantization runs on the CPU: call it before .to(cuda)")
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:  # removed from a future PyTorch
        raise InputError("this PyTorch has no torch.ao.quantization.quantize_dynamic; use "
                         "ONNX Runtime int8 (samkit export onnx --quantize int8)") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's deprecation notices, once per layer
        quantize_dynamic(model.image_encoder, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def optimize(model: Sam, precision: str = "fp32", fused_attention: bool = True,
             query_chunk_rows: int | None = 16, compile: bool = False) -> Sam:
    """Apply the recommended switches: fused attention (global blocks in query chunks), the
    image encoder's precision and, optionally, ``torch.compile`` (:func:`use_compile`).
    Changes ``model`` in place and returns it."""
    use_fused_attention(model, fused_attention, query_chunk_rows)
    set_precision(model, precision)
    if compile:
        use_compile(model)
    return model


__all__ = [
    "PRECISIONS", "FusedAttention", "FusedTinyViTAttention", "FusedTokenAttention", "ImageSide",
    "InPlaceAttention", "InPlaceGELU", "InPlaceLayerNorm2d", "SharedImageMaskDecoder",
    "available_cpus", "optimize", "quantize_dynamic_int8", "set_precision", "set_threads",
    "use_compile", "use_exact_defaults", "use_fast_decoder", "use_fused_attention",
    "use_gradient_checkpointing", "use_inplace_inference", "use_reference",
]
