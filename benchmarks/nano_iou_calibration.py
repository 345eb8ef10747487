"""How well a model's predicted IoU (the IoU head) matches the true IoU, on *validation* scenes.

    python3 benchmarks/nano_iou_calibration.py [--images 24] [--checkpoint FILE] [--label v2]

For every instance of the first ``--images`` scenes of the validation stream (never the
held-out test split): one click at the interior point farthest from the boundary (all three
multimask outputs) and the instance's box (one output). For each (predicted, true) IoU pair:
Pearson correlation, expected calibration error (10 equal-width bins of predicted IoU,
|mean predicted - mean true| weighted by the bin's share), the mean of each, and what the
official generator threshold ``pred_iou_thresh=0.88`` keeps (share kept, and the true IoU of
what it keeps). Results are merged into ``benchmarks/results/nano_iou_calibration.json``
under ``--label``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "nano_iou_calibration.json"


def calibration(pred: np.ndarray, true: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Pearson r, expected calibration error and threshold statistics of ``(N,)`` pairs."""
    idx = np.clip((pred * bins).astype(int), 0, bins - 1)
    ece = sum(abs(pred[idx == b].mean() - true[idx == b].mean()) * (idx == b).mean()
              for b in range(bins) if (idx == b).any())
    kept = pred >= 0.88
    return {
        "n": len(pred),
        "pearson_r": float(np.corrcoef(pred, true)[0, 1]),
        "ece": float(ece),
        "mean_predicted": float(pred.mean()),
        "mean_true": float(true.mean()),
        "kept_at_0.88": float(kept.mean()),
        "true_iou_of_kept_at_0.88": float(true[kept].mean()) if kept.any() else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--checkpoint", default=None, help="weights (default: the bundled nano)")
    ap.add_argument("--label", default="nano")
    args = ap.parse_args()

    from samkit import SamPredictor, build_sam
    from samkit.data.synthetic import make_scene
    from samkit.eval.evaluate import iou
    from samkit.eval.prompts import interior_point

    model = build_sam("nano") if args.checkpoint is None else build_sam(
        checkpoint=args.checkpoint)
    predictor = SamPredictor(model)
    pairs: dict[str, list[tuple[float, float]]] = {"point (3 outputs)": [], "box": []}
    with torch.inference_mode():
        for i in range(args.images):
            scene = make_scene("val", i)
            predictor.set_image(scene.image)
            for inst in scene.instances:
                m = inst.mask
                if not m.any():
                    continue
                click = interior_point(m)[None]
                masks, scores, _ = predictor.predict(point_coords=click,
                                                     point_labels=np.array([1]))
                pairs["point (3 outputs)"] += [(float(s), iou(p, m))
                                               for p, s in zip(masks, scores)]
                ys, xs = np.nonzero(m)
                box = np.array([xs.min(), ys.min(), xs.max(), ys.max()])  # as samkit eval
                masks, scores, _ = predictor.predict(box=box, multimask_output=False)
                pairs["box"].append((float(scores[0]), iou(masks[0], m)))
    rows = {}
    for key, values in pairs.items():
        arr = np.array(values)
        rows[key] = calibration(arr[:, 0], arr[:, 1])
    rows["all"] = calibration(*np.array([p for v in pairs.values() for p in v]).T)
    report = {"images": args.images, "checkpoint": args.checkpoint or "bundled nano",
              "machine": platform.processor() or platform.machine(), "rows": rows}
    for key, row in rows.items():
        print(f"{args.label:>6} {key:<18} n={row['n']:<5} r={row['pearson_r']:.3f} "
              f"ECE={row['ece']:.3f} mean pred {row['mean_predicted']:.3f} / true "
              f"{row['mean_true']:.3f}; >= 0.88 keeps {row['kept_at_0.88']:.1%}")
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    old[args.label] = report
    RESULTS.write_text(json.dumps(old, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
