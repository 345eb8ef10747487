"""Shared test helpers: tiny configs, lively random weights, official reference models."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from samkit.registry import SamConfig, build_sam_from_config
from samkit.testing import lively_state_dict

TINY = SamConfig.vit(
    encoder_embed_dim=32,
    encoder_depth=4,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1, 3),
    image_size=256,
    patch_size=16,
    window_size=5,  # 16x16 grid -> padded to 20x20 windows: exercises padding
    prompt_embed_dim=32,
    mask_in_chans=8,
    decoder_depth=2,
    decoder_num_heads=2,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
)


def build_official(config: SamConfig):
    """The official segment-anything model with the same architecture (reference only)."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    enc = config.encoder
    grid = config.embedding_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=enc.depth,
            embed_dim=enc.embed_dim,
            img_size=config.image_size,
            mlp_ratio=enc.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=enc.num_heads,
            patch_size=enc.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=enc.global_attn_indexes,
            window_size=enc.window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    ).eval()


def model_pair(config: SamConfig = TINY, seed: int = 0):
    """(samkit model, official model) sharing the same random weights."""
    sd = lively_state_dict(config, seed)
    ours = build_sam_from_config(config)
    ours.load_state_dict(sd, strict=True)
    ref = build_official(config)
    ref.load_state_dict(sd, strict=True)
    return ours, ref


def scene(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A uint8 RGB test picture with a few flat shapes over a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.float64)
    img[..., 0] = 40 + 100 * xx / w
    img[..., 1] = 60 + 80 * yy / h
    img[..., 2] = 90
    for _ in range(5):
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        ry, rx = rng.uniform(0.08, 0.25) * h, rng.uniform(0.08, 0.25) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[inside] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def ct_volume(z: int = 6, h: int = 40, w: int = 48) -> np.ndarray:
    """``(Z, H, W)`` Hounsfield units: air around a water body with a bright disc whose
    radius grows slice by slice."""
    yy, xx = np.mgrid[0:h, 0:w]
    vol = np.full((z, h, w), -1000.0, dtype=np.float32)
    for k in range(z):
        body = (yy - h / 2) ** 2 / (h / 2.5) ** 2 + (xx - w / 2) ** 2 / (w / 2.5) ** 2 < 1
        vol[k][body] = 40.0
        vol[k][(yy - h / 2) ** 2 + (xx - w / 2 - 5) ** 2 < (3 + k) ** 2] = 700.0
    return vol


def write_dicom_series(folder: Path, hu: np.ndarray, shuffle: bool = True,
                       uid: str = "1.2.826.0.1.3680043.8.498.1") -> list[Path]:
    """One CT file per slice, stored as uint16 with slope 1 / intercept -1024, positions
    2.5 mm apart along z, written in a shuffled order (the reader must sort them)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(hu)) if shuffle else range(len(hu))
    paths = []
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice_{len(paths):03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = uid
        ds.Modality = "CT"
        ds.InstanceNumber = int(len(hu) - k)  # deliberately not the spatial order
        ds.ImagePositionPatient = [-20.0, -30.0, 2.5 * float(k)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.8, 0.7]
        ds.SliceThickness = 2.5
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (hu[k] + 1024).astype(np.uint16).tobytes()
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths
