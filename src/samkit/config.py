"""Model configurations as small frozen dataclasses: a :class:`SamConfig` whose ``encoder``
part is one of several encoder kinds (:data:`ENCODER_CONFIGS`: the ViT of SAM; TinyViT and
others slot in with a config class and a builder in :mod:`samkit.registry`).

This module imports nothing of samkit's loaders or models: the registry and the checkpoint
loader both import it, never each other's config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from samkit.errors import InputError


class EncoderConfig(Protocol):
    """What every encoder config offers (see :class:`ViTConfig`)."""

    kind: ClassVar[str]

    def embedding_size(self, image_size: int) -> int:
        """Side of the square image embedding grid for a ``image_size`` input."""
        ...

    def problems(self, image_size: int) -> list[str]:
        """What is inconsistent in this config (empty when it can be built)."""
        ...


@dataclass(frozen=True)
class ViTConfig:
    """SAM's ViT image encoder (windowed attention with a few global blocks) and its neck.

    Attributes:
        embed_dim: Token width (768 ViT-B, 1024 ViT-L, 1280 ViT-H).
        depth: Transformer blocks.
        num_heads: Attention heads per block.
        global_attn_indexes: Blocks that attend globally; the others use windows.
        patch_size: Patch side in pixels (the embedding's stride).
        window_size: Window side in tokens for the windowed blocks.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        mlp_dim: Explicit MLP hidden width (pruned models such as SlimSAM's); ``None`` means
            ``int(embed_dim * mlp_ratio)``.
    """

    kind: ClassVar[str] = "vit"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    mlp_dim: int | None = None

    def embedding_size(self, image_size: int) -> int:
        return image_size // self.patch_size

    def problems(self, image_size: int) -> list[str]:
        checks = [
            (image_size % self.patch_size == 0, "image_size must be a multiple of patch_size"),
            (self.embed_dim % self.num_heads == 0,
             "encoder_num_heads must divide encoder_embed_dim"),
            (all(0 <= i < self.depth for i in self.global_attn_indexes),
             "encoder_global_attn_indexes must index blocks below encoder_depth"),
            (self.mlp_dim is None or self.mlp_dim > 0, "mlp_dim must be positive"),
        ]
        return [message for ok, message in checks if not ok]


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM's TinyViT encoder: a convolutional first stage, then windowed attention
    stages; output stride 16 (the merging into the last stage keeps the resolution).

    Attributes:
        embed_dims: Width of each stage.
        depths: Blocks per stage (stage 0: MBConv blocks).
        num_heads: Attention heads per stage; stage 0 has no attention, its entry is
            stored as 0 whatever is given (MobileSAM passes a placeholder there).
        window_sizes: Attention window per stage; stage 0's entry likewise 0.
        mlp_ratio: MLP hidden width over the stage width.
        mbconv_expand_ratio: Stage 0's MBConv hidden width over its width.
        local_conv_size: Kernel of the depthwise convolution in attention blocks.
    """

    kind: ClassVar[str] = "tiny_vit"
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3

    def __post_init__(self) -> None:
        for name in ("num_heads", "window_sizes"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, (0, *value[1:]) if value else value)

    def embedding_size(self, image_size: int) -> int:
        return image_size // 16

    def problems(self, image_size: int) -> list[str]:
        n = len(self.embed_dims)
        checks = [
            (n >= 2, "a TinyViT needs at least two stages"),
            (len(self.depths) == len(self.num_heads) == len(self.window_sizes) == n,
             "embed_dims, depths, num_heads and window_sizes need one entry per stage"),
            (image_size % 16 == 0 and (n == 2 or image_size % (4 * 2 ** (n - 2)) == 0),
             "image_size must be a multiple of 16 (and of 4 * 2**(stages - 2))"),
            (all(d % h == 0 for d, h in zip(self.embed_dims[1:], self.num_heads[1:])),
             "num_heads must divide each attention stage's width"),
        ]
        return [message for ok, message in checks if not ok]


#: Encoder kinds by name: the ``kind`` stored with a config picks the class.
ENCODER_CONFIGS: dict[str, type] = {"vit": ViTConfig, "tiny_vit": TinyViTConfig}

# The flat spellings of the ViT fields used by samkit before encoders had a config of their
# own (kept for SamConfig.vit() and for configs stored in older checkpoints).
_VIT_FLAT = {"encoder_embed_dim": "embed_dim", "encoder_depth": "depth",
             "encoder_num_heads": "num_heads",
             "encoder_global_attn_indexes": "global_attn_indexes",
             "patch_size": "patch_size", "window_size": "window_size", "mlp_ratio": "mlp_ratio"}


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


@dataclass(frozen=True)
class SamConfig:
    """Every size of a SAM model: an image encoder of some kind, the prompt encoder and the
    mask decoder. Defaults are the shared parts of the official models.

    Attributes:
        encoder: The image encoder's config (:class:`ViTConfig`, ...).
        image_size: Side of the square model input in pixels (1024 for SAM).
        prompt_embed_dim: Width of the image embedding and of the prompt tokens.
        mask_in_chans: Hidden channels of the mask-prompt downscaling.
        decoder_depth, decoder_num_heads, decoder_mlp_dim: The two-way transformer.
        num_multimask_outputs: Masks for an ambiguous prompt (3).
        iou_head_depth, iou_head_hidden_dim: The IoU-prediction MLP.
        pixel_mean, pixel_std: Normalisation of 0-255 RGB input.
    """

    encoder: Any = field(default_factory=ViTConfig)
    image_size: int = 1024
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, tuple(ENCODER_CONFIGS.values())):
            raise InputError(f"invalid SamConfig: encoder must be one of "
                             f"{sorted(ENCODER_CONFIGS)} configs, got {self.encoder!r}")
        problems = list(self.encoder.problems(self.image_size))
        if self.prompt_embed_dim % 8:
            problems.append("prompt_embed_dim must be a multiple of 8")
        if self.mask_in_chans % 4:
            problems.append("mask_in_chans must be a multiple of 4")
        if problems:
            raise InputError(f"invalid SamConfig: {'; '.join(problems)} ({self})")

    @classmethod
    def vit(cls, **kwargs: Any) -> SamConfig:
        """A config with a ViT encoder from flat keywords: the ViT's fields spelled
        ``encoder_embed_dim``, ``encoder_depth``, ``encoder_num_heads``,
        ``encoder_global_attn_indexes``, ``patch_size``, ``window_size``, ``mlp_ratio``, and
        every other :class:`SamConfig` field as it is."""
        vit = {_VIT_FLAT[k]: kwargs.pop(k) for k in list(kwargs) if k in _VIT_FLAT}
        return cls(encoder=ViTConfig(**_tuples(vit)), **_tuples(kwargs))

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for SAM)."""
        return self.encoder.embedding_size(self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the encoder is nested with its ``kind``."""
        data = dataclasses.asdict(self)
        data["encoder"] = {"kind": self.encoder.kind, **dataclasses.asdict(self.encoder)}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamConfig:
        """Inverse of :meth:`to_dict`; also reads the flat form of older checkpoints."""
        data = dict(data)
        if "encoder" not in data:  # the flat form (a ViT)
            flat = {k: data.pop(k) for k in list(data) if k in _VIT_FLAT}
            data["encoder"] = {"kind": "vit", **{_VIT_FLAT[k]: v for k, v in flat.items()}}
        enc = dict(data.pop("encoder"))
        kind = enc.pop("kind", "vit")
        if kind not in ENCODER_CONFIGS:
            raise InputError(f"unknown encoder kind {kind!r}; known: {sorted(ENCODER_CONFIGS)}")
        enc_cls = ENCODER_CONFIGS[kind]
        for what, names, given in (("encoder", {f.name for f in dataclasses.fields(enc_cls)},
                                    enc),
                                   ("SamConfig", {f.name for f in dataclasses.fields(cls)},
                                    data)):
            unknown = set(given) - names
            if unknown:
                raise InputError(f"unknown {what} fields: {sorted(unknown)}")
        return cls(encoder=enc_cls(**_tuples(enc)), **_tuples(data))


__all__ = ["ENCODER_CONFIGS", "EncoderConfig", "SamConfig", "TinyViTConfig", "ViTConfig"]
