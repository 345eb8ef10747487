"""A studio project: its database, image folder and model; prediction on its images
(the embedding cache and its background worker live in :mod:`samkit.studio.embeddings`).

Layout of a project directory::

    samkit_project.sqlite      images, classes, instances (see store.py)
    project.json               image folder and model id
    images/                    uploaded images (or --images DIR elsewhere)
    .samkit/embeddings/<model id>/<image sha256>.pt    cached image embeddings
    .samkit/display/<image sha256>.jpg                 images in EXIF orientation, for browsers

Embeddings are keyed by the image's content hash and the model id, so renaming an image keeps
its cache and changing the model never serves a stale embedding.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from samkit.errors import InputError
from samkit.io.image import IMAGE_SUFFIXES, load_image
from samkit.io.prompts import check_box, points_from_triples, require_prompt
from samkit.studio.embeddings import EmbeddingCache, EmbeddingWorker
from samkit.studio.store import ProjectStore, StoreError

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 100_000_000


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_id_for(name: str, weights: str | os.PathLike[str] | None) -> str:
    """``name-<first 12 hex of the weights' sha256>`` (``name-random`` without weights)."""
    return f"{name}-{file_sha256(weights)[:12]}" if weights else f"{name}-random"


def project_model_id(name: str | None, checkpoint: str | os.PathLike[str], bundled: bool,
                     adapter: str | os.PathLike[str] | None = None) -> str:
    """The id a project's embedding cache is kept under: the model's name (the file's stem
    for a checkpoint given by path) and its weights' hash, plus the adapter's if any."""
    model_id = model_id_for(name if bundled and name else Path(checkpoint).stem, checkpoint)
    if adapter is not None:  # another encoder (lora, adapter) or decoder: its own cache
        model_id = f"{model_id}+{model_id_for(Path(adapter).stem, adapter)}"
    return model_id


class Project:
    """Open or create a project.

    Args:
        project_dir: Where the database, cache and (uploaded) images live.
        model: A built SAM model (eval mode) used for every embedding and prediction.
        model_id: Identifies the model's weights in the embedding cache.
        images_dir: Folder of images to annotate; default: the one recorded in the project,
            else ``project_dir/images``. New images found there are registered.
    """

    def __init__(self, project_dir: str | os.PathLike[str], model: Any, model_id: str,
                 images_dir: str | os.PathLike[str] | None = None) -> None:
        from samkit.predictor import SamPredictor

        self.dir = Path(project_dir).resolve()
        self.store = ProjectStore(self.dir)
        meta_path = self.dir / "project.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if images_dir is not None:
            meta["images_dir"] = str(Path(images_dir).resolve())
        self.images_dir = Path(meta.get("images_dir") or self.dir / "images").resolve()
        self.images_dir.mkdir(parents=True, exist_ok=True)
        meta["model_id"] = model_id
        meta_path.write_text(json.dumps(meta, indent=2))
        self.model = model
        self.model_id = model_id
        self.predictor = SamPredictor(model)
        self.lock = threading.Lock()  # one predictor: predictions and embeddings take turns
        self.cache_dir = self.dir / ".samkit" / "embeddings" / model_id
        self.display_dir = self.dir / ".samkit" / "display"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.display_dir.mkdir(parents=True, exist_ok=True)
        self.embeddings = EmbeddingCache(self.cache_dir, self._embed)
        self._logits: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self._mem = threading.Lock()  # guards the logits kept for refinement
        self.worker = EmbeddingWorker(self.embedding, self._missing_embeddings)
        #: Finds objects by class name (an :class:`~samkit.pipelines.AutoLabeler` with a text
        #: detector and/or CLIP over this project's predictor); None: no "find" box.
        self.labeler: Any = None
        self.scan()

    # -- images ----------------------------------------------------------------------------
    def scan(self) -> int:
        """Register images in the image folder not yet in the database; returns how many."""
        added = 0
        for path in sorted(self.images_dir.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            name = path.relative_to(self.images_dir).as_posix()
            if self.store.image_by_name(name) is None:
                self._register(path, name)
                added += 1
        return added

    def _register(self, path: Path, name: str) -> int:
        try:
            img = load_image(path)
            if img.shape[0] * img.shape[1] > MAX_PIXELS:
                raise InputError(f"{img.shape[1]}x{img.shape[0]} is over {MAX_PIXELS} pixels")
            h, w = img.shape[:2]
            return self.store.add_image(name, w, h, file_sha256(path))
        except (OSError, ValueError) as exc:
            return self.store.add_image(name, None, None, None, error=str(exc))

    def add_upload(self, filename: str, data: bytes) -> dict[str, Any]:
        """Save an uploaded image into the image folder after validating it."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise StoreError(f"upload is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}")
        name = Path(filename).name
        if not name or name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise StoreError(f"{filename!r} is not an image file name (allowed suffixes: "
                             f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except Exception as exc:
            raise StoreError(f"{name} is not a readable image: {exc}") from None
        target = self.images_dir / name
        if target.exists():
            stem, suffix = target.stem, target.suffix
            target = self.images_dir / f"{stem}-{uuid.uuid4().hex[:8]}{suffix}"
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        image_id = self._register(target, target.name)
        return self.store.get_image(image_id)

    def image_path(self, image_id: int) -> Path:
        """The image's file; only files inside the image folder are ever returned."""
        info = self.store.get_image(image_id)
        path = (self.images_dir / info["file_name"]).resolve()
        if not path.is_relative_to(self.images_dir) or not path.is_file():
            raise StoreError(f"image {image_id} ({info['file_name']}) is not in the image folder")
        return path

    def display_jpeg(self, image_id: int) -> Path:
        """The image as the browser should show it (EXIF-oriented, 8-bit RGB JPEG)."""
        info = self.store.get_image(image_id)
        if info["error"]:
            raise StoreError(f"image {image_id} could not be read: {info['error']}")
        out = self.display_dir / f"{info['sha256']}.jpg"
        if not out.exists():
            rgb = load_image(self.image_path(image_id))
            tmp = out.with_name(f"{out.stem}.{uuid.uuid4().hex[:6]}.tmp")
            Image.fromarray(rgb).save(tmp, format="JPEG", quality=92)
            tmp.replace(out)
        return out

    def _missing_embeddings(self) -> list[int]:
        rows, _ = self.store.list_images()
        return [r["id"] for r in rows if r["error"] is None and not self.is_cached(r["id"])]

    # -- embeddings ------------------------------------------------------------------------
    def _embed(self, rgb: np.ndarray) -> torch.Tensor:
        with self.lock:
            self.predictor.set_image(rgb)
            return self.predictor.get_image_embedding().cpu()

    def is_cached(self, image_id: int) -> bool:
        info = self.store.get_image(image_id)
        return info["error"] is None and self.embeddings.has(info["sha256"])

    def embedding(self, image_id: int) -> tuple[torch.Tensor, tuple[int, int], bool]:
        """``(1, C, h, w)`` embedding and ``(H, W)``; computes and caches it if needed.

        Returns:
            The embedding, the image size, and whether it was computed now.
        """
        info = self.store.get_image(image_id)
        if info["error"]:
            raise StoreError(f"image {image_id} could not be read: {info['error']}")
        return self.embeddings.get(info["sha256"], lambda: load_image(self.image_path(image_id)))

    # -- prediction ------------------------------------------------------------------------
    def predict(self, image_id: int, points: list[list[float]] | None = None,
                box: list[float] | None = None, logits_id: str | None = None,
                multimask: bool = True) -> dict[str, Any]:
        """Masks for clicks and/or a box on one image.

        Args:
            points: ``[[x, y, label], ...]`` in image pixels; label 1 = object, 0 = background.
            box: ``[x0, y0, x1, y1]`` in image pixels.
            logits_id: The ``logits_id`` of an earlier answer on this image, fed back as
                ``mask_input`` to refine it.
            multimask: Three candidates (SAM's ambiguity-aware output) or one.

        Returns:
            ``{"candidates": [{"rle", "score", "area", "bbox", "logits_id"}...],
            "embedding_ms", "decode_ms"}``, candidates best first.
        """
        from samkit.studio.store import mask_record

        t0 = time.perf_counter()
        emb, size, _ = self.embedding(image_id)
        t1 = time.perf_counter()
        require_prompt(points, box)
        coords, labels = points_from_triples(points) or (None, None)
        box_arr = check_box(box)
        mask_input = None
        if logits_id is not None:
            with self._mem:
                owner, low_prev = self._logits.get(logits_id, (None, None))
            if owner != image_id or low_prev is None:
                raise StoreError(f"unknown or expired logits_id {logits_id!r} for image "
                                 f"{image_id}; predict again without it")
            mask_input = low_prev[None]
        with self.lock:
            self.predictor.set_image_embedding(emb, size)
            masks, scores, low = self.predictor.predict(
                point_coords=coords, point_labels=labels, box=box_arr,
                mask_input=mask_input, multimask_output=multimask,
            )
        order = np.argsort(-scores)
        candidates = []
        for i in order:
            rle, area, bbox = mask_record(masks[i])
            lid = uuid.uuid4().hex
            with self._mem:
                self._logits[lid] = (image_id, low[i])
            candidates.append({"rle": rle, "size": [size[0], size[1]],
                               "score": float(scores[i]), "area": area, "bbox": list(bbox),
                               "logits_id": lid})
        with self._mem:
            while len(self._logits) > 256:
                self._logits.popitem(last=False)
        t2 = time.perf_counter()
        return {"candidates": candidates, "embedding_ms": round((t1 - t0) * 1e3, 2),
                "decode_ms": round((t2 - t1) * 1e3, 2)}

    def find(self, image_id: int, text: str, **thresholds: float) -> dict[str, Any]:
        """Candidate masks of the named classes on one image, to accept or reject.

        Args:
            text: Class names, comma-separated (``"cat, dog"``).
            thresholds: Overrides of the labeller's ``box_threshold``, ``text_threshold``,
                ``clip_threshold``.

        Returns:
            ``{"candidates": [{"rle", "size", "score", "area", "bbox", "class_name",
            "class_id"}...], "classes", "ms"}``, best first; ``class_id`` is the project's
            class of that name, or None when accepting will create it.
        """
        from dataclasses import replace

        from samkit.pipelines import parse_classes
        from samkit.studio.store import mask_record

        if self.labeler is None:
            raise InputError("finding objects by name needs a text detector or CLIP: start "
                             "the studio with --detector DIR and/or --clip DIR")
        t0 = time.perf_counter()
        classes = parse_classes(text)
        config = replace(self.labeler.config, **thresholds)
        emb, size, _ = self.embedding(image_id)
        rgb = load_image(self.image_path(image_id))
        boxes = self.labeler.detect(rgb, classes, config)  # no SAM: outside the lock
        with self.lock:
            self.predictor.set_image_embedding(emb, size)
            det = self.labeler.label(rgb, boxes, classes, config, embedded=True)
        existing = {c["name"]: c["id"] for c in self.store.list_classes()}
        candidates = []
        assert det.masks is not None
        labels = det.labels()
        for i in np.argsort(-det.scores, kind="stable"):
            rle, area, bbox = mask_record(det.masks[i])
            name = labels[i]
            candidates.append({"rle": rle, "size": [size[0], size[1]],
                               "score": round(float(det.scores[i]), 4), "area": area,
                               "bbox": list(bbox), "class_name": name,
                               "class_id": existing.get(name)})
        return {"candidates": candidates, "classes": classes,
                "ms": round((time.perf_counter() - t0) * 1e3, 1)}

    def segment_everything(self, image_id: int, **amg_params: Any) -> list[dict[str, Any]]:
        """Automatic masks for one image as ``{"rle", "size", "score", "area", "bbox"}``."""
        from samkit.amg import SamAutomaticMaskGenerator

        rgb = load_image(self.image_path(image_id))
        with self.lock:
            gen = SamAutomaticMaskGenerator(self.model, output_mode="coco_rle", **amg_params)
            records = gen.generate(rgb)
        return [{"rle": r["segmentation"]["counts"], "size": r["segmentation"]["size"],
                 "score": float(r["predicted_iou"]), "area": int(r["area"]),
                 "bbox": [int(v) for v in r["bbox"]]} for r in records]
