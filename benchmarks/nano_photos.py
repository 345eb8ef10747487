"""The bundled nano on real photographs it never saw as annotated objects.

    python3 benchmarks/nano_photos.py [-o nano_photos.png]

scikit-image's ``coins`` (never used in training): a click at the centre of each of its 24
coins, IoU against masks derived from the image (``tests/test_nano.py``). scikit-image's
``coffee`` (used in training only as a texture fill): fixed clicks on the coffee, the spoon,
the saucer and the handle; prints each mask's area and predicted IoU and draws the overlays.
Writes ``benchmarks/results/nano_photos.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "nano_photos.json"
COFFEE_CLICKS = {"coffee": (290, 145), "spoon": (365, 295), "saucer": (100, 250),
                 "handle": (225, 275)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("nano_photos.png"))
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from PIL import Image
    from skimage import data

    from samkit import SamPredictor, build_sam
    from samkit.viz import overlay
    from test_nano import coin_masks

    predictor = SamPredictor(build_sam("nano"))
    img, coins = coin_masks()
    predictor.set_image(img)
    ious = []
    for m in coins:
        ys, xs = np.nonzero(m)
        masks, scores, _ = predictor.predict(point_coords=np.array([[xs.mean(), ys.mean()]]),
                                             point_labels=np.array([1]))
        pred = masks[np.argmax(scores)]
        ious.append(float((pred & m).sum() / (pred | m).sum()))
    report = {"coins": {"n": len(coins), "iou_ge_0.8": int(sum(i >= 0.8 for i in ious)),
                        "mean_iou": float(np.mean(ious))}, "coffee": {}}
    coffee = data.coffee()
    predictor.set_image(coffee)
    panels = []
    for name, xy in COFFEE_CLICKS.items():
        masks, scores, _ = predictor.predict(point_coords=np.array([xy]),
                                             point_labels=np.array([1]))
        best = int(np.argmax(scores))
        report["coffee"][name] = {"click": xy, "predicted_iou": float(scores[best]),
                                  "area_px": int(masks[best].sum())}
        panels.append(overlay(coffee, [masks[best]], points=np.array([xy]),
                              labels=np.array([1])))
    Image.fromarray(np.concatenate(panels, axis=1)).save(args.output)
    print(f"coins: {report['coins']['iou_ge_0.8']} of {len(coins)} at IoU >= 0.8, mean IoU "
          f"{report['coins']['mean_iou']:.3f}")
    for name, r in report["coffee"].items():
        print(f"coffee, click on the {name}: {r['area_px']} px, predicted IoU "
              f"{r['predicted_iou']:.2f}")
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS} and {args.output}")


if __name__ == "__main__":
    main()
