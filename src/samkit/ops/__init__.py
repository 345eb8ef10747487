"""Pure helpers for mask generation: RLE, boxes, crops, stability, small-region clean-up.

Each function is independent of any model and documented with shapes; boxes are XYXY pixels.
"""

from samkit.ops.boxes import (
    batched_mask_to_box,
    box_area,
    box_xyxy_to_xywh,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
    uncrop_points,
)
from samkit.ops.crops import (
    build_all_layer_point_grids,
    build_point_grid,
    generate_crop_boxes,
    uncrop_masks,
)
from samkit.ops.data import MaskData, batch_iterator
from samkit.ops.masks import calculate_stability_score, remove_small_regions
from samkit.ops.rle import (
    area_from_rle,
    coco_encode_rle,
    decode_coco_rle,
    encode_coco_masks,
    mask_to_rle_pytorch,
    rle_to_mask,
)

__all__ = [
    "MaskData",
    "area_from_rle",
    "batch_iterator",
    "batched_mask_to_box",
    "box_area",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_encode_rle",
    "decode_coco_rle",
    "encode_coco_masks",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_rle_pytorch",
    "remove_small_regions",
    "rle_to_mask",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]
