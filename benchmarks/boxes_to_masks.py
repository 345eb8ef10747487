"""Boxes -> masks: ``samkit.pipelines.segment_boxes`` against ``predict_torch`` on the same boxes.

Issue 15's target: 100 boxes on one image in one batched call, within 1.2x of the time of
``SamPredictor.predict_torch`` given the same (already transformed) boxes. Both run after
``set_image``; ``segment_boxes`` also maps the boxes, clips them to the image, picks each
box's mask and hands back numpy arrays, and splits the boxes into calls whose full-size
logits fit ``MASK_MEMORY_BYTES`` (one call at 1024 x 768, two at 1920 x 1080).

    python benchmarks/boxes_to_masks.py            # -> benchmarks/results/boxes_to_masks.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from finetune_domain import cpu_flags


def photo(h: int, w: int) -> np.ndarray:
    import cv2
    from skimage import data as skdata

    return cv2.resize(skdata.astronaut(), (w, h), interpolation=cv2.INTER_AREA)


def run(model_name: str, size: tuple[int, int], n_boxes: int, repeats: int) -> dict:
    from samkit import SamPredictor, build_sam
    from samkit.pipelines import Detections, segment_boxes
    from samkit.pipelines.boxes import MASK_MEMORY_BYTES

    model = build_sam(model_name).eval()
    predictor = SamPredictor(model)
    h, w = size
    predictor.set_image(photo(h, w))
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [w * 0.8, h * 0.8], size=(n_boxes, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 0.2 * min(h, w), (n_boxes, 2))], 1)
    boxes = boxes.clip(0, [w, h, w, h]).astype(np.float32)
    det = Detections(boxes, np.ones(n_boxes), np.zeros(n_boxes), ["object"])

    def ours() -> None:
        segment_boxes(predictor, det)

    def reference() -> None:
        t = predictor.transform.apply_boxes_torch(torch.from_numpy(boxes), (h, w))
        predictor.predict_torch(None, None, boxes=t, multimask_output=False)

    ours(), reference()  # warm-up
    t_ours, t_ref = [], []
    for _ in range(repeats):
        for fn, acc in ((reference, t_ref), (ours, t_ours)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    per_call = max(1, MASK_MEMORY_BYTES // (4 * h * w))
    row = {"model": model_name, "image": [h, w], "boxes": n_boxes,
           "decoder_calls": -(-n_boxes // per_call),
           "predict_torch_s": round(statistics.median(t_ref), 4),
           "segment_boxes_s": round(statistics.median(t_ours), 4)}
    row["ratio"] = round(row["segment_boxes_s"] / row["predict_torch_s"], 3)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="nano,vit_b")
    ap.add_argument("--boxes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("-o", "--output", type=Path,
                    default=Path(__file__).parent / "results" / "boxes_to_masks.json")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    rows = [run(m, size, args.boxes, args.repeats) for m in args.models.split(",")
            for size in ((768, 1024), (1080, 1920))]
    doc = {"what": "segment_boxes vs predict_torch, same boxes, after set_image; median of "
                   f"{args.repeats}; target ratio <= 1.2",
           "cpu": cpu_flags(), "threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d"), "rows": rows,
           "worst_ratio": max(r["ratio"] for r in rows)}
    args.output.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"worst ratio {doc['worst_ratio']} (target <= 1.2); wrote {args.output}")


if __name__ == "__main__":
    main()
