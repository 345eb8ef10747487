"""Exact inference variants of small layers: the same operations in the same order (so the
same bits), with fewer buffers. Each falls back to its plain parent when autograd needs the
intermediate values."""

from __future__ import annotations

import torch
from torch import nn

from samkit.modeling.common import LayerNorm2d


def tracks_grad(x: torch.Tensor, module: nn.Module) -> bool:
    """True when autograd records this call: grad mode on and ``x`` or a parameter of
    ``module`` requires a gradient."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p.requires_grad for p in module.parameters())


class InPlaceLayerNorm2d(LayerNorm2d):
    """:class:`LayerNorm2d` that, at inference, computes ``x - mean`` once and normalises,
    scales and shifts that buffer in place: three fewer passes over the activation and no
    new buffers. The input is never written."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tracks_grad(x, self):
            return super().forward(x)
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        var = centred.pow(2).mean(1, keepdim=True)
        centred /= torch.sqrt(var + self.eps)
        centred *= self.weight[:, None, None]
        return centred.add_(self.bias[:, None, None])


class InPlaceGELU(nn.GELU):
    """GELU that, at inference, overwrites its input. Only for inputs nothing else reads (a
    fresh layer output): :func:`samkit.accel.use_inplace_inference` puts it after the mask
    decoder's upscaling layers only. Same kernel, so the same bits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tracks_grad(x, self):
            return super().forward(x)
        return torch.ops.aten.gelu_(x, approximate=self.approximate)
