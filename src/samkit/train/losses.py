"""Mask losses: focal + dice on logits, MSE on predicted IoU (as in the SAM paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
               gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels: ``(..., H, W)`` -> ``(...)``."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * loss).flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss: ``(..., H, W)`` -> ``(...)``."""
    p = torch.sigmoid(logits).flatten(-2)
    t = targets.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of bool masks ``(..., H, W)`` -> ``(...)`` (1 where both are empty)."""
    inter = (pred & target).flatten(-2).sum(-1).float()
    union = (pred | target).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    target: torch.Tensor,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss for ``(N, M, H, W)`` logits against ``(N, H, W)`` soft targets in [0, 1].

    With several outputs per prompt (M = 3, ambiguous prompts) only the best output per
    target is penalised for its mask; every output's IoU prediction is trained.

    Returns:
        The scalar loss, the chosen output per target ``(N,)`` and its IoU ``(N,)``.
    """
    t = target[:, None].expand_as(logits)
    per_output = focal_weight * focal_loss(logits, t) + dice_weight * dice_loss(logits, t)
    best = per_output.argmin(dim=1)
    ar = torch.arange(logits.shape[0], device=logits.device)
    mask_term = per_output[ar, best].mean()
    with torch.no_grad():
        actual_iou = mask_iou(logits > 0, t > 0.5)
    iou_term = F.mse_loss(iou_pred, actual_iou)
    return mask_term + iou_weight * iou_term, best, actual_iou[ar, best]
