"""``samkit demo``: the bundled nano model on the bundled sample image."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

ASSETS = Path(__file__).parent / "assets"


def sample_image() -> tuple[np.ndarray, np.ndarray]:
    """The bundled sample image ``(H, W, 3)`` uint8 and its demo click ``(1, 2)`` XY."""
    from samkit.io.image import load_image

    meta = json.loads((ASSETS / "sample.json").read_text())
    return load_image(ASSETS / meta["image"]), np.array([meta["click"]], dtype=np.float64)


def run_demo(out_dir: str | os.PathLike[str], device: str = "cpu") -> dict[str, Path]:
    """Segment the sample image by one click and automatically; write overlays.

    Returns:
        Paths of what was written, by label.
    """
    from samkit.amg import SamAutomaticMaskGenerator
    from samkit.predictor import SamPredictor
    from samkit.registry import amg_defaults, build_sam
    from samkit.viz import overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, click = sample_image()
    model = build_sam("nano", device=device)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(point_coords=click, point_labels=np.array([1]))
    best = masks[int(np.argmax(scores))]
    params = {"points_per_side": 24, **amg_defaults("nano")}
    records = SamAutomaticMaskGenerator(model, **params).generate(image)
    records.sort(key=lambda r: r["area"], reverse=True)
    clicked = overlay(image, [best], points=click, labels=np.array([1]))
    auto = overlay(image, [r["segmentation"] for r in records])
    gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
    paths = {"overlay": out / "demo_overlay.png", "click mask": out / "demo_click_mask.png"}
    Image.fromarray(np.concatenate([clicked, gap, auto], axis=1)).save(paths["overlay"])
    Image.fromarray(best.astype(np.uint8) * 255).save(paths["click mask"])
    summary = {"click": click[0].tolist(), "click_score": float(scores.max()),
               "click_area": int(best.sum()), "automatic_masks": len(records)}
    paths["summary"] = out / "demo.json"
    paths["summary"].write_text(json.dumps(summary, indent=2))
    print(f"nano: clicked object {summary['click_area']} px (score {summary['click_score']:.2f}),"
          f" {len(records)} automatic masks")
    return paths
