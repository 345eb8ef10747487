"""``OnnxPredictor``: :class:`samkit.SamPredictor`'s API over files written by
``samkit export onnx``, run by ONNX Runtime (no PyTorch model needed).

Points are (X, Y) pixels, boxes XYXY, sizes (H, W), as in the PyTorch predictor; the numpy
layer (``set_image``, ``predict``) takes original-image pixels, the torch layer
(``predict_torch``, ``predict_low_res_torch``) the resized input frame. Works with
:class:`samkit.SamAutomaticMaskGenerator` in place of a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samkit._extras import require
from samkit.errors import InputError
from samkit.export.onnx import DECODER_FILE, ENCODER_FILE, encode_prompts, read_metadata
from samkit.io.image import to_rgb_uint8
from samkit.io.prompts import check_box, check_mask_input, check_points, check_torch_prompts
from samkit.transforms import ResizeLongestSide, postprocess_masks

#: ``precision`` -> (encoder file, decoder file) in an export directory.
PRECISIONS = {
    "fp32": (ENCODER_FILE, DECODER_FILE),
    "int8": ("image_encoder.int8.onnx", "decoder.int8.onnx"),
}


class OnnxPredictor:
    """Embed an image once with ``image_encoder.onnx``, then decode prompts with
    ``decoder.onnx``.

    Args:
        directory: An export directory (``samkit export onnx -o DIR``).
        precision: ``"fp32"`` or ``"int8"`` (files written by ``--quantize int8``).
        providers: ONNX Runtime execution providers (default: CUDA when available, else CPU).
        threads: Intra-op threads (default: the CPUs this process may use).
        memory_arena: Keep ONNX Runtime's CPU memory arena (faster repeated calls); False
            hands activation memory back after each call (ViT-B at 1024 px holds several GB
            in the arena otherwise).
    """

    def __init__(self, directory: str | os.PathLike[str], precision: str = "fp32",
                 providers: list[str] | None = None, threads: int | None = None,
                 memory_arena: bool = True) -> None:
        ort = require("onnxruntime", "onnx", "The ONNX Runtime backend")
        from samkit.accel.runtime import available_cpus

        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        d = Path(directory)
        enc_path, dec_path = (d / f for f in PRECISIONS[precision])
        for p in (enc_path, dec_path):
            if not p.is_file():
                hint = " --quantize int8" if precision == "int8" else ""
                raise InputError(f"{p} not found: write it with 'samkit export onnx -o {d}{hint}'")
        enc_meta, dec_meta = read_metadata(enc_path), read_metadata(dec_path)
        if "samkit_weights_sha256" not in dec_meta:
            raise InputError(f"{dec_path} was not written by samkit export (no samkit metadata)")
        if enc_meta.get("samkit_weights_sha256") != dec_meta["samkit_weights_sha256"]:
            raise InputError(f"{enc_path.name} and {dec_path.name} in {d} were exported from "
                             "different weights; export them again together")
        self.metadata = dec_meta
        self.config = json.loads(dec_meta.get("samkit_config", "null"))
        self.img_size = int(dec_meta["samkit_image_size"])
        self.image_format = dec_meta.get("samkit_image_format", "RGB")
        self.mask_threshold = float(dec_meta.get("samkit_mask_threshold", "0.0"))
        self.transform = ResizeLongestSide(self.img_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cpus()
        options.enable_cpu_mem_arena = memory_arena
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in ort.get_available_providers()]
        self.providers = providers
        self.encoder = ort.InferenceSession(str(enc_path), options, providers=providers)
        self.decoder = ort.InferenceSession(str(dec_path), options, providers=providers)
        # The same decoder without its full-resolution upscaling, for callers that upscale
        # only the masks they keep (the automatic generator): ONNX Runtime runs every node of
        # a graph whatever outputs are asked for.
        self.low_res_decoder = ort.InferenceSession(
            _without_upscaling(dec_path), options, providers=providers)
        shape = {i.name: i.shape for i in self.decoder.get_inputs()}
        self.mask_input_size = (int(shape["mask_input"][2]), int(shape["mask_input"][3]))
        self.embedding_shape = tuple(int(v) for v in shape["image_embeddings"][1:])
        self.reset_image()

    # -- image -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the torch layer's outputs live (the CPU)."""
        return torch.device("cpu")

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.is_image_set = False
        self.features: np.ndarray | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def set_image(self, image: Any, image_format: str = "RGB") -> None:
        """Embed an image for later ``predict`` calls (as :meth:`SamPredictor.set_image`)."""
        rgb = to_rgb_uint8(image, image_format)
        if self.image_format == "BGR":
            rgb = rgb[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(rgb))
        emb = self.encoder.run(None, {"image": np.ascontiguousarray(resized)})[0]
        self.reset_image()
        self.features = emb
        self.original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        self.input_size = (int(resized.shape[0]), int(resized.shape[1]))
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, ``(1, C, h, w)``."""
        self._require_image()
        assert self.features is not None
        return torch.from_numpy(self.features)

    def set_image_embedding(self, embedding: torch.Tensor | np.ndarray,
                            original_size: tuple[int, int],
                            input_size: tuple[int, int] | None = None) -> None:
        """Use an embedding computed earlier (by this model, in either backend)."""
        emb = np.asarray(embedding.detach().cpu() if isinstance(embedding, torch.Tensor)
                         else embedding, dtype=np.float32)
        if emb.shape != (1, *self.embedding_shape):
            raise InputError(f"embedding must have shape {(1, *self.embedding_shape)} for this "
                             f"model, got {emb.shape}; was it computed by another model?")
        h, w = int(original_size[0]), int(original_size[1])
        if input_size is None:
            input_size = self.transform.get_preprocess_shape(h, w, self.img_size)
        self.reset_image()
        self.features = emb
        self.original_size = (h, w)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.is_image_set = True

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("no image is set: call predictor.set_image(image) before predict")

    # -- prompts ---------------------------------------------------------------------------
    def predict(self, point_coords: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`SamPredictor.predict`: masks ``(C, H, W)``, scores ``(C,)``, low-res
        logits ``(C, h, w)`` for points ``(N, 2)`` / labels ``(N,)`` / a box ``(4,)`` in
        original-image pixels and an optional ``(1, h, w)`` ``mask_input``."""
        self._require_image()
        points = check_points(point_coords, point_labels)
        box_arr = check_box(box)
        mask_arr = check_mask_input(mask_input, self.mask_input_size)
        coords, labels = encode_prompts(*(points or (None, None)), box_arr)
        masks, scores, low = self._run(self.decoder, coords, labels,
                                       None if mask_arr is None else mask_arr[None],
                                       multimask_output)
        return (masks[0] if return_logits else masks[0] > self.mask_threshold), scores[0], low[0]

    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`SamPredictor.predict_torch`: B prompt sets in the resized input frame
        (``transform.apply_coords_torch`` / ``apply_boxes_torch``) in one decoder call.

        Returns:
            masks ``(B, C, H, W)``, scores ``(B, C)``, low-res logits ``(B, C, h, w)``.
        """
        masks, scores, low = self._run_torch(self.decoder, point_coords, point_labels, boxes,
                                             mask_input, multimask_output)
        masks_t = torch.from_numpy(masks)
        if not return_logits:
            masks_t = masks_t > self.mask_threshold
        return masks_t, torch.from_numpy(scores), torch.from_numpy(low)

    def predict_low_res_torch(self, point_coords: torch.Tensor | None,
                              point_labels: torch.Tensor | None,
                              boxes: torch.Tensor | None = None,
                              mask_input: torch.Tensor | None = None,
                              multimask_output: bool = True
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`predict_torch` but stops before upsampling: low-res logits
        ``(B, C, h, w)`` and scores ``(B, C)``; see :meth:`postprocess_masks`."""
        scores, low = self._run_torch(self.low_res_decoder, point_coords, point_labels, boxes,
                                      mask_input, multimask_output)
        return torch.from_numpy(low), torch.from_numpy(scores)

    def postprocess_masks(self, masks: torch.Tensor, input_size: tuple[int, ...],
                          original_size: tuple[int, ...]) -> torch.Tensor:
        """Upscale ``(B, M, h, w)`` low-res logits to ``original_size`` (as
        :meth:`samkit.Sam.postprocess_masks`)."""
        return postprocess_masks(masks, self.img_size, input_size, original_size)

    # -- running the decoder ---------------------------------------------------------------
    def _run_torch(self, session: Any, point_coords: torch.Tensor | None,
                   point_labels: torch.Tensor | None, boxes: torch.Tensor | None,
                   mask_input: torch.Tensor | None, multimask_output: bool) -> list[np.ndarray]:
        self._require_image()
        check_torch_prompts(point_coords, point_labels, boxes, mask_input, self.mask_input_size)
        assert self.original_size is not None and self.input_size is not None
        # The graph takes original-image pixels: map the resized-frame prompts back.
        (h, w), (ih, iw) = self.original_size, self.input_size
        back = np.array([w / iw, h / ih])
        pc = pl = bx = None
        if point_coords is not None and point_labels is not None:
            pc = point_coords.detach().cpu().double().numpy() * back
            pl = point_labels.detach().cpu().numpy()
        if boxes is not None:
            bx = (boxes.detach().cpu().double().numpy().reshape(-1, 2, 2) * back).reshape(-1, 4)
        coords, labels = encode_prompts(pc, pl, bx)
        mi = None if mask_input is None else mask_input.detach().cpu().float().numpy()
        return self._run(session, coords, labels, mi, multimask_output)

    def _run(self, session: Any, coords: np.ndarray, labels: np.ndarray,
             mask_input: np.ndarray | None, multimask_output: bool) -> list[np.ndarray]:
        assert self.features is not None and self.original_size is not None
        b = coords.shape[0]
        if mask_input is not None and coords.shape[1] == 0:  # a mask prompt alone
            b = mask_input.shape[0]
            coords, labels = np.zeros((b, 0, 2), np.float32), np.zeros((b, 0), np.float32)
        if mask_input is not None and mask_input.shape[0] != b:
            if mask_input.shape[0] != 1:
                raise InputError(f"mask_input holds {mask_input.shape[0]} masks for {b} "
                                 "prompt sets")
            mask_input = np.repeat(mask_input, b, axis=0)
        feeds = {
            "image_embeddings": self.features,
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": (np.zeros((b, 1, *self.mask_input_size), np.float32)
                           if mask_input is None else mask_input.astype(np.float32)),
            "has_mask_input": np.full(b, 0.0 if mask_input is None else 1.0, np.float32),
            "orig_im_size": np.array(self.original_size, np.int64),
            "mask_indices": np.array([1, 2, 3] if multimask_output else [0], np.int64),
        }
        return session.run(None, feeds)


def _without_upscaling(path: Path) -> bytes:
    """``decoder.onnx`` cut after its low-res outputs: ``(iou_predictions, low_res_masks)``."""
    onnx = require("onnx", "onnx", "The ONNX Runtime backend")
    from onnx.utils import Extractor

    model = onnx.load(str(path))
    inputs = [i.name for i in model.graph.input]  # orig_im_size still maps the coordinates
    sub = Extractor(model).extract_model(inputs, ["iou_predictions", "low_res_masks"])
    return sub.SerializeToString()
