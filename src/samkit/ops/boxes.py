"""Box helpers. Boxes are XYXY pixels unless a name says XYWH."""

from __future__ import annotations

import torch


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (inclusive max) of ``(..., H, W)`` bool masks; empty masks give zeros.

    Returns:
        ``(..., 4)`` int64 boxes.
    """
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device, dtype=torch.long)
    shape = masks.shape
    h, w = shape[-2:]
    m = masks.reshape(-1, h, w) if masks.ndim > 2 else masks.unsqueeze(0)

    def edges(occupied: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        coords = torch.arange(length, device=m.device)[None, :]
        hi = (occupied * coords).amax(dim=-1)
        lo = (occupied * coords + length * ~occupied).amin(dim=-1)
        return lo, hi

    top, bottom = edges(m.any(dim=-1), h)
    left, right = edges(m.any(dim=-2), w)
    empty = (right < left) | (bottom < top)
    out = torch.stack([left, top, right, bottom], dim=-1) * (~empty).unsqueeze(-1)
    return out.reshape(*shape[:-2], 4) if masks.ndim > 2 else out[0]


def box_xyxy_to_xywh(box: torch.Tensor) -> torch.Tensor:
    """XYXY -> XYWH (``(..., 4)``)."""
    out = box.clone()
    out[..., 2] = out[..., 2] - out[..., 0]
    out[..., 3] = out[..., 3] - out[..., 1]
    return out


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``(N, 4)`` XYXY boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    """Shift ``(N, 4)`` or ``(B, N, 4)`` boxes from crop coordinates to image coordinates."""
    x0, y0 = crop_box[:2]
    offset = torch.tensor([x0, y0, x0, y0], device=boxes.device)
    return boxes + offset


def uncrop_points(points: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    """Shift ``(..., 2)`` XY points from crop coordinates to image coordinates."""
    x0, y0 = crop_box[:2]
    return points + torch.tensor([x0, y0], device=points.device)


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """``(N,)`` True where a box touches the crop's edge (within ``atol``) but not the image's."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop = torch.isclose(boxes, crop[None, :], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig[None, :], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)
