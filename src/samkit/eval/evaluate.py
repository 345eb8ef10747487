"""mIoU by prompt type on a COCO dataset (the table of the SAM paper / seed section 5.1).

Prompt types:

- ``point1``: one click at the interior point farthest from the boundary; reports the mask
  with the highest predicted IoU (``point1``) and the best of the three (``point1_oracle``).
- ``point5``: that click, then four corrective clicks, each at the centre of the largest
  error region, with the previous low-res logits as ``mask_input``.
- ``box``: the ground-truth box; ``box+point``: the box and the first click.
- ``auto``: the automatic mask generator; recall of ground-truth instances at IoU 0.5 and
  0.75, and the mean best IoU per instance.

Every prompt row is also broken down by object size, with COCO's area ranges on the
instance's mask pixels: small (< 32^2), medium (32^2 to 96^2), large (>= 96^2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samkit.data.coco import annotation_mask, load_coco
from samkit.errors import InputError
from samkit.eval.prompts import interior_point, next_click
from samkit.io.image import load_image

PROMPT_TYPES = ("point1", "point5", "box", "box+point", "auto")
# COCO's object-size ranges, in pixels of the instance's mask: (name, lower bound inclusive)
SIZE_RANGES = (("small", 0), ("medium", 32**2), ("large", 96**2))


def size_range(area: int) -> str:
    """COCO's size name (``small``, ``medium`` or ``large``) of a mask of ``area`` pixels."""
    return [name for name, low in SIZE_RANGES if area >= low][-1]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@dataclass
class EvalResult:
    ious: dict[str, list[float]] = field(default_factory=dict)
    areas: dict[str, list[int]] = field(default_factory=dict)  # mask pixels, as ``ious``
    n_images: int = 0
    n_instances: int = 0
    auto_images: int = 0
    skipped_images: list[str] = field(default_factory=list)

    def add(self, key: str, value: float, area: int) -> None:
        self.ious.setdefault(key, []).append(value)
        self.areas.setdefault(key, []).append(area)

    def by_size(self) -> dict[str, dict[str, float]]:
        """Per COCO size range: the instance count and each prompt row's mIoU."""
        out: dict[str, dict[str, float]] = {}
        for name, _ in SIZE_RANGES:
            row: dict[str, float] = {}
            for key, values in self.ious.items():
                if key == "auto":
                    continue
                sel = [v for v, a in zip(values, self.areas[key], strict=True)
                       if size_range(a) == name]
                if sel:
                    row["n"] = len(sel)
                    row[key] = float(np.mean(sel))
            if row:
                out[name] = row
        return out

    def summary(self) -> dict[str, Any]:
        rows = {}
        for key, values in self.ious.items():
            if key == "auto":
                arr = np.array(values)
                rows["auto_recall@0.5"] = float((arr >= 0.5).mean())
                rows["auto_recall@0.75"] = float((arr >= 0.75).mean())
                rows["auto_mean_best_iou"] = float(arr.mean())
            else:
                rows[key] = float(np.mean(values))
        out = {"n_images": self.n_images, "n_instances": self.n_instances,
               "miou": rows, "miou_by_size": self.by_size(),
               "skipped_images": self.skipped_images}
        if "auto" in self.ious:
            out["auto_images"] = self.auto_images
            out["auto_instances"] = len(self.ious["auto"])
        return out


def evaluate(
    model: Any,
    coco_json: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    prompts: tuple[str, ...] = PROMPT_TYPES,
    max_images: int | None = None,
    min_area: int = 1,
    amg_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    auto_max_images: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (a :class:`~samkit.Sam` or an ``OnnxPredictor``) on a COCO file;
    returns a JSON-able summary.

    ``auto_max_images`` limits the (slow) automatic mask generator to the first N evaluated
    images; the other prompt types use every image.
    """
    from tqdm import tqdm

    from samkit.amg import SamAutomaticMaskGenerator
    from samkit.predictor import as_predictor

    unknown = set(prompts) - set(PROMPT_TYPES)
    if unknown:
        raise InputError(f"unknown prompt types {sorted(unknown)}; choose from {PROMPT_TYPES}")
    images, by_image = load_coco(coco_json)
    if max_images is not None:
        images = images[:max_images]
    predictor = as_predictor(model)
    amg = None
    if "auto" in prompts:
        amg = SamAutomaticMaskGenerator(model, output_mode="binary_mask", **(amg_kwargs or {}))
    result = EvalResult()
    for info in tqdm(images, desc="eval", unit="img", disable=not progress):
        path = Path(images_dir) / info["file_name"]
        try:
            image = load_image(path)
        except (OSError, ValueError) as exc:
            result.skipped_images.append(f"{path}: {exc}")
            continue
        h, w = image.shape[:2]
        anns = [a for a in by_image.get(info["id"], []) if not a.get("iscrowd", 0)]
        gts = [m for m in (annotation_mask(a, h, w) for a in anns) if m.sum() >= min_area]
        if not gts:
            continue
        result.n_images += 1
        result.n_instances += len(gts)
        predictor.set_image(image)
        for gt in gts:
            _prompt_gt(predictor, gt, prompts, result)
        if amg is not None and (auto_max_images is None or result.n_images <= auto_max_images):
            result.auto_images += 1
            masks = [r["segmentation"] for r in amg.generate(image)]
            for gt in gts:
                result.add("auto", max((iou(m, gt) for m in masks), default=0.0),
                           int(gt.sum()))
    summary = result.summary()
    if amg is not None:
        summary["auto_params"] = dict(amg_kwargs or {})  # over the official defaults
    return summary


def _prompt_gt(predictor: Any, gt: np.ndarray, prompts: tuple[str, ...],
               result: EvalResult) -> None:
    first = interior_point(gt)[None]
    fg = np.array([1])
    ys, xs = np.nonzero(gt)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
    area = len(ys)
    if "point1" in prompts or "point5" in prompts:
        masks, scores, logits = predictor.predict(point_coords=first, point_labels=fg)
        ious = [iou(m, gt) for m in masks]
        top = int(np.argmax(scores))
        result.add("point1", ious[top], area)
        result.add("point1_oracle", max(ious), area)
        if "point5" in prompts:
            coords, labels = first, fg
            pred, low = masks[top], logits[top][None]
            for _ in range(4):
                click = next_click(pred, gt)
                if click is None:
                    break
                coords = np.concatenate([coords, click[0][None]])
                labels = np.concatenate([labels, [click[1]]])
                m, _, lg = predictor.predict(point_coords=coords, point_labels=labels,
                                             mask_input=low, multimask_output=False)
                pred, low = m[0], lg
            result.add("point5", iou(pred, gt), area)
    if "box" in prompts:
        m, _, _ = predictor.predict(box=box, multimask_output=False)
        result.add("box", iou(m[0], gt), area)
    if "box+point" in prompts:
        m, _, _ = predictor.predict(box=box, point_coords=first, point_labels=fg,
                                    multimask_output=False)
        result.add("box+point", iou(m[0], gt), area)


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of a summary from :func:`evaluate`."""
    lines = [f"{summary['n_instances']} instances in {summary['n_images']} images",
             f"{'prompt':<22}{'value':>8}"]
    for key, value in summary["miou"].items():
        lines.append(f"{key:<22}{value:>8.4f}")
    sizes = summary.get("miou_by_size", {})
    if sizes:
        keys = [k for k in summary["miou"] if any(k in row for row in sizes.values())]
        lines.append("by object size (COCO areas, mask pixels): small < 32^2 <= medium < 96^2"
                     " <= large")
        lines.append(f"{'size':<10}{'n':>6}" + "".join(f"{k:>15}" for k in keys))
        for name, row in sizes.items():
            cells = "".join(f"{row[k]:>15.4f}" if k in row else f"{'-':>15}" for k in keys)
            lines.append(f"{name:<10}{int(row['n']):>6}{cells}")
    if "auto_images" in summary:
        params = ", ".join(f"{k}={v}" for k, v in summary.get("auto_params", {}).items())
        lines.append(f"(auto: {summary['auto_instances']} instances in "
                     f"{summary['auto_images']} images; generator: "
                     f"{params or 'official defaults'})")
    if summary["skipped_images"]:
        lines.append(f"skipped {len(summary['skipped_images'])} unreadable image(s)")
    return "\n".join(lines)
