"""Strict, safe checkpoint loading and saving.

Reads official ``.pth`` files (``torch.load(map_location="cpu", weights_only=True)``) and
``.safetensors`` files, detected by content rather than by suffix. Every failure raises
:class:`CheckpointError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samkit.config import SamConfig, TinyViTConfig, ViTConfig
from samkit.errors import InputError

_OFFICIAL_HINT = (
    "Official checkpoints (sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth, sam_vit_b_01ec64.pth) "
    "are published at https://dl.fbaipublicfiles.com/segment_anything/ ; `samkit models` lists "
    "them."
)
_CONFIG_KEY = "samkit_config"


class CheckpointError(InputError):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


def _sniff(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-legacy"
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual wrappers (``{"model": ...}``, ``"state_dict"``)."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), got {type(obj)}")
    return remap_keys(obj)


#: Keys of MobileSAM's TinyViT that SAM never uses (its ImageNet classification head).
_TINY_VIT_UNUSED = re.compile(r"^image_encoder\.(head|norm_head)\.")


def remap_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Filter function for foreign layouts: strips ``module.`` (DataParallel) prefixes and
    drops the classification head that MobileSAM's ``mobile_sam.pt`` carries."""
    out = {re.sub(r"^module\.", "", k): v for k, v in state_dict.items()}
    if "image_encoder.patch_embed.seq.0.c.weight" in out:
        out = {k: v for k, v in out.items() if not _TINY_VIT_UNUSED.match(k)}
    return out


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` in 64-byte aligned memory (a copy only when it is not). safetensors places
    tensors at 8-byte offsets, and CPU GEMM kernels round differently on unaligned inputs:
    weights used where they lie gave scores one ULP away from the same weights copied."""
    return t if t.data_ptr() % 64 == 0 else t.clone()


def read_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], SamConfig | None]:
    """Read a checkpoint file.

    Returns:
        The state dict (official key layout) and the :class:`SamConfig` stored with it by
        samkit, or None when the file carries no config (official checkpoints).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}. {_OFFICIAL_HINT}")
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory; give the checkpoint file itself")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes): the download or copy did not finish")
    kind = _sniff(p)
    if kind == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                state = {k: _aligned(f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(
                f"{p} looks like a safetensors file but cannot be read (truncated or "
                f"corrupt?): {exc}"
            ) from exc
        config = None
        if _CONFIG_KEY in metadata:
            config = SamConfig.from_dict(json.loads(metadata[_CONFIG_KEY]))
        return remap_keys(state), config
    if kind.startswith("torch"):
        try:
            # mmap: tensors are read from the page cache as used, not copied up front
            # (official checkpoints are zip archives; older formats load without it).
            try:
                obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise CheckpointError(
                    f"{p} holds Python objects beyond tensors; samkit only loads weights "
                    f"(weights_only=True) for safety. Re-save it as a plain state dict. ({message})"
                ) from exc
            raise CheckpointError(
                f"{p} cannot be read as a PyTorch checkpoint (truncated or corrupt?): {message}"
            ) from exc
        config = None
        if isinstance(obj, dict) and isinstance(obj.get(_CONFIG_KEY), dict):
            config = SamConfig.from_dict(obj[_CONFIG_KEY])
        return _unwrap(obj, p), config
    raise CheckpointError(
        f"{p} is neither a PyTorch (.pth) nor a safetensors checkpoint (unrecognised file "
        f"header). {_OFFICIAL_HINT}"
    )


def _count(state_dict: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state_dict if (m := rx.match(k))})


def _infer_vit(sd: dict[str, torch.Tensor]) -> tuple[ViTConfig, int]:
    """SAM's ViT from its tensors: the config and the input size."""
    patch = sd["image_encoder.patch_embed.proj.weight"]
    dim, patch_size = patch.shape[0], patch.shape[-1]
    grid = sd["image_encoder.pos_embed"].shape[1]
    depth = _count(sd, r"image_encoder\.blocks\.(\d+)\.")
    head_dim = sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
    global_idx = tuple(
        i for i in range(depth)
        if sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] == 2 * grid - 1
    )
    local = [i for i in range(depth) if i not in global_idx]
    window = (sd[f"image_encoder.blocks.{local[0]}.attn.rel_pos_h"].shape[0] + 1) // 2 \
        if local else 14
    mlp = sd["image_encoder.blocks.0.mlp.lin1.weight"].shape[0]
    encoder = ViTConfig(
        embed_dim=dim, depth=depth, num_heads=dim // head_dim, global_attn_indexes=global_idx,
        patch_size=patch_size, window_size=window,
        # SAM's 4x, else an explicit width (pruned models such as SlimSAM's)
        mlp_dim=None if mlp == 4 * dim else mlp,
    )
    return encoder, grid * patch_size


def _infer_tiny_vit(sd: dict[str, torch.Tensor]) -> tuple[TinyViTConfig, int]:
    """MobileSAM's TinyViT from its tensors. The input size is not in the weights (no
    position table): MobileSAM's 1024 is assumed; samkit checkpoints store their config."""
    n = _count(sd, r"image_encoder\.layers\.(\d+)\.")
    dims = [sd["image_encoder.patch_embed.seq.2.c.weight"].shape[0]]
    heads, windows = [0], [0]  # stage 0 is convolutional
    for i in range(1, n):
        biases = sd[f"image_encoder.layers.{i}.blocks.0.attn.attention_biases"]
        dims.append(sd[f"image_encoder.layers.{i}.blocks.0.attn.proj.weight"].shape[0])
        heads.append(biases.shape[0])
        windows.append(round(biases.shape[1] ** 0.5))
    depths = [_count(sd, rf"image_encoder\.layers\.{i}\.blocks\.(\d+)\.") for i in range(n)]
    encoder = TinyViTConfig(
        embed_dims=tuple(dims), depths=tuple(depths), num_heads=tuple(heads),
        window_sizes=tuple(windows),
        mlp_ratio=sd["image_encoder.layers.1.blocks.0.mlp.fc1.weight"].shape[0] / dims[1],
        mbconv_expand_ratio=sd["image_encoder.layers.0.blocks.0.conv1.c.weight"].shape[0]
        / dims[0],
        local_conv_size=sd["image_encoder.layers.1.blocks.0.local_conv.c.weight"].shape[-1],
    )
    return encoder, 1024


#: Image-encoder key layouts: (kind, test on the state dict, inference of config and input
#: size). The first whose test passes describes the file.
ENCODER_LAYOUTS: list[tuple[str, Any, Any]] = [
    ("vit", lambda sd: "image_encoder.patch_embed.proj.weight" in sd
     and "image_encoder.blocks.0.attn.rel_pos_h" in sd, _infer_vit),
    ("tiny_vit", lambda sd: "image_encoder.patch_embed.seq.0.c.weight" in sd, _infer_tiny_vit),
]


def infer_config(
    state_dict: dict[str, torch.Tensor], path: str | os.PathLike[str] | None = None
) -> SamConfig:
    """Recover the architecture from tensor shapes: the encoder by its key layout
    (:data:`ENCODER_LAYOUTS`), then the shared prompt encoder and mask decoder (the decoder
    head count cannot be seen in shapes and is taken as SAM's 8)."""
    sd = state_dict
    where = f"{path}: " if path is not None else ""
    layout = next((entry for entry in ENCODER_LAYOUTS if entry[1](sd)), None)
    if layout is None:
        raise CheckpointError(
            f"{where}does not look like a SAM checkpoint: its image encoder matches no known "
            f"layout ({', '.join(kind for kind, _, _ in ENCODER_LAYOUTS)}). Pass the model "
            "type explicitly, or check the file."
        )
    try:
        encoder, image_size = layout[2](sd)
        return SamConfig(
            encoder=encoder,
            image_size=image_size,
            prompt_embed_dim=sd["image_encoder.neck.0.weight"].shape[0],
            mask_in_chans=sd["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            decoder_depth=_count(sd, r"mask_decoder\.transformer\.layers\.(\d+)\."),
            decoder_mlp_dim=sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            num_multimask_outputs=sd["mask_decoder.mask_tokens.weight"].shape[0] - 1,
            iou_head_depth=_count(sd, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
            iou_head_hidden_dim=sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(
            f"{where}does not look like a SAM checkpoint (cannot infer the architecture; "
            f"missing or odd entry {exc}). Pass the model type explicitly, or check the file."
        ) from exc


def name_for_config(config: SamConfig, known: Mapping[str, SamConfig]) -> str | None:
    """The name in ``known`` whose config has the same encoder and sizes as ``config``
    (decoder heads, which shapes do not show, ignored)."""
    for name, ref in known.items():
        if (ref.encoder, ref.image_size, ref.prompt_embed_dim) == (
                config.encoder, config.image_size, config.prompt_embed_dim):
            return name
    return None


def _describe(sd: dict[str, torch.Tensor], known: Mapping[str, SamConfig] | None) -> str:
    try:
        cfg = infer_config(sd)
    except CheckpointError:
        return ""
    name = name_for_config(cfg, known or {})
    enc = cfg.encoder
    shape = f"{enc.kind} encoder width {getattr(enc, 'embed_dim', '?')}, " \
            f"{getattr(enc, 'depth', '?')} blocks, input {cfg.image_size}px"
    if name:
        return f" This looks like a {name} checkpoint ({shape}): build it with model type {name!r}."
    return f" The file holds a SAM-layout model with {shape}."


def _first(items: list[str], n: int = 5) -> str:
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_state_dict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike[str] | None = None,
    expected_name: str | None = None,
    assign: bool = False,
    known: Mapping[str, SamConfig] | None = None,
) -> None:
    """Load ``state_dict`` into ``model`` strictly, explaining any mismatch.

    ``known``: registered configs by name, to say which model a mismatched file looks like.

    ``assign=True`` makes the file's tensors the model's parameters instead of copying them
    (for a model built on the meta device: the weights are then held once, not twice).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{k} (file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        src = f"{path}" if path is not None else "state dict"
        target = f" for {expected_name}" if expected_name else ""
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {_first(mismatched, 3)}")
        hint = _describe(state_dict, known)
        if missing and not unexpected and not mismatched and not hint:
            hint = " The file looks partial (an interrupted download or a filtered state dict)."
        raise CheckpointError(
            f"{src} does not fit the model{target}: " + "; ".join(parts) + "." + hint
        )
    if assign:
        dtypes = {k: v.dtype for k, v in own.items()}
        state_dict = {k: v.to(dtypes[k]) for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=assign)


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], config: SamConfig | None = None
) -> Path:
    """Save weights to ``.safetensors`` (official key names) with the config in its metadata."""
    from safetensors.torch import save_file

    p = Path(path)
    config = config or getattr(model, "config", None)
    metadata = {"format": "pt"}
    if config is not None:
        metadata[_CONFIG_KEY] = json.dumps(config.to_dict())
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(p), metadata=metadata)
    return p


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over a model's tensors (names, shapes, bytes): its weights' identity, as
    recorded in exported files and adapter files."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
