"""SAM-style interactive prompt simulation (all coordinates are (X, Y) pixels, boxes XYXY).

Round 0 gives each target a point inside the mask or a jittered box; later rounds add a
corrective click in the error region of the previous prediction: positive in a missed
region, negative in a wrongly included one.

Random numbers come from a ``torch.Generator`` on its own device (the CPU one by default) and
are moved to the tensors' device, so a run draws the same prompts on CPU and GPU.
"""

from __future__ import annotations

import torch


def sample_points_in_masks(masks: torch.Tensor, generator: torch.Generator | None = None
                           ) -> torch.Tensor:
    """One uniformly random pixel inside each ``(N, H, W)`` bool mask, as ``(N, 2)`` XY.

    Empty masks give the image centre.
    """
    n, h, w = masks.shape
    flat = masks.reshape(n, -1)
    empty = ~flat.any(1)
    # Inverse-CDF sampling: the k-th pixel of the mask for a uniform k (exact integer counts).
    cdf = flat.long().cumsum(1)
    count = cdf[:, -1].clamp(min=1)
    u = _uniform(n, generator, masks.device)
    k = (u * count).long().clamp(max=count - 1)
    idx = torch.searchsorted(cdf, (k + 1)[:, None]).squeeze(1).clamp(max=h * w - 1)
    xy = torch.stack([idx % w, idx // w], dim=1).float()
    centre = torch.tensor([w / 2, h / 2], device=masks.device)
    return torch.where(empty[:, None], centre, xy)


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``(n,)`` uniform numbers in [0, 1) drawn on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, device=gen_device).to(device)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes ``(N, 4)`` (float, max edge exclusive) of ``(N, H, W)`` masks."""
    _n, h, w = masks.shape
    rows, cols = masks.any(2), masks.any(1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, w).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    return torch.stack([x0, y0, x1, y1], 1).float().clamp(min=0)


def jitter_boxes(boxes: torch.Tensor, size: tuple[int, int], frac: float = 0.1,
                 max_px: float = 20.0, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Perturb each corner by noise with std ``frac`` of the box side, capped at ``max_px``."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(boxes.shape, generator=generator, device=gen_device).to(boxes.device)
    noise = noise * frac * wh
    noise = noise.clamp(-max_px, max_px)
    out = boxes + noise
    h, w = size
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


def corrective_clicks(pred: torch.Tensor, gt: torch.Tensor,
                      generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """A new click per target from the error region of ``(N, H, W)`` bool predictions.

    The click falls uniformly in the error region (false negatives and false positives
    together); its label is 1 on a missed pixel and 0 on a wrongly included one. A perfect
    prediction gets a positive click inside the target.

    Returns:
        ``(N, 2)`` XY points and ``(N,)`` labels.
    """
    fn = gt & ~pred
    fp = pred & ~gt
    err = fn | fp
    perfect = err.reshape(err.shape[0], -1).sum(1) == 0
    err[perfect] = gt[perfect]
    xy = sample_points_in_masks(err, generator)
    x = xy[:, 0].long().clamp(0, gt.shape[2] - 1)
    y = xy[:, 1].long().clamp(0, gt.shape[1] - 1)
    ar = torch.arange(gt.shape[0], device=gt.device)
    labels = (fn[ar, y, x] | perfect).long()
    return xy, labels
