"""Speed switches applied to a built model (never a second copy of the model code).

Each switch flips a flag that the model's own modules read (or, for ``torch.compile``, wraps
their forward), so the plain path stays the reference and every switch is tested for parity
against it.

On by default (exact: bit-identical to the official code):
    :func:`use_fast_decoder` (shared image side, prompt chunks on CPU), and, without a switch,
    in-place inference LayerNorm2d/GELU, row-cropped mask upsampling and the generator's
    filter-then-upsample pipeline. The command line also caps threads with
    :func:`set_threads`.

Opt-in (not bit-exact; masks at IoU >= 0.999 against the exact path):
    :func:`use_fused_attention`, :func:`use_compile`, :func:`set_precision` (bf16/fp16), or
    all at once with :func:`optimize`.

Channels-last is not a switch: the encoder's only convolutions are the patch embedding (one
GEMM) and the neck, and the decoder's upscaling convolutions already receive channels-last
input (the token-major transformer output viewed as an image), so oneDNN picks its
channels-last kernels there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
        for module, name in ((encoder, "forward"), (decoder, "predict_masks")):
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
    decoder.predict_masks = torch.compile(type(decoder).predict_masks.__get__(decoder),
                                          dynamic=False, mode=mode)
    return model


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers
    started with ``--cpus``), at least 1."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = None
    try:  # cgroup v2
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if q != "max":
            quota = int(q) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if q > 0:
                quota = q / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        n = min(n, int(quota))  # a fractional CPU left over would only time-slice
    return max(1, n)


def set_threads(n: int | None = None) -> int:
    """Set PyTorch's intra-op threads and return the number set.

    Args:
        n: Threads to use; None: keep PyTorch's choice (one per physical core) but never more
            than :func:`available_cpus`. PyTorch counts the host's cores, so in a container
            limited to 2 CPUs on a 64-core host it would start 64 threads that fight over 2
            CPUs; the samkit command line calls this at start-up.
    """
    if n is not None and n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    target = n if n is not None else min(torch.get_num_threads(), available_cpus())
    if target != torch.get_num_threads():
        torch.set_num_threads(target)
    return target


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


__all__ = ["PRECISIONS", "available_cpus", "optimize", "set_precision", "set_threads",
           "use_compile", "use_fast_decoder", "use_fused_attention"]
