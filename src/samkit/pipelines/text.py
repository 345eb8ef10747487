"""Text -> boxes with Hugging Face zero-shot detectors (Grounding DINO, OWLv2, OWL-ViT).

Weights are read from a local folder (``save_pretrained`` layout: ``config.json``,
``model.safetensors``, the processor and tokenizer files); nothing is downloaded. For real
use download e.g. ``IDEA-Research/grounding-dino-tiny`` or ``google/owlv2-base-patch16-ensemble``
once with ``huggingface-cli download NAME --local-dir DIR``.

Scores and classes are computed here from the model's raw outputs rather than with the
processors' post-processing, whose threshold arguments were renamed across transformers
versions (``box_threshold`` became ``threshold``) and whose Grounding DINO labels are
phrases, not the class names given:

- Grounding DINO: the prompt is ``"cat. dog."``; a box's score for a class is the highest
  token probability (sigmoid) over that class's tokens; its score is the best class's.
  Boxes are normalised to the image without the batch padding. Names that do not fit in one
  prompt (``max_text_len``, 256 tokens for the public models) are split over several runs,
  whose boxes are pooled before the per-class NMS.
- OWLv2 / OWL-ViT: one text query per class; the score is the sigmoid of the query's logit.
  OWLv2 pads the image to a square (bottom and right) before resizing, so its normalised
  boxes are scaled by the padded side, ``max(H, W)``, not by ``(W, H)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samkit._extras import require
from samkit.errors import InputError
from samkit.io.image import to_rgb_uint8
from samkit.pipelines.detections import Detections

KINDS = {"grounding-dino": "grounding_dino", "owlv2": "owlv2", "owlvit": "owlvit"}


def parse_classes(text: str | Sequence[str]) -> list[str]:
    """``"cat, dog"`` (or ``"cat. dog."``, or a list) -> ``["cat", "dog"]``: trimmed, lower
    case, empty and repeated names dropped, order kept."""
    parts = text.replace(".", ",").split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for p in parts:
        name = " ".join(str(p).split()).lower()
        if name and name not in out:
            out.append(name)
    if not out:
        raise InputError(f"no class names in {text!r}: give them comma-separated, e.g. "
                         "\"cat, dog\"")
    return out


def load_hf(path: str | os.PathLike[str], what: str) -> tuple[Any, Any]:
    """``(config, transformers module)`` of a local Hugging Face model folder."""
    transformers = require("transformers", "text", what)
    p = Path(path)
    if not (p / "config.json").is_file():
        raise InputError(f"{p} is not a Hugging Face model folder (no config.json): download "
                         "the weights once with 'huggingface-cli download NAME --local-dir "
                         f"{p}' and pass that folder")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers.AutoConfig.from_pretrained(p, local_files_only=True), transformers


class TextDetector:
    """Boxes for class names given as text.

    Args:
        model: A ``*ForObjectDetection`` zero-shot model (Grounding DINO, OWLv2, OWL-ViT).
        processor: Its processor (image processor and tokenizer).
        device: Where the model runs.
    """

    def __init__(self, model: Any, processor: Any, device: str | torch.device = "cpu") -> None:
        kind = KINDS.get(model.config.model_type)
        if kind is None:
            raise InputError(f"{model.config.model_type!r} is not a supported text detector; "
                             f"use one of {', '.join(KINDS)}")
        self.kind = kind
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu"
                        ) -> TextDetector:
        """Load a detector saved with ``save_pretrained`` (a local folder, never the Hub)."""
        config, transformers = load_hf(path, "Text prompts (--detector)")
        if config.model_type not in KINDS:
            raise InputError(f"{path} holds a {config.model_type!r} model, not a text detector "
                             f"({', '.join(KINDS)})")
        model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(
            path, local_files_only=True)
        processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
        return cls(model, processor, device)

    @torch.inference_mode()
    def detect(self, image: Any, classes: str | Sequence[str], box_threshold: float = 0.3,
               text_threshold: float = 0.25, nms_threshold: float = 0.5,
               max_detections: int = 100) -> Detections:
        """Boxes of the named classes in one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (or anything :func:`samkit.io.to_rgb_uint8` takes).
            classes: Class names, ``"cat, dog"`` or a list.
            box_threshold: Keep boxes whose score is at least this.
            text_threshold: Grounding DINO: the best class's token probability must be at least
                this, else the box is dropped (ignored by OWL models).
            nms_threshold: Per-class NMS IoU (1 turns NMS off).
            max_detections: Keep at most this many, best first.

        Returns:
            :class:`Detections` with XYXY pixel boxes, scores and ``names`` = the classes.
        """
        names = parse_classes(classes)
        rgb = to_rgb_uint8(image)
        if not rgb.flags.writeable:  # the processors make tensors of it
            rgb = rgb.copy()
        h, w = rgb.shape[:2]
        if self.kind == "grounding_dino":
            # one run per group of names that fits the text length (e.g. COCO's 80 classes),
            # each run's boxes scored on its own names
            runs = []
            for offset, group in self._prompt_groups(names):
                class_scores, boxes = self._grounding_dino(rgb, group)
                best, ids = class_scores.max(dim=1)
                runs.append((best, ids + offset, boxes * torch.tensor([w, h, w, h])))
            scores, ids, boxes = (torch.cat(x) for x in zip(*runs))
        else:
            class_scores, boxes = self._owl(rgb, names)
            side = max(h, w) if self.kind == "owlv2" else None
            boxes = boxes * (torch.tensor([side] * 4) if side else torch.tensor([w, h, w, h]))
            scores, ids = class_scores.max(dim=1)
        keep = scores >= box_threshold
        if self.kind == "grounding_dino":
            keep &= scores >= text_threshold
        det = Detections(boxes[keep].numpy(), scores[keep].numpy(), ids[keep].numpy(), names)
        det = det.clip_to(h, w)
        return nms_per_class(det, nms_threshold, max_detections)

    def _prompt_groups(self, names: list[str]) -> list[tuple[int, list[str]]]:
        """``(index of the first name, names)`` groups whose ``"a. b."`` prompt fits the
        model's text length (``max_text_len`` tokens, [CLS] and [SEP] included)."""
        limit = int(getattr(self.model.config, "max_text_len", 256)) - 2
        groups: list[tuple[int, list[str]]] = []
        used = 0
        for i, name in enumerate(names):
            n = len(self.processor.tokenizer.tokenize(f"{name}."))
            if n > limit:
                raise InputError(f"the class name {name!r} alone takes more than the "
                                 f"detector's {limit} text tokens")
            if not groups or used + n > limit:
                groups.append((i, []))
                used = 0
            groups[-1][1].append(name)
            used += n
        return groups

    def _grounding_dino(self, rgb: np.ndarray, names: list[str]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        prompt = " ".join(f"{n}." for n in names)
        inputs = self.processor(images=rgb, text=prompt, return_tensors="pt")
        enc = self.processor.tokenizer(prompt, return_offsets_mapping=True)
        spans: list[list[int]] = [[] for _ in names]
        starts = np.cumsum([0] + [len(n) + 2 for n in names])  # "name. " per class
        for t, (a, b) in enumerate(enc["offset_mapping"]):
            if b <= a:
                continue  # special tokens
            k = int(np.searchsorted(starts, a, side="right")) - 1
            if 0 <= k < len(names) and a < starts[k] + len(names[k]):  # not the "."
                spans[k].append(t)
        if any(not s for s in spans):
            raise InputError(f"the detector's tokenizer has no tokens for {names}")
        out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        probs = out.logits[0].float().sigmoid().cpu()  # (queries, text tokens)
        if max(max(s) for s in spans) >= probs.shape[1]:  # _prompt_groups keeps within it
            raise InputError(f"the class names take more than the detector's {probs.shape[1]} "
                             "text tokens")
        class_scores = torch.stack([probs[:, s].max(dim=1).values for s in spans], dim=1)
        return class_scores, _xyxy(out.pred_boxes[0].float().cpu())

    def _owl(self, rgb: np.ndarray, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.processor(text=[names], images=rgb, return_tensors="pt")
        out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        return out.logits[0].float().sigmoid().cpu(), _xyxy(out.pred_boxes[0].float().cpu())


def _xyxy(cxcywh: torch.Tensor) -> torch.Tensor:
    cx, cy, bw, bh = cxcywh.unbind(-1)
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)


def nms_per_class(det: Detections, iou_threshold: float = 0.5, max_detections: int = 100
                  ) -> Detections:
    """Non-maximum suppression within each class, then the ``max_detections`` best."""
    from torchvision.ops import batched_nms

    if len(det) == 0:
        return det
    if iou_threshold >= 1:
        keep = np.argsort(-det.scores, kind="stable")
    else:
        keep = batched_nms(torch.from_numpy(det.boxes), torch.from_numpy(det.scores),
                           torch.from_numpy(det.class_ids), iou_threshold).numpy()
    return det.select(keep[:max_detections])


__all__ = ["KINDS", "TextDetector", "load_hf", "nms_per_class", "parse_classes"]
