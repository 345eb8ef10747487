"""CLIP labels for masks: which of the given class names each mask shows.

Each mask is shown to CLIP on its own: the mask's box (plus a margin) is cropped, the pixels
outside the mask are blanked to the crop's mean colour, the crop is padded to a square with
that colour, and its embedding is compared with the text embeddings of every class name
written into prompt templates ("a photo of a {}."; the templates' embeddings are averaged,
CLIP's prompt ensembling). The cosine similarities times CLIP's logit scale go through a
softmax over the classes; a mask whose best probability is under the threshold is
``unknown`` (class index -1).

Two backends read local weights: Hugging Face ``CLIPModel`` folders (``save_pretrained``
layout, e.g. ``openai/clip-vit-base-patch32``) and open_clip folders
(``open_clip_config.json`` with ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``, the layout of open_clip models on the Hub).
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
from samkit.pipelines.text import load_hf, parse_classes

TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a cropped photo of a {}.")


def mask_crop(image: np.ndarray, mask: np.ndarray, margin: float = 0.1,
              blank: bool = True) -> np.ndarray:
    """The square crop CLIP sees for one mask.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool.
        margin: Extra context on each side, as a fraction of the box's longer side.
        blank: Replace the pixels outside the mask with the crop's mean colour.

    Returns:
        ``(S, S, 3)`` uint8, the mask's box centred and padded with that colour (a 1x1 crop
        for an empty mask).
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return np.zeros((1, 1, 3), np.uint8)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    pad = round(margin * max(x1 - x0, y1 - y0))
    h, w = mask.shape
    x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    crop = image[y0:y1, x0:x1].astype(np.float32)
    inside = mask[y0:y1, x0:x1]
    fill = crop[inside].mean(axis=0)
    if blank:
        crop[~inside] = fill
    side = max(crop.shape[:2])
    out = np.empty((side, side, 3), np.float32)
    out[:] = fill
    oy, ox = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    out[oy:oy + crop.shape[0], ox:ox + crop.shape[1]] = crop
    return out.round().clip(0, 255).astype(np.uint8)


class ClipLabeler:
    """Class names for masks with a CLIP model.

    Build it with :meth:`from_pretrained`; ``encode_images`` / ``encode_texts`` map lists of
    ``(S, S, 3)`` uint8 crops / strings to L2-normalised ``(N, D)`` float tensors.

    Args:
        encode_images: Crops -> normalised embeddings.
        encode_texts: Strings -> normalised embeddings.
        logit_scale: CLIP's learned temperature (``exp`` of its ``logit_scale``).
        name: What was loaded, for reports.
    """

    def __init__(self, encode_images: Any, encode_texts: Any, logit_scale: float,
                 name: str = "clip") -> None:
        self.encode_images = encode_images
        self.encode_texts = encode_texts
        self.logit_scale = float(logit_scale)
        self.name = name
        self._texts: dict[tuple[tuple[str, ...], tuple[str, ...]], torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu"
                        ) -> ClipLabeler:
        """Load a Hugging Face CLIP folder or an open_clip folder (see the module doc)."""
        p = Path(path)
        if (p / "open_clip_config.json").is_file():
            return cls._open_clip(p, torch.device(device))
        config, transformers = load_hf(p, "CLIP labels (--clip)")
        model = transformers.AutoModel.from_pretrained(p, local_files_only=True).eval()
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise InputError(f"{p} holds a {config.model_type!r} model, which has no image and "
                             "text embeddings; give a CLIP model folder")
        model.to(device)
        processor = transformers.AutoProcessor.from_pretrained(p, local_files_only=True)

        def features(out: Any) -> torch.Tensor:  # a tensor, or an output with pooler_output
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        @torch.inference_mode()
        def images(crops: list[np.ndarray]) -> torch.Tensor:
            px = processor(images=crops, return_tensors="pt")["pixel_values"].to(device)
            return _normed(features(model.get_image_features(pixel_values=px)))

        @torch.inference_mode()
        def texts(strings: list[str]) -> torch.Tensor:
            tok = processor.tokenizer(strings, padding=True, truncation=True,
                                      return_tensors="pt").to(device)
            return _normed(features(model.get_text_features(**tok)))

        return cls(images, texts, float(model.logit_scale.detach().exp()), name=p.name)

    @classmethod
    def _open_clip(cls, p: Path, device: torch.device) -> ClipLabeler:
        open_clip = require("open_clip", "text", "CLIP labels from open_clip weights")
        if not any((p / f).is_file() for f in ("open_clip_model.safetensors",
                                                "open_clip_pytorch_model.bin")):
            raise InputError(f"{p} has open_clip_config.json but no open_clip_model.safetensors "
                             "or open_clip_pytorch_model.bin")
        model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{p}",
                                                                   device=device)
        model.eval()
        tokenizer = open_clip.get_tokenizer(f"local-dir:{p}")
        from PIL import Image

        @torch.inference_mode()
        def images(crops: list[np.ndarray]) -> torch.Tensor:
            px = torch.stack([preprocess(Image.fromarray(c)) for c in crops]).to(device)
            return _normed(model.encode_image(px))

        @torch.inference_mode()
        def texts(strings: list[str]) -> torch.Tensor:
            return _normed(model.encode_text(tokenizer(strings).to(device)))

        return cls(images, texts, float(model.logit_scale.detach().exp()), name=p.name)

    def text_embeddings(self, classes: Sequence[str],
                        templates: Sequence[str] = TEMPLATES) -> torch.Tensor:
        """``(L, D)`` normalised class embeddings, each the mean over the templates."""
        key = (tuple(classes), tuple(templates))
        if key not in self._texts:
            if not templates or any("{}" not in t for t in templates):
                raise InputError(f"each template needs a '{{}}' for the class name: {templates}")
            emb = self.encode_texts([t.format(c) for c in classes for t in templates])
            emb = emb.reshape(len(classes), len(templates), -1).mean(dim=1)
            self._texts[key] = _normed(emb)
        return self._texts[key]

    def probabilities(self, image: Any, masks: np.ndarray, classes: str | Sequence[str],
                      templates: Sequence[str] = TEMPLATES, batch_size: int = 32
                      ) -> np.ndarray:
        """``(N, L)`` softmax probabilities of the ``L`` classes for ``(N, H, W)`` masks."""
        names = parse_classes(classes)
        rgb = to_rgb_uint8(image)
        masks = np.asarray(masks, dtype=bool).reshape(-1, *rgb.shape[:2]) if len(masks) else \
            np.zeros((0, *rgb.shape[:2]), bool)
        if len(masks) == 0:
            return np.zeros((0, len(names)), np.float32)
        text = self.text_embeddings(names, templates)
        probs = []
        for start in range(0, len(masks), batch_size):
            crops = [mask_crop(rgb, m) for m in masks[start:start + batch_size]]
            img = self.encode_images(crops).to(text.dtype)
            probs.append((self.logit_scale * img @ text.T.to(img.device)).softmax(dim=-1).cpu())
        out = torch.cat(probs).float().numpy()
        out[~masks.any(axis=(1, 2))] = 0  # an empty mask shows nothing: unknown
        return out

    def label(self, image: Any, detections: Detections, classes: str | Sequence[str],
              threshold: float = 0.5, templates: Sequence[str] = TEMPLATES) -> Detections:
        """Detections relabelled by CLIP: ``names`` become ``classes``, ``class_ids`` the best
        class (-1 = unknown where its probability is under ``threshold``) and
        ``label_scores`` that probability. The masks must be filled in."""
        if detections.masks is None:
            raise InputError("label needs masks: segment the boxes first (segment_boxes)")
        names = parse_classes(classes)
        probs = self.probabilities(image, detections.masks, names, templates)
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
        p = probs.max(axis=1) if len(probs) else np.zeros(0, np.float32)
        out = detections.select(np.arange(len(detections)))
        out.names = names
        out.class_ids = np.where(p >= threshold, best, -1).astype(np.int64)
        out.label_scores = p.astype(np.float32)
        return out


def _normed(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


__all__ = ["TEMPLATES", "ClipLabeler", "mask_crop"]
