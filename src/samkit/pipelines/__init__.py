"""Detector boxes, text prompts and CLIP labels around SAM: "segment every cat".

- :mod:`~samkit.pipelines.detections`: :class:`Detections` and readers for COCO detection
  files, YOLO txt files, ultralytics results and torchvision detection outputs;
- :func:`segment_boxes`: many boxes -> masks in batched decoder calls;
- :class:`TextDetector`: class names -> boxes with Grounding DINO / OWLv2 (``samkit[text]``);
- :class:`ClipLabeler`: class names for masks with CLIP (``samkit[text]``);
- :class:`AutoLabeler`: all of it for one image; ``samkit label`` runs it over folders.
"""

from samkit.pipelines.boxes import segment_boxes
from samkit.pipelines.clip import TEMPLATES, ClipLabeler, mask_crop
from samkit.pipelines.detections import (
    BoxFile,
    Detections,
    from_torchvision,
    from_ultralytics,
    read_class_names,
    read_coco_detections,
    read_yolo_boxes,
)
from samkit.pipelines.label import AutoLabeler, LabelConfig, categories, draw, to_entry
from samkit.pipelines.text import TextDetector, nms_per_class, parse_classes

__all__ = ["TEMPLATES", "AutoLabeler", "BoxFile", "ClipLabeler", "Detections", "LabelConfig",
           "TextDetector", "categories", "draw", "from_torchvision", "from_ultralytics",
           "mask_crop", "nms_per_class", "parse_classes", "read_class_names",
           "read_coco_detections", "read_yolo_boxes", "segment_boxes", "to_entry"]
