"""Automatic mask generator: prompt SAM with a grid of points and keep the good masks.

Pipeline: ``generate -> _generate_masks -> _process_crop -> _process_batch``, over the pure
helpers in :mod:`samkit.ops`. Output fields and parameters follow the official
``SamAutomaticMaskGenerator``; boxes in the output are XYWH pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision.ops.boxes import batched_nms

from samkit.errors import InputError
from samkit.io.image import to_rgb_uint8
from samkit.modeling import Sam
from samkit.ops import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    remove_small_regions,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from samkit.predictor import as_predictor

if TYPE_CHECKING:
    from samkit.backends.onnxruntime import OnnxPredictor

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
STRATEGIES = ("exact", "fast")
#: Fast strategy: kept masks larger than this share of the crop (a wall, a table) do not mark
#: grid points as covered: a small object inside them may still be unfound.
FAST_COVER_MAX_AREA = 0.05


def _alias(name: str, value: Any, alias: str, alias_value: Any, default: Any) -> Any:
    if alias_value is None:
        return default if value is None else value
    if value is not None and value != alias_value:
        raise InputError(f"{name}={value!r} and its alias {alias}={alias_value!r} disagree")
    return alias_value


class SamAutomaticMaskGenerator:
    """Generate masks for a whole image without prompts.

    Args:
        model: The SAM model, or a predictor on another runtime
            (:class:`samkit.backends.onnxruntime.OnnxPredictor`).
        points_per_side: Points sampled along each side of the image (grid of n x n); None
            requires ``point_grids``. Alias: ``points_per_crop`` (Hugging Face).
        points_per_batch: Points run through the decoder at once.
        pred_iou_thresh: Keep masks whose predicted IoU is above this (0 disables).
        stability_score_thresh: Keep masks whose stability score is at least this (0 disables).
        stability_score_offset: Logit offset used for the stability score.
        box_nms_thresh: Box IoU for non-maximum suppression within a crop.
        crop_n_layers: Extra layers of image crops (0 = whole image only).
            Alias: ``crops_n_layers``.
        crop_nms_thresh: Box IoU for NMS across crops. Alias: ``crops_nms_thresh``.
        crop_overlap_ratio: Crop overlap as a fraction of the image's short side (layer 1).
        crop_n_points_downscale_factor: Points per side shrink by this factor per crop layer.
        point_grids: Explicit ``(N, 2)`` grids in [0, 1], one per crop layer.
        min_mask_region_area: Remove islands and fill holes smaller than this (pixels);
            also re-runs NMS. 0 disables.
        output_mode: ``"binary_mask"``, ``"uncompressed_rle"`` or ``"coco_rle"``.
        strategy: ``"exact"`` (the official algorithm) or ``"fast"``: decode a quarter of
            the grid first (every other point in x and y), then only the remaining grid
            points that no kept mask covers (masks over :data:`FAST_COVER_MAX_AREA` of the
            crop, backdrops, do not count). It saves decoder work where kept masks cover
            the image; time and recall of the exact masks: ``benchmarks/deploy.py``.
    """

    def __init__(
        self,
        model: Sam | OnnxPredictor,
        points_per_side: int | None = None,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int | None = None,
        crop_nms_thresh: float | None = None,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        strategy: str = "exact",
        points_per_crop: int | None = None,
        crops_n_layers: int | None = None,
        crops_nms_thresh: float | None = None,
    ) -> None:
        crop_n_layers = _alias("crop_n_layers", crop_n_layers, "crops_n_layers", crops_n_layers, 0)
        crop_nms_thresh = _alias(
            "crop_nms_thresh", crop_nms_thresh, "crops_nms_thresh", crops_nms_thresh, 0.7
        )
        if points_per_side is None and point_grids is None:
            points_per_side = _alias("points_per_side", None, "points_per_crop",
                                     points_per_crop, 32)
        elif points_per_crop is not None:
            points_per_side = _alias("points_per_side", points_per_side, "points_per_crop",
                                     points_per_crop, None)
        if (points_per_side is None) == (point_grids is None):
            raise InputError("give exactly one of points_per_side or point_grids")
        if strategy not in STRATEGIES:
            raise InputError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if output_mode not in OUTPUT_MODES:
            raise InputError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_side is not None and points_per_side < 1:
            raise InputError(f"points_per_side must be >= 1, got {points_per_side}")
        if points_per_batch < 1:
            raise InputError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if crop_n_layers < 0:
            raise InputError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if crop_n_points_downscale_factor < 1:
            raise InputError("crop_n_points_downscale_factor must be >= 1")
        if not 0.0 <= crop_overlap_ratio < 1.0:
            raise InputError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio}")
        if points_per_side is not None:
            self.point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            assert point_grids is not None
            self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(self.point_grids) != crop_n_layers + 1:
                raise InputError(
                    f"point_grids needs crop_n_layers + 1 = {crop_n_layers + 1} grids, got "
                    f"{len(self.point_grids)}"
                )
        self.predictor = as_predictor(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.strategy = strategy
        # Masks upsampled to full resolution at once (memory, not results: any value >= 1
        # gives the same output).
        self.postprocess_chunk = 8

    @torch.no_grad()
    def generate(self, image: Any) -> list[dict[str, Any]]:
        """Generate masks for an image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (other forms as in ``SamPredictor.set_image``).

        Returns:
            One dict per mask: ``segmentation`` (``(H, W)`` bool or an RLE dict, by
            ``output_mode``), ``area`` (pixels), ``bbox`` (XYWH), ``predicted_iou``,
            ``point_coords`` (``[[x, y]]``), ``stability_score``, ``crop_box`` (XYWH).
        """
        image = to_rgb_uint8(image)
        data = self._generate_masks(image)
        if self.min_mask_region_area > 0:
            data = self.postprocess_small_regions(
                data, self.min_mask_region_area,
                max(self.box_nms_thresh, self.crop_nms_thresh),
            )
        if self.output_mode == "coco_rle":
            segs: list[Any] = [coco_encode_rle(r) for r in data["rles"]]
        elif self.output_mode == "binary_mask":
            segs = [rle_to_mask(r) for r in data["rles"]]
        else:
            segs = data["rles"]
        boxes = box_xyxy_to_xywh(torch.as_tensor(data["boxes"])).tolist()
        crops = box_xyxy_to_xywh(torch.as_tensor(data["crop_boxes"])).tolist()
        return [
            {
                "segmentation": segs[i],
                "area": area_from_rle(data["rles"][i]),
                "bbox": boxes[i],
                "predicted_iou": float(data["iou_preds"][i]),
                "point_coords": [np.asarray(data["points"][i]).tolist()],
                "stability_score": float(data["stability_score"][i]),
                "crop_box": crops[i],
            }
            for i in range(len(segs))
        ]

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        orig_size = (image.shape[0], image.shape[1])
        crop_boxes, layer_idxs = generate_crop_boxes(
            orig_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        data = MaskData()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_size))
        if len(crop_boxes) > 1 and len(data) > 0:
            # Prefer masks from smaller crops: they saw the object at higher resolution.
            scores = 1 / box_area(data["crop_boxes"])
            keep = batched_nms(
                data["boxes"].float(), scores.to(data["boxes"].device),
                torch.zeros_like(data["boxes"][:, 0]), iou_threshold=self.crop_nms_thresh,
            )
            data.filter(keep)
        data.to_numpy()
        return data

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: list[int],
        crop_layer_idx: int,
        orig_size: tuple[int, int],
    ) -> MaskData:
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]
        cropped_size = (cropped.shape[0], cropped.shape[1])
        self.predictor.set_image(cropped)
        points_scale = np.array(cropped_size)[None, ::-1]
        points_for_image = self.point_grids[crop_layer_idx] * points_scale
        data = MaskData()
        if self.strategy == "fast":
            coarse = coarse_subset(len(points_for_image))
            coverage = torch.zeros(cropped_size, dtype=torch.bool, device=self.predictor.device)
            for (points,) in batch_iterator(self.points_per_batch, points_for_image[coarse]):
                data.cat(self._process_batch(points, cropped_size, crop_box, orig_size,
                                             coverage))
            rest = points_for_image[~coarse]
            xy = np.clip(rest.astype(np.int64), 0, [cropped_size[1] - 1, cropped_size[0] - 1])
            points_for_image = rest[~coverage.cpu().numpy()[xy[:, 1], xy[:, 0]]]
        for (points,) in batch_iterator(self.points_per_batch, points_for_image):
            data.cat(self._process_batch(points, cropped_size, crop_box, orig_size))
        self.predictor.reset_image()
        if len(data) == 0:
            return _empty_data(crop_box)
        keep = batched_nms(
            data["boxes"].float(), data["iou_preds"],
            torch.zeros_like(data["boxes"][:, 0]), iou_threshold=self.box_nms_thresh,
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box] * len(data["rles"]),
                                          device=data["boxes"].device)
        return data

    def _process_batch(
        self,
        points: np.ndarray,
        im_size: tuple[int, int],
        crop_box: list[int],
        orig_size: tuple[int, int],
        coverage: torch.Tensor | None = None,
    ) -> MaskData:
        """Masks of one batch of grid points (crop pixels); ``coverage`` ``(h, w)`` bool, if
        given, is or-ed with every kept mask."""
        orig_h, orig_w = orig_size
        pred = self.predictor
        in_points = torch.as_tensor(pred.transform.apply_coords(points, im_size),
                                    device=pred.device)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=pred.device)
        low_res, iou_preds = pred.predict_low_res_torch(
            in_points[:, None, :], in_labels[:, None], multimask_output=True
        )
        n_masks = low_res.shape[1]
        data = MaskData(
            low_res=low_res.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=torch.as_tensor(points.repeat(n_masks, axis=0), device=pred.device),
        )
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        # Upsample only the masks that survived the IoU filter (bilinear upsampling is per
        # mask, so their logits are the same as if all were upsampled), a few at a time: one
        # chunk's full-resolution logits are alive at once, and masks failing the stability
        # filter are dropped before they are thresholded.
        assert pred.input_size is not None
        scores, keeps, kept = [], [], []
        for start in range(0, len(data), self.postprocess_chunk):
            logits = pred.postprocess_masks(
                data["low_res"][start : start + self.postprocess_chunk, None],
                pred.input_size, im_size,
            )[:, 0]
            score = calculate_stability_score(
                logits, pred.mask_threshold, self.stability_score_offset
            )
            if self.stability_score_thresh > 0.0:
                keep = score >= self.stability_score_thresh
                keeps.append(keep)
                logits = logits[keep]
            scores.append(score)
            kept.append(logits > pred.mask_threshold)
        del data["low_res"]
        data["stability_score"] = (torch.cat(scores) if scores
                                   else torch.zeros(0, device=pred.device))
        if keeps:
            data.filter(torch.cat(keeps))
        data["masks"] = torch.cat(kept) if kept else torch.zeros(
            0, *im_size, dtype=torch.bool, device=pred.device)
        if coverage is not None and len(data["masks"]):
            area = data["masks"].flatten(1).sum(1)
            small = area <= FAST_COVER_MAX_AREA * im_size[0] * im_size[1]
            if small.any():
                coverage |= data["masks"][small].any(dim=0)
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)
        data["rles"] = mask_to_rle_pytorch(uncrop_masks(data["masks"], crop_box, orig_h, orig_w))
        del data["masks"]
        return data

    @staticmethod
    def postprocess_small_regions(
        mask_data: MaskData, min_area: int, nms_thresh: float
    ) -> MaskData:
        """Remove small islands and holes, then NMS again preferring unchanged masks."""
        if len(mask_data["rles"]) == 0:
            return mask_data
        new_masks, scores = [], []
        for rle in mask_data["rles"]:
            mask = rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(torch.as_tensor(mask).unsqueeze(0))
            scores.append(float(not (changed_holes or changed_islands)))
        masks = torch.cat(new_masks, dim=0)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(
            boxes.float(), torch.as_tensor(scores), torch.zeros_like(boxes[:, 0]),
            iou_threshold=nms_thresh,
        )
        for i in keep.tolist():
            if scores[i] == 0.0:
                mask_data["rles"][i] = mask_to_rle_pytorch(masks[i].unsqueeze(0))[0]
                mask_data["boxes"][i] = boxes[i].numpy()
        mask_data.filter(keep)
        return mask_data


def coarse_subset(n_points: int) -> np.ndarray:
    """``(n_points,)`` bool: the first pass of the fast strategy. For an ``n x n`` grid (row
    major) every other point in x and y; for other point sets every fourth point."""
    side = round(n_points**0.5)
    idx = np.arange(n_points)
    if side * side == n_points:
        return (idx // side % 2 == 0) & (idx % side % 2 == 0)
    return idx % 4 == 0


def _empty_data(crop_box: list[int]) -> MaskData:
    return MaskData(
        iou_preds=torch.zeros(0),
        points=torch.zeros(0, 2, dtype=torch.float64),
        stability_score=torch.zeros(0),
        boxes=torch.zeros(0, 4, dtype=torch.long),
        rles=[],
        crop_boxes=torch.zeros(0, 4, dtype=torch.long),
    )
