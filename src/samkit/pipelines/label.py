"""Auto-labelling: class names in, labelled masks out (Grounded-SAM style).

Where the objects come from, in order of preference:

1. boxes given per image (a detector's file or objects, :mod:`samkit.pipelines.detections`);
2. a text detector (:class:`~samkit.pipelines.TextDetector`) finding the named classes;
3. SAM's automatic generator, every mask then named by CLIP.

SAM turns the boxes into masks (:func:`~samkit.pipelines.segment_boxes`). When a CLIP model is
given it names every mask (boxes from a file or a detector are re-checked; masks CLIP calls
``unknown`` are dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from samkit.errors import InputError
from samkit.io.formats import ImageEntry, Instance
from samkit.io.image import to_rgb_uint8
from samkit.pipelines.boxes import segment_boxes
from samkit.pipelines.clip import TEMPLATES, ClipLabeler
from samkit.pipelines.detections import Detections
from samkit.pipelines.text import TextDetector, parse_classes
from samkit.predictor import as_predictor


@dataclass
class LabelConfig:
    """Thresholds of the auto-labeller.

    Attributes:
        box_threshold: Text detector: minimum box score.
        text_threshold: Grounding DINO: minimum probability of the box's class tokens.
        nms_threshold: Per-class NMS IoU of the detector's boxes (1 = off).
        max_detections: At most this many boxes per image.
        min_box_score: Boxes from files or detector objects scored under this are skipped.
        clip_threshold: CLIP: below this probability of the best class a mask is unknown.
        templates: CLIP prompt templates, each with ``{}`` for the class name.
        keep_unknown: Keep masks CLIP calls unknown (class index -1) instead of dropping them.
        multimask: Decode three masks per box and keep the best (see ``segment_boxes``).
        amg: Arguments of the automatic generator (CLIP-only labelling).
    """

    box_threshold: float = 0.3
    text_threshold: float = 0.25
    nms_threshold: float = 0.5
    max_detections: int = 100
    min_box_score: float = 0.0
    clip_threshold: float = 0.5
    templates: Sequence[str] = TEMPLATES
    keep_unknown: bool = False
    multimask: bool = False
    amg: dict[str, Any] = field(default_factory=dict)


class AutoLabeler:
    """Labelled masks of the given classes in images.

    Args:
        model: A ``Sam`` model, a :class:`~samkit.SamPredictor` or an ``OnnxPredictor``.
        classes: The class names (``"cat, dog"`` or a list); None takes them from each call
            (``classes=``) or from the boxes given to :meth:`label` (their ``names``).
        detector: Finds boxes from the class names.
        clip: Names each mask.
        config: Thresholds.
    """

    def __init__(self, model: Any, classes: str | Sequence[str] | None = None,
                 detector: TextDetector | None = None, clip: ClipLabeler | None = None,
                 config: LabelConfig | None = None) -> None:
        self.model = model
        self.predictor = as_predictor(model)
        self.classes = None if classes is None else parse_classes(classes)
        self.detector = detector
        self.clip = clip
        self.config = config or LabelConfig()

    def _classes(self, classes: str | Sequence[str] | None) -> list[str]:
        if classes is not None:
            return parse_classes(classes)
        if self.classes is None:
            raise InputError("a text detector or CLIP needs the class names "
                             "(--text \"cat, dog\")")
        return self.classes

    def detect(self, image: Any, classes: str | Sequence[str] | None = None,
               config: LabelConfig | None = None) -> Detections | None:
        """The text detector's boxes of the classes in one image (None without a detector).
        Needs no SAM: callers that share the predictor can run it outside their lock."""
        if self.detector is None:
            return None
        cfg = config or self.config
        return self.detector.detect(image, self._classes(classes), cfg.box_threshold,
                                    cfg.text_threshold, cfg.nms_threshold, cfg.max_detections)

    def label(self, image: Any, boxes: Detections | None = None,
              classes: str | Sequence[str] | None = None, config: LabelConfig | None = None,
              embedded: bool = False) -> Detections:
        """Labelled masks of one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            boxes: This image's boxes (XYXY pixels) with classes, when they come from a file or
                another detector (or from :meth:`detect`); otherwise the text detector or,
                without one, the automatic generator plus CLIP finds the objects.
            classes: The class names for this call (default: the labeller's).
            config: Thresholds for this call (default: the labeller's).
            embedded: The predictor already holds this image's embedding (a cache's); boxes
                are decoded against it without encoding the image again.

        Returns:
            :class:`Detections` with ``masks`` ``(N, H, W)``, ``mask_scores`` and, when CLIP
            named them, ``label_scores``; ``names`` are the class names.
        """
        cfg = config or self.config
        rgb = to_rgb_uint8(image)
        names = None if classes is None and self.classes is None else self._classes(classes)
        if boxes is not None:
            det = boxes.select(boxes.scores >= cfg.min_box_score)
            if names is not None and self.clip is None:
                det = _only(det, names)
        elif self.detector is not None:
            det = self.detect(rgb, names, cfg)
            assert det is not None
        elif self.clip is not None:
            names = self._classes(classes)
            return self._name(rgb, self._automatic(rgb, cfg), names, cfg)
        else:
            raise InputError("nothing finds the objects: give boxes, a text detector "
                             "(--detector) or a CLIP model (--clip) with the class names")
        if not embedded:
            self.predictor.set_image(rgb)
        det = segment_boxes(self.predictor, det, multimask=cfg.multimask)
        if self.clip is None:
            return det
        return self._name(rgb, det, names or det.names, cfg)

    def _automatic(self, rgb: np.ndarray, cfg: LabelConfig) -> Detections:
        from samkit.amg import SamAutomaticMaskGenerator

        gen = SamAutomaticMaskGenerator(self.predictor, **cfg.amg)
        records = gen.generate(rgb)
        h, w = rgb.shape[:2]
        masks = np.array([r["segmentation"] for r in records], bool).reshape(-1, h, w)
        boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in
                          (r["bbox"] for r in records)], np.float32).reshape(-1, 4)
        scores = np.array([r["predicted_iou"] for r in records], np.float32)
        det = Detections(boxes, scores, np.full(len(records), -1), [])
        det.masks, det.mask_scores = masks, scores
        return det

    def _name(self, rgb: np.ndarray, det: Detections, names: list[str], cfg: LabelConfig
              ) -> Detections:
        assert self.clip is not None
        named = self.clip.label(rgb, det, names, cfg.clip_threshold, cfg.templates)
        return named if cfg.keep_unknown else named.select(named.class_ids >= 0)


def _only(det: Detections, classes: list[str]) -> Detections:
    """The detections whose class is one of ``classes`` (names compared as
    :func:`~samkit.pipelines.parse_classes` writes them: lower case, single spaces), with
    ``names`` = ``classes``."""
    index = {n: i for i, n in enumerate(classes)}
    ids = np.array([index.get(" ".join(n.split()).lower(), -1) for n in det.names] + [-1],
                   np.int64)
    mapped = ids[np.where(det.class_ids >= 0, det.class_ids, len(det.names))]
    out = det.select(mapped >= 0)
    out.names = list(classes)
    out.class_ids = mapped[mapped >= 0]
    return out


def categories(names: Sequence[str], unknown: bool = False) -> list[dict[str, Any]]:
    """COCO categories for class names: ids 1..L in order, then ``unknown`` (L + 1) if
    asked for."""
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return [*cats, {"id": len(cats) + 1, "name": "unknown"}] if unknown else cats


def to_entry(det: Detections, file_name: str, image_id: int | None = None) -> ImageEntry:
    """One image's labelled masks as a :class:`~samkit.io.formats.ImageEntry` whose category
    ids follow :func:`categories` (unknown masks go to category ``len(names) + 1``)."""
    if det.masks is None:
        raise InputError("to_entry needs masks: segment the detections first")
    h, w = det.masks.shape[1:] if len(det.masks) else (0, 0)
    instances = []
    for i in range(len(det)):
        extra: dict[str, Any] = {"detector_score": round(float(det.scores[i]), 4)}
        if det.mask_scores is not None:
            extra["predicted_iou"] = round(float(det.mask_scores[i]), 4)
        if det.label_scores is not None:
            extra["label_score"] = round(float(det.label_scores[i]), 4)
        cid = int(det.class_ids[i])
        instances.append(Instance(mask=det.masks[i], score=float(det.scores[i]),
                                  category_id=cid + 1 if cid >= 0 else len(det.names) + 1,
                                  extra=extra))
    return ImageEntry(file_name, int(h), int(w), instances, id=image_id)


def draw(image: np.ndarray, det: Detections) -> np.ndarray:
    """``(H, W, 3)`` uint8 overlay: masks, boxes and ``class score`` captions."""
    import cv2

    from samkit.viz import color_for, overlay

    canvas = overlay(image, det.masks if det.masks is not None else [], boxes=None)
    h, w = image.shape[:2]
    scale = max(0.4, min(h, w) / 800)
    thick = max(1, round(scale * 2))
    for i, (label, box) in enumerate(zip(det.labels(), det.boxes)):
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        color = tuple(int(c) for c in color_for(i))
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thick)
        text = f"{label} {det.scores[i]:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = max(th + base, y0)
        cv2.rectangle(canvas, (x0, ty - th - base), (x0 + tw, ty), color, -1)
        cv2.putText(canvas, text, (x0, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return canvas


__all__ = ["AutoLabeler", "LabelConfig", "categories", "draw", "to_entry"]
