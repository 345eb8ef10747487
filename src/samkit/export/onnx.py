"""ONNX export: the image encoder and the prompt encoder + mask decoder as separate graphs.

Three files per model, each self-describing (``samkit_*`` metadata: version, part, config,
weights fingerprint, input conventions):

``image_encoder.onnx``
    ``image`` ``(H', W', 3)`` uint8 RGB, already resized so that ``max(H', W')`` is the model's
    input size (``ResizeLongestSide``); normalisation and bottom/right padding happen in the
    graph. Out: ``image_embeddings`` ``(1, C, h, w)`` float32.

``decoder.onnx`` (samkit's convention)
    ``image_embeddings`` ``(1, C, h, w)``; ``point_coords`` ``(B, N, 2)`` XY pixels **in the
    original image**; ``point_labels`` ``(B, N)`` float32 (1 foreground, 0 background, 2 / 3 a
    box's top-left / bottom-right corner, -1 padding); ``mask_input`` ``(B, 1, 4h, 4w)``
    low-res logits with ``has_mask_input`` ``(B,)`` 1 / 0; ``orig_im_size`` ``(2,)`` int64
    ``(H, W)``; ``mask_indices`` ``(K,)`` int64, which outputs to return (``[1, 2, 3]``: SAM's
    three ambiguity-aware masks, ``[0]``: the single mask). B prompt sets (e.g. 64 boxes)
    share one image embedding. Out: ``masks`` ``(B, K, H, W)`` logits (threshold at 0),
    ``iou_predictions`` ``(B, K)``, ``low_res_masks`` ``(B, K, 4h, 4w)``.

``decoder_official.onnx`` (the official ``scripts/export_onnx_model.py`` convention)
    ``image_embeddings``; ``point_coords`` ``(1, N, 2)`` in the **resized** frame
    (``transform.apply_coords``); ``point_labels`` ``(1, N)`` as above (a padding point when
    there is no box); ``mask_input`` ``(1, 1, 4h, 4w)``; ``has_mask_input`` ``(1,)``;
    ``orig_im_size`` ``(2,)`` float32. Out: ``masks``, ``iou_predictions``, ``low_res_masks``:
    with ``return_single_mask`` (the default, as in the official notebook) one mask per call,
    chosen as the official export does; else all four outputs.

A prompt set is written the way the official ONNX decoder takes it: its points, then a box as
two corner points labelled 2 and 3, or, without a box, one padding point ``(0, 0)`` labelled
-1. :func:`encode_prompts` does it.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samkit.accel import use_reference
from samkit.checkpoint import weights_fingerprint
from samkit.errors import InputError
from samkit.modeling import Sam

ENCODER_FILE, DECODER_FILE, OFFICIAL_DECODER_FILE = (
    "image_encoder.onnx", "decoder.onnx", "decoder_official.onnx")
DEFAULT_OPSET = 18
# Weights above this size go to an external data file beside the graph (protobuf's 2 GiB cap).
EXTERNAL_DATA_BYTES = 1 << 30


# -- graph wrappers ------------------------------------------------------------------------
def resized_size(orig_im_size: torch.Tensor, long_side: int) -> torch.Tensor:
    """``(2,)`` ``(H, W)`` -> the ``(H', W')`` int64 that ``ResizeLongestSide`` makes, in
    float64 as the numpy transform computes it."""
    hw = orig_im_size.to(torch.float64)
    scale = long_side / hw.max()
    return torch.floor(hw * scale + 0.5).to(torch.int64)


class ImageEncoderOnnx(nn.Module):
    """``(H', W', 3)`` uint8 resized RGB -> ``(1, C, h, w)`` embedding (normalise and pad
    inside)."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
        return self.sam.image_encoder(self.sam.preprocess(x))


class _DecoderBase(nn.Module):
    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam
        self.img_size = sam.image_encoder.img_size

    def _embed(self, image_embeddings: torch.Tensor, coords: torch.Tensor,
               labels: torch.Tensor, mask_input: torch.Tensor, has_mask_input: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        pe = self.sam.prompt_encoder
        sparse = pe.embed_labeled_points(coords, labels)
        has = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + \
            (1 - has) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        learned = getattr(pe, "learned_prompt", None)
        if learned is not None:  # samkit finetune --method prompt
            sparse, dense = learned.add_to(sparse, dense)
        return self.sam.mask_decoder.predict_masks(
            image_embeddings, pe.get_dense_pe(), sparse, dense)

    def _upscale(self, low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """As :meth:`Sam.postprocess_masks`: to the padded input, crop, to the original."""
        s = self.img_size
        masks = F.interpolate(low_res, (s, s), mode="bilinear", align_corners=False)
        hw = resized_size(orig_im_size, s)
        masks = masks[..., : hw[0], : hw[1]]
        size = orig_im_size.to(torch.int64)
        return F.interpolate(masks, (size[0], size[1]), mode="bilinear", align_corners=False)


class DecoderOnnx(_DecoderBase):
    """samkit's decoder graph: original-image coordinates, B prompt sets, chosen outputs."""

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor, mask_input: torch.Tensor,
                has_mask_input: torch.Tensor, orig_im_size: torch.Tensor,
                mask_indices: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hw = resized_size(orig_im_size, self.img_size).to(torch.float64)
        ratio = hw / orig_im_size.to(torch.float64)  # (H'/H, W'/W)
        coords = (point_coords.to(torch.float64) * ratio.flip(0)).to(torch.float32)
        low, iou = self._embed(image_embeddings, coords, point_labels, mask_input,
                               has_mask_input)
        low = low.index_select(1, mask_indices)
        iou = iou.index_select(1, mask_indices)
        return self._upscale(low, orig_im_size), iou, low


class OfficialDecoderOnnx(_DecoderBase):
    """The official export's decoder: resized-frame coordinates, one prompt set, and (with
    ``return_single_mask``) the official choice of one mask by the number of points."""

    def __init__(self, sam: Sam, return_single_mask: bool = True) -> None:
        super().__init__(sam)
        self.return_single_mask = return_single_mask

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor, mask_input: torch.Tensor,
                has_mask_input: torch.Tensor, orig_im_size: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low, iou = self._embed(image_embeddings, point_coords, point_labels, mask_input,
                               has_mask_input)
        if self.return_single_mask:
            # Two points or fewer (a click and its padding, a box's corners) are ambiguous:
            # the best of the multimask outputs; more points: the single-mask output.
            bias = torch.zeros_like(iou[:1])
            bias[:, 0] = 1000.0
            score = iou + (point_coords.shape[1] - 2.5) * bias
            best = score.argmax(dim=1)
            rows = torch.arange(low.shape[0])
            low, iou = low[rows, best].unsqueeze(1), iou[rows, best].unsqueeze(1)
        return self._upscale(low, orig_im_size), iou, low


# -- prompts in the ONNX convention ----------------------------------------------------------
def encode_prompts(point_coords: np.ndarray | None = None,
                   point_labels: np.ndarray | None = None,
                   boxes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points and boxes as the decoder graphs take them.

    Args:
        point_coords: ``(N, 2)`` XY, shared by every prompt set, or ``(B, N, 2)``.
        point_labels: ``(N,)`` or ``(B, N)``: 1 foreground, 0 background.
        boxes: ``(4,)`` or ``(B, 4)`` XYXY, one per prompt set.

    Returns:
        ``coords`` ``(B, N', 2)`` float32 and ``labels`` ``(B, N')`` float32: the points, then
        the box corners (labels 2, 3), or a padding point (label -1) when there is no box;
        ``(1, 0, 2)`` and ``(1, 0)`` when there are neither.
    """
    sets = []
    if point_coords is not None:
        pc = np.asarray(point_coords, np.float64)
        pl = np.asarray(point_labels, np.float64)
        sets.append(pc.reshape(-1, *pc.shape[-2:]) if pc.ndim == 3 else pc[None])
        labels = [pl.reshape(-1, pl.shape[-1]) if pl.ndim == 2 else pl[None]]
    else:
        labels = []
    if boxes is not None:
        bx = np.asarray(boxes, np.float64).reshape(-1, 4)
        sets.append(bx.reshape(-1, 2, 2))
        labels.append(np.tile(np.array([[2.0, 3.0]]), (bx.shape[0], 1)))
    elif sets:  # points without a box end with a padding point (as SamPredictor pads)
        b = sets[0].shape[0]
        sets.append(np.zeros((b, 1, 2)))
        labels.append(-np.ones((b, 1)))
    else:  # no points, no box (a mask prompt alone): no sparse tokens at all
        return np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.float32)
    b = max(s.shape[0] for s in sets)
    coords = np.concatenate([np.broadcast_to(s, (b, *s.shape[1:])) for s in sets], axis=1)
    lab = np.concatenate([np.broadcast_to(lb, (b, lb.shape[1])) for lb in labels], axis=1)
    return coords.astype(np.float32), lab.astype(np.float32)


# -- export --------------------------------------------------------------------------------
@dataclass
class ExportedModel:
    """Paths of the files :func:`export_onnx` wrote."""

    directory: Path
    encoder: Path
    decoder: Path
    official_decoder: Path


def _metadata(sam: Sam, part: str, model_name: str | None, fingerprint: str) -> dict[str, str]:
    from samkit import __version__

    config = sam.config.to_dict() if sam.config is not None else None
    return {
        "samkit_version": __version__,
        "samkit_part": part,
        "samkit_model": model_name or "",
        "samkit_config": json.dumps(config),
        "samkit_weights_sha256": fingerprint,
        "samkit_image_size": str(sam.image_encoder.img_size),
        "samkit_image_format": sam.image_format,
        "samkit_mask_threshold": str(sam.mask_threshold),
    }


def _write(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path,
           input_names: list[str], output_names: list[str], dynamic: dict[str, dict[int, str]],
           opset: int, metadata: dict[str, str]) -> None:
    import onnx

    dynamic_shapes = {n: dynamic.get(n) for n in input_names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=input_names, output_names=output_names,
            dynamic_shapes=dynamic_shapes, opset_version=opset, optimize=True, verbose=False,
            external_data=False,
        )
    model = program.model_proto
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "samkit"
    large = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
    if large:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
        onnx.checker.check_model(str(path))
    else:
        onnx.checker.check_model(model)
        onnx.save_model(model, path)


def export_onnx(sam: Sam, out_dir: str | os.PathLike[str], model_name: str | None = None,
                opset: int = DEFAULT_OPSET, return_single_mask: bool = True) -> ExportedModel:
    """Export ``sam`` to ``out_dir``: ``image_encoder.onnx``, ``decoder.onnx`` and
    ``decoder_official.onnx`` (see the module documentation for their inputs and outputs).

    Args:
        sam: The model (its weights as loaded; the export runs in float32 on the CPU).
        out_dir: Directory to write; created if needed, existing files replaced.
        model_name: Recorded in the files' metadata (e.g. ``"vit_b"`` or a checkpoint name).
        opset: ONNX opset (18 or later).
        return_single_mask: For ``decoder_official.onnx``: one mask per call, as in the
            official notebook (True), or all four outputs.

    Returns:
        The written paths. Every file passes ``onnx.checker``.
    """
    if opset < DEFAULT_OPSET:
        raise InputError(f"opset {opset}: samkit exports with opset {DEFAULT_OPSET} or later")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(p.dtype != torch.float32 for p in sam.parameters()):
        raise InputError("export a float32 model (build it without accel precision switches); "
                         "quantize the exported files with samkit.export.quantize")
    # The plain modules of samkit.modeling (the official computation), whatever speed
    # switches the caller's model has on; a copy, so the caller's model is left as it is.
    sam = use_reference(copy.deepcopy(sam)).cpu().eval()
    fingerprint = weights_fingerprint(sam)
    s = sam.image_encoder.img_size
    pe = sam.prompt_encoder
    c, (h, w) = pe.embed_dim, pe.image_embedding_size
    meta = lambda part: _metadata(sam, part, model_name, fingerprint)  # noqa: E731
    # Dummies: sizes unlike any real call, so nothing shape-specific is baked in.
    image = torch.randint(0, 256, (s, (s * 3) // 4, 3), dtype=torch.uint8)
    _write(ImageEncoderOnnx(sam), (image,), out / ENCODER_FILE, ["image"],
           ["image_embeddings"], {"image": {0: "height", 1: "width"}}, opset,
           meta("image_encoder"))
    emb = torch.randn(1, c, h, w)
    coords = torch.rand(2, 3, 2) * 300
    labels = torch.tensor([[1.0, 0.0, -1.0], [1.0, 2.0, 3.0]])
    mask_in = torch.randn(2, 1, 4 * h, 4 * w)
    has = torch.tensor([1.0, 0.0])
    orig = torch.tensor([300, 400], dtype=torch.int64)
    idx = torch.tensor([1, 2, 3], dtype=torch.int64)
    names = ["image_embeddings", "point_coords", "point_labels", "mask_input",
             "has_mask_input", "orig_im_size"]
    outs = ["masks", "iou_predictions", "low_res_masks"]
    sets = {0: "prompt_sets"}
    _write(DecoderOnnx(sam), (emb, coords, labels, mask_in, has, orig, idx),
           out / DECODER_FILE, [*names, "mask_indices"], outs,
           {"point_coords": {0: "prompt_sets", 1: "num_points"},
            "point_labels": {0: "prompt_sets", 1: "num_points"},
            "mask_input": sets, "has_mask_input": sets, "mask_indices": {0: "outputs"}},
           opset, meta("decoder"))
    _write(OfficialDecoderOnnx(sam, return_single_mask),
           (emb, coords[:1], labels[:1], mask_in[:1], has[:1], orig.float()),
           out / OFFICIAL_DECODER_FILE, names, outs,
           {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
           opset, meta("decoder_official"))
    return ExportedModel(out, out / ENCODER_FILE, out / DECODER_FILE,
                         out / OFFICIAL_DECODER_FILE)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``samkit_*`` metadata of an exported file (without loading its weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
