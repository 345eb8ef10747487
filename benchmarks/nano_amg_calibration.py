"""Choose nano's recommended automatic-mask-generator thresholds on the *validation* stream.

    python3 benchmarks/nano_amg_calibration.py [--images 16] [--points-per-side 32]

For each validation scene the generator's candidates are computed once with both thresholds
off (single crop, as ``samkit amg`` runs by default); each (pred_iou_thresh,
stability_score_thresh) pair is then applied exactly as the generator applies it (filter,
then box NMS at 0.7 ranked by predicted IoU). The pair with the best F1 at IoU 0.5
(precision: kept masks that match an instance; recall: instances matched) is printed and
saved to ``benchmarks/results/nano_amg_calibration.json``; ``samkit.registry`` records it for
nano. The held-out ``test`` split is never looked at.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import batched_nms

RESULTS = Path(__file__).parent / "results" / "nano_amg_calibration.json"
PRED_IOU = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.88)
STABILITY = (0.0, 0.7, 0.8, 0.9, 0.95)


def candidates(gen, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Predicted IoU, stability, boxes and masks of every candidate before filtering/NMS."""
    from samkit.ops import MaskData, rle_to_mask

    h, w = image.shape[:2]
    gen.predictor.set_image(image)
    data = MaskData()
    points = gen.point_grids[0] * np.array([[w, h]])
    for i in range(0, len(points), gen.points_per_batch):
        data.cat(gen._process_batch(points[i: i + gen.points_per_batch], (h, w),
                                    [0, 0, w, h], (h, w)))
    masks = [rle_to_mask(r) for r in data["rles"]]
    return (data["iou_preds"].numpy(), data["stability_score"].numpy(),
            data["boxes"].float(), masks)


def main() -> int:
    from samkit.amg import SamAutomaticMaskGenerator
    from samkit.data.synthetic import make_scene
    from samkit.registry import build_sam

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--points-per-side", type=int, default=32)
    args = ap.parse_args()
    model = build_sam("nano")
    gen = SamAutomaticMaskGenerator(model, points_per_side=args.points_per_side,
                                    pred_iou_thresh=0.0, stability_score_thresh=0.0)
    # per threshold pair: candidates kept that match an instance, candidates kept,
    # instances matched
    stats = {k: [0, 0, 0] for k in itertools.product(PRED_IOU, STABILITY)}
    n_gt = 0
    for i in range(args.images):
        scene = make_scene("val", i, size=(384, 512))
        gts = [inst.mask for inst in scene.instances if inst.mask.sum() > 0]
        ious, stab, boxes, masks = candidates(gen, scene.image)
        if not masks:
            n_gt += len(gts)
            continue
        flat = np.stack(masks).reshape(len(masks), -1).astype(np.float32)
        g = np.stack(gts).reshape(len(gts), -1).astype(np.float32)
        inter = flat @ g.T
        union = flat.sum(1)[:, None] + g.sum(1)[None, :] - inter
        match = inter / np.maximum(union, 1)  # (candidates, instances)
        for (t_iou, t_stab), s in stats.items():
            keep = np.flatnonzero((ious > t_iou) & (stab >= t_stab))
            if len(keep):
                k = batched_nms(boxes[keep], torch.as_tensor(ious[keep]),
                                torch.zeros(len(keep)), 0.7).numpy()
                keep = keep[k]
            m = match[keep]
            s[0] += int((m.max(axis=1) >= 0.5).sum()) if len(keep) else 0
            s[1] += len(keep)
            s[2] += int((m.max(axis=0) >= 0.5).sum()) if len(keep) else 0
        n_gt += len(gts)
        print(f"scene {i}: {len(masks)} candidates, {len(gts)} instances", flush=True)
    table = []
    for (t_iou, t_stab), (tp, kept, found) in stats.items():
        precision = tp / kept if kept else 0.0
        recall = found / n_gt if n_gt else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table.append({"pred_iou_thresh": t_iou, "stability_score_thresh": t_stab,
                      "precision@0.5": round(precision, 4), "recall@0.5": round(recall, 4),
                      "f1": round(f1, 4), "masks_per_image": round(kept / args.images, 1)})
    best = max(table, key=lambda r: r["f1"])
    for r in sorted(table, key=lambda r: -r["f1"])[:8]:
        print(r)
    print("chosen:", best)
    RESULTS.write_text(json.dumps({"split": "val", "images": args.images,
                                   "points_per_side": args.points_per_side,
                                   "chosen": best, "table": table}, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
