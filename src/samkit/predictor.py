"""``SamPredictor``: embed an image once, then predict masks per prompt in milliseconds.

Two layers: a numpy layer (``set_image``, ``predict``) in original-image pixel coordinates,
over a batched torch core (``set_torch_image``, ``predict_torch``) in the resized model-input
frame (see :class:`samkit.transforms.ResizeLongestSide`). Points are (X, Y) pixels, boxes XYXY,
sizes (H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from samkit.errors import InputError, InputTypeError
from samkit.io.image import to_rgb_uint8
from samkit.io.prompts import check_box, check_mask_input, check_points, check_torch_prompts
from samkit.modeling import Sam
from samkit.transforms import ResizeLongestSide


@dataclass
class _ImageState:
    features: torch.Tensor  # (1, C, h, w)
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class SamPredictor:
    """Drop-in for the official ``SamPredictor``.

    Args:
        sam_model: The model used for embedding and mask prediction.
    """

    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self._batch: list[_ImageState] = []
        self.reset_image()

    # -- image -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self._image_pe: torch.Tensor | None = None
        self.orig_h = self.orig_w = self.input_h = self.input_w = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def _prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(1, 3, H', W')`` resized tensor in the model's order."""
        if self.model.image_format == "BGR":
            rgb = rgb[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(rgb))
        tensor = torch.as_tensor(resized, device=self.device)
        return tensor.permute(2, 0, 1).contiguous()[None, :, :, :]

    def set_image(self, image: Any, image_format: str = "RGB") -> None:
        """Embed an image for later ``predict`` calls.

        Args:
            image: ``(H, W, 3)`` uint8 array in ``image_format`` order; grayscale, RGBA,
                uint16, float in [0, 1] and PIL images are converted (see
                :func:`samkit.io.to_rgb_uint8`).
            image_format: ``"RGB"`` or ``"BGR"``.
        """
        rgb = to_rgb_uint8(image, image_format)
        self.set_torch_image(self._prepare(rgb), rgb.shape[:2])

    @torch.no_grad()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """Embed an already resized image.

        Args:
            transformed_image: ``(1, 3, H', W')`` pixels in 0-255 with ``max(H', W')`` equal to
                the model input size (use ``predictor.transform.apply_image``).
            original_image_size: ``(H, W)`` of the image before resizing.
        """
        self._check_torch_image(transformed_image, batch=1)
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (int(transformed_image.shape[-2]), int(transformed_image.shape[-1]))
        input_image = self.model.preprocess(transformed_image.to(self.device))
        self.features = self.model.embed(input_image)
        self.orig_h, self.orig_w = self.original_size
        self.input_h, self.input_w = self.input_size
        self.is_image_set = True

    def _check_torch_image(self, image: torch.Tensor, batch: int | None) -> None:
        size = self.model.image_encoder.img_size
        if not isinstance(image, torch.Tensor):
            raise InputTypeError(f"expected a torch.Tensor, got {type(image).__name__}")
        if image.ndim != 4 or image.shape[1] != 3 or (batch and image.shape[0] != batch):
            raise InputError(
                f"transformed_image must have shape ({batch or 'B'}, 3, H, W), got "
                f"{tuple(image.shape)}"
            )
        if max(image.shape[2:]) != size:
            raise InputError(
                f"transformed_image's long side must be {size} (use predictor.transform."
                f"apply_image first), got {tuple(image.shape[2:])}"
            )

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, ``(1, C, h, w)`` (``(1, 256, 64, 64)`` for SAM)."""
        self._require_image()
        assert self.features is not None
        return self.features

    def set_image_embedding(
        self,
        embedding: torch.Tensor,
        original_size: tuple[int, int],
        input_size: tuple[int, int] | None = None,
    ) -> None:
        """Use an embedding computed earlier (e.g. cached on disk) instead of ``set_image``.

        Args:
            embedding: ``(1, C, h, w)`` from :meth:`get_image_embedding` of the same model.
            original_size: ``(H, W)`` of the image it was computed from.
            input_size: ``(H', W')`` of the resized image; default: derived from
                ``original_size`` as ``set_image`` would.
        """
        expected = (self.model.prompt_encoder.embed_dim,
                    *self.model.prompt_encoder.image_embedding_size)
        if (not isinstance(embedding, torch.Tensor) or embedding.ndim != 4
                or embedding.shape[0] != 1 or tuple(embedding.shape[1:]) != expected):
            got = tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else embedding
            raise InputError(
                f"embedding must have shape (1, {', '.join(map(str, expected))}) for this "
                f"model, got {got}; was it computed by another model?"
            )
        h, w = int(original_size[0]), int(original_size[1])
        if input_size is None:
            input_size = self.transform.get_preprocess_shape(h, w, self.transform.target_length)
        self.reset_image()
        self.features = embedding.to(self.device, torch.float32)
        self.original_size = (h, w)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.orig_h, self.orig_w = self.original_size
        self.input_h, self.input_w = self.input_size
        self.is_image_set = True

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError(
                "no image is set: call predictor.set_image(image) before predict / "
                "get_image_embedding"
            )

    # -- prompts (numpy layer) -------------------------------------------------------------
    def _numpy_prompts(
        self,
        original_size: tuple[int, int],
        point_coords: Any,
        point_labels: Any,
        box: Any,
        mask_input: Any,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        points = check_points(point_coords, point_labels)
        box_arr = check_box(box)
        mask_arr = check_mask_input(mask_input, self.model.prompt_encoder.mask_input_size)
        coords_t = labels_t = box_t = mask_t = None
        if points is not None:
            coords = self.transform.apply_coords(points[0], original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(points[1], dtype=torch.int, device=self.device)[None]
        if box_arr is not None:
            boxes = self.transform.apply_boxes(box_arr, original_size)
            box_t = torch.as_tensor(boxes, dtype=torch.float, device=self.device)
        if mask_arr is not None:
            mask_t = torch.as_tensor(mask_arr, dtype=torch.float, device=self.device)[None]
        return coords_t, labels_t, box_t, mask_t

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one prompt set on the current image.

        Args:
            point_coords: ``(N, 2)`` (X, Y) pixels in the original image.
            point_labels: ``(N,)`` 1 = foreground, 0 = background.
            box: ``(4,)`` or ``(1, 4)`` XYXY pixels.
            mask_input: ``(1, 256, 256)`` low-res logits from a previous call (refinement).
            multimask_output: Three masks for ambiguous prompts, else one.
            return_logits: Return un-thresholded logits instead of bool masks.

        Returns:
            masks ``(C, H, W)`` bool (C = 3 or 1), scores ``(C,)`` predicted IoU, and low-res
            logits ``(C, 256, 256)``.
        """
        self._require_image()
        assert self.original_size is not None
        prompts = self._numpy_prompts(self.original_size, point_coords, point_labels, box,
                                      mask_input)
        masks, scores, low_res = self.predict_torch(
            *prompts, multimask_output=multimask_output, return_logits=return_logits
        )
        return (
            masks[0].detach().cpu().numpy(),
            scores[0].detach().cpu().numpy(),
            low_res[0].detach().cpu().numpy(),
        )

    # -- batched torch core ----------------------------------------------------------------
    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks for a batch of B prompt sets, in the resized input frame.

        Args:
            point_coords: ``(B, N, 2)`` XY, already mapped with ``transform.apply_coords_torch``.
            point_labels: ``(B, N)``.
            boxes: ``(B, 4)`` XYXY, already mapped with ``transform.apply_boxes_torch``.
            mask_input: ``(B, 1, 256, 256)`` low-res logits.
            multimask_output: Three masks per prompt set instead of one.
            return_logits: Return logits instead of bool masks.

        Returns:
            masks ``(B, C, H, W)``, scores ``(B, C)``, low-res logits ``(B, C, 256, 256)``.
        """
        self._require_image()
        assert self.features is not None and self.input_size and self.original_size
        return self._decode(
            self.features, self.input_size, self.original_size, point_coords, point_labels,
            boxes, mask_input, multimask_output, return_logits,
        )

    @torch.no_grad()
    def predict_low_res_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`predict_torch` but stops before upsampling.

        Returns:
            Low-res logits ``(B, C, 256, 256)`` and scores ``(B, C)``; upsample the ones you
            keep with ``model.postprocess_masks(logits, predictor.input_size,
            predictor.original_size)``.
        """
        self._require_image()
        assert self.features is not None
        return self._decode_low_res(self.features, point_coords, point_labels, boxes,
                                    mask_input, multimask_output)

    @property
    def mask_threshold(self) -> float:
        """Logit threshold between background and mask (the model's)."""
        return float(self.model.mask_threshold)

    def postprocess_masks(self, masks: torch.Tensor, input_size: tuple[int, ...],
                          original_size: tuple[int, ...]) -> torch.Tensor:
        """Upscale ``(B, M, h, w)`` low-res logits to ``original_size`` (the model's
        :meth:`~samkit.Sam.postprocess_masks`)."""
        return self.model.postprocess_masks(masks, input_size, original_size)

    def _decode_low_res(
        self,
        features: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_torch_prompts(point_coords, point_labels, boxes, mask_input,
                            self.model.prompt_encoder.mask_input_size)
        points = None
        if point_coords is not None and point_labels is not None:
            points = (point_coords.to(self.device), point_labels.to(self.device))
        model = self.model
        sparse, dense = model.prompt_encoder(
            points=points,
            boxes=None if boxes is None else boxes.to(self.device),
            masks=None if mask_input is None else mask_input.to(self.device),
        )
        if mask_input is None:
            dense = dense[:1]  # the same no-mask embedding for every prompt set
        if self._image_pe is None:  # once per image (reset_image clears it), not per call
            self._image_pe = model.prompt_encoder.get_dense_pe()
        return model.mask_decoder(
            image_embeddings=features,
            image_pe=self._image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def _decode(
        self,
        features: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low_res, iou = self._decode_low_res(
            features, point_coords, point_labels, boxes, mask_input, multimask_output
        )
        masks = self.model.postprocess_masks(low_res, input_size, original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    # -- several images --------------------------------------------------------------------
    @torch.no_grad()
    def set_image_batch(
        self, images: list[Any], image_format: str = "RGB", batch_size: int = 4
    ) -> None:
        """Embed several images (any sizes) for :meth:`predict_batch`.

        Args:
            images: Images as accepted by :meth:`set_image`.
            image_format: ``"RGB"`` or ``"BGR"``.
            batch_size: Images run through the encoder per forward pass.
        """
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise InputError("set_image_batch expects a non-empty list of images")
        self._batch = []
        prepared = []
        for img in images:
            rgb = to_rgb_uint8(img, image_format)
            prepared.append((self._prepare(rgb), rgb.shape[:2]))
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start : start + batch_size]
            stacked = torch.cat([self.model.preprocess(t.float()) for t, _ in chunk], dim=0)
            feats = self.model.embed(stacked)
            for (t, size), f in zip(chunk, feats):
                self._batch.append(
                    _ImageState(f[None], (int(size[0]), int(size[1])),
                                (int(t.shape[-2]), int(t.shape[-1])))
                )

    def predict_batch(
        self,
        point_coords_batch: list[np.ndarray | None] | None = None,
        point_labels_batch: list[np.ndarray | None] | None = None,
        box_batch: list[np.ndarray | None] | None = None,
        mask_input_batch: list[np.ndarray | None] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Predict for every image of :meth:`set_image_batch`, one prompt set per image.

        Each ``*_batch`` argument is a list with one entry per image (or None for all), each
        entry as in :meth:`predict`. ``box_batch`` entries may hold several boxes ``(B, 4)``.

        Returns:
            Lists (one item per image) of masks, scores and low-res logits, shaped as in
            :meth:`predict` (with a leading box axis when an entry has several boxes).
        """
        if not self._batch:
            raise RuntimeError("call set_image_batch(images) before predict_batch")
        n = len(self._batch)
        args = [point_coords_batch, point_labels_batch, box_batch, mask_input_batch]
        names = ["point_coords_batch", "point_labels_batch", "box_batch", "mask_input_batch"]
        for name, value in zip(names, args):
            if value is not None and len(value) != n:
                raise InputError(f"{name} has {len(value)} entries for {n} images")
        out_masks, out_scores, out_logits = [], [], []
        for i, state in enumerate(self._batch):
            pc, pl, bx, mi = (None if a is None else a[i] for a in args)
            many_boxes = bx is not None and np.asarray(bx).ndim == 2 and len(bx) > 1
            if many_boxes:
                boxes = np.asarray(bx, dtype=np.float64)
                for b in boxes:
                    check_box(b)
                box_t = torch.as_tensor(
                    self.transform.apply_boxes(boxes, state.original_size),
                    dtype=torch.float, device=self.device,
                )
                coords_t = labels_t = mask_t = None
                if pc is not None or mi is not None:
                    raise InputError(
                        "with several boxes for one image, give no points or mask_input for it"
                    )
            else:
                coords_t, labels_t, box_t, mask_t = self._numpy_prompts(
                    state.original_size, pc, pl, bx, mi
                )
            with torch.no_grad():
                masks, scores, low = self._decode(
                    state.features, state.input_size, state.original_size, coords_t, labels_t,
                    box_t, mask_t, multimask_output, return_logits,
                )
            sel: Any = slice(None) if many_boxes else 0
            out_masks.append(masks[sel].cpu().numpy())
            out_scores.append(scores[sel].cpu().numpy())
            out_logits.append(low[sel].cpu().numpy())
        return out_masks, out_scores, out_logits


def as_predictor(model: Any) -> Any:
    """A :class:`SamPredictor` over a :class:`~samkit.Sam` model, or ``model`` itself when it is
    already a predictor on another runtime (:class:`samkit.backends.onnxruntime.OnnxPredictor`).
    """
    if isinstance(model, Sam):
        return SamPredictor(model)
    if all(hasattr(model, a) for a in ("set_image", "predict", "predict_low_res_torch",
                                       "postprocess_masks", "mask_threshold")):
        return model
    raise InputTypeError(f"expected a samkit Sam model or an OnnxPredictor, got "
                         f"{type(model).__name__}")
