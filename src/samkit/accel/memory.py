"""Training-memory switch: gradient checkpointing of the image encoder's blocks.

:func:`use_gradient_checkpointing` swaps each ViT ``Block`` and TinyViT ``TinyViTBlock`` for
a subclass whose forward, when autograd records it, runs under
:func:`torch.utils.checkpoint.checkpoint` (non-reentrant): only the block's input is kept,
and its activations are recomputed during the backward pass. The gradients are the same;
peak memory falls from all blocks' activations to one block's (what lets ViT-B with LoRA
train in a few GiB). Inference (no grad) runs the plain forward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from samkit.modeling import Sam
from samkit.modeling import image_encoder as _vit
from samkit.modeling import tiny_vit as _tiny_vit


class _Checkpointed(nn.Module):
    """Mixin: the block's forward under non-reentrant checkpointing when autograd records."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return checkpoint(super().forward, x, use_reentrant=False)
        return super().forward(x)


class CheckpointedViTBlock(_Checkpointed, _vit.Block):
    """:class:`samkit.modeling.image_encoder.Block` with checkpointed training forwards."""


class CheckpointedTinyViTBlock(_Checkpointed, _tiny_vit.TinyViTBlock):
    """:class:`samkit.modeling.tiny_vit.TinyViTBlock` with checkpointed training forwards."""


_SWAPS = {_vit.Block: CheckpointedViTBlock, _tiny_vit.TinyViTBlock: CheckpointedTinyViTBlock}


def use_gradient_checkpointing(model: Sam, enabled: bool = True) -> Sam:
    """Checkpoint every image-encoder block in training (see the module doc).

    Args:
        model: A built model; changed in place and returned.
        enabled: False restores the plain blocks.

    Returns:
        ``model``.
    """
    for module in model.image_encoder.modules():
        plain = next((c for c in _SWAPS if isinstance(module, c)), None)
        if plain is not None:
            module.__class__ = _SWAPS[plain] if enabled else plain
    return model
