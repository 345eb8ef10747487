"""Model variants as data: name -> :class:`SamConfig` -> :func:`build_sam`.

``sam_model_registry`` mirrors the official API: ``sam_model_registry["vit_b"](checkpoint=...)``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samkit.config import SamConfig, TinyViTConfig, ViTConfig
from samkit.errors import InputError
from samkit.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer


@dataclass(frozen=True)
class WeightsInfo:
    """Where a variant's weights come from (kept apart from the architecture)."""

    filename: str
    url: str | None
    size_bytes: int  # 0: not recorded
    license: str = "Apache-2.0"
    bundled: bool = False  # shipped inside the package (samkit/weights/)

    def bundled_path(self) -> Path:
        """Where bundled weights live inside the installed package."""
        return Path(__file__).parent / "weights" / self.filename


_OFFICIAL_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class ModelEntry:
    config: SamConfig
    weights: WeightsInfo | None = None
    description: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    # Automatic-mask-generator settings recommended for these weights (name, value) pairs,
    # over the official defaults; chosen on the validation stream, never the test split.
    amg_defaults: tuple[tuple[str, float], ...] = ()


MODELS: dict[str, ModelEntry] = {
    "vit_h": ModelEntry(
        SamConfig(ViTConfig(1280, 32, 16, (7, 15, 23, 31))),
        WeightsInfo("sam_vit_h_4b8939.pth", _OFFICIAL_BASE + "sam_vit_h_4b8939.pth", 2564550879),
        "SAM ViT-H (official)",
    ),
    "vit_l": ModelEntry(
        SamConfig(ViTConfig(1024, 24, 16, (5, 11, 17, 23))),
        WeightsInfo("sam_vit_l_0b3195.pth", _OFFICIAL_BASE + "sam_vit_l_0b3195.pth", 1249524607),
        "SAM ViT-L (official)",
    ),
    "vit_b": ModelEntry(
        SamConfig(ViTConfig(768, 12, 12, (2, 5, 8, 11))),
        WeightsInfo("sam_vit_b_01ec64.pth", _OFFICIAL_BASE + "sam_vit_b_01ec64.pth", 375042383),
        "SAM ViT-B (official)",
    ),
    "vit_t": ModelEntry(
        SamConfig(TinyViTConfig()),
        WeightsInfo("mobile_sam.pt", "https://github.com/ChaoningZhang/MobileSAM/raw/master/"
                    "weights/mobile_sam.pt", 0, license="Apache-2.0"),
        "MobileSAM TinyViT (official MobileSAM weights)",
    ),
    "nano": ModelEntry(
        SamConfig(
            # a small TinyViT (MobileSAM's encoder family; configs/nano_v2.json)
            TinyViTConfig(embed_dims=(32, 64, 160, 320), depths=(1, 2, 6, 2),
                          num_heads=(0, 2, 5, 10), window_sizes=(0, 8, 16, 32)),
            image_size=512, prompt_embed_dim=128, mask_in_chans=16, decoder_depth=2,
            decoder_num_heads=4, decoder_mlp_dim=512, iou_head_hidden_dim=128,
        ),
        WeightsInfo("nano.safetensors", None, 0, bundled=True),
        "samkit nano v2 (TinyViT, trained on synthetic scenes, bundled)",
        # best F1 at IoU 0.5 on 16 validation scenes (benchmarks/nano_amg_calibration.py):
        # precision 0.88, recall 0.73 (the official 0.88 / 0.95: precision 0.99, recall 0.36)
        amg_defaults=(("pred_iou_thresh", 0.6), ("stability_score_thresh", 0.8)),
    ),
}
DEFAULT_ALIASES = {"default": "vit_h"}


def amg_defaults(name: str) -> dict[str, float]:
    """Recommended :class:`~samkit.SamAutomaticMaskGenerator` settings for a registered
    model's weights (empty: the official defaults suit it)."""
    return dict(MODELS[resolve_name(name)].amg_defaults)


def list_models() -> list[str]:
    """Names accepted by :func:`build_sam` (aliases excluded)."""
    return list(MODELS)


def resolve_name(name: str) -> str:
    """Map an alias such as ``"default"`` to a registered name; raise on unknown names."""
    name = DEFAULT_ALIASES.get(name, name)
    if name not in MODELS:
        known = ", ".join(list(MODELS) + list(DEFAULT_ALIASES))
        raise InputError(f"unknown model type {name!r}; known: {known}")
    return name


@dataclass(frozen=True)
class WeightsChoice:
    """Which weights a command or server uses.

    Attributes:
        name: The registered model name (None when only a checkpoint was given).
        checkpoint: The file to load (the bundled file when ``bundled``).
        bundled: The weights ship inside samkit.
    """

    name: str | None
    checkpoint: Path | None
    bundled: bool


def resolve_weights(model_type: str | None, checkpoint: str | os.PathLike[str] | None
                    ) -> WeightsChoice:
    """The one place that decides which weights to load (CLI, studio, :func:`build_sam`).

    A ``checkpoint`` is used as given. Without one, ``model_type`` (default ``"nano"``) must
    have bundled weights; official models cannot be downloaded here, so they get an error that
    says where to get the file.
    """
    if checkpoint is not None:
        return WeightsChoice(None if model_type is None else resolve_name(model_type),
                             Path(checkpoint), False)
    name = resolve_name(model_type or "nano")
    weights = MODELS[name].weights
    if weights is None or not weights.bundled:
        hint = f" ({weights.filename} from {weights.url})" if weights and weights.url else ""
        raise InputError(
            f"no checkpoint given for {name}{hint}. samkit cannot download weights; get an "
            "official checkpoint (see `samkit models` for names and the download address) and "
            "pass --checkpoint PATH, or use the bundled nano model"
        )
    path = weights.bundled_path()
    if not path.exists():
        raise FileNotFoundError(
            f"the bundled {name} weights are missing from this install ({path}); reinstall "
            "samkit or train them with `samkit train`"
        )
    return WeightsChoice(name, path, True)


def get_config(name: str) -> SamConfig:
    return MODELS[resolve_name(name)].config


def _build_vit(encoder: ViTConfig, config: SamConfig) -> nn.Module:
    return ImageEncoderViT(
        img_size=config.image_size,
        patch_size=encoder.patch_size,
        embed_dim=encoder.embed_dim,
        depth=encoder.depth,
        num_heads=encoder.num_heads,
        mlp_ratio=encoder.mlp_ratio,
        out_chans=config.prompt_embed_dim,
        window_size=encoder.window_size,
        global_attn_indexes=tuple(encoder.global_attn_indexes),
        mlp_dim=encoder.mlp_dim,
    )


def _build_tiny_vit(encoder: TinyViTConfig, config: SamConfig) -> nn.Module:
    from samkit.modeling.tiny_vit import TinyViT

    return TinyViT(
        img_size=config.image_size,
        embed_dims=tuple(encoder.embed_dims),
        depths=tuple(encoder.depths),
        num_heads=tuple(encoder.num_heads),
        window_sizes=tuple(encoder.window_sizes),
        mlp_ratio=encoder.mlp_ratio,
        mbconv_expand_ratio=encoder.mbconv_expand_ratio,
        local_conv_size=encoder.local_conv_size,
        out_chans=config.prompt_embed_dim,
    )


#: Image-encoder builders by config kind (``SamConfig.encoder.kind``).
ENCODER_BUILDERS: dict[str, Callable[[Any, SamConfig], nn.Module]] = {
    "vit": _build_vit, "tiny_vit": _build_tiny_vit}


def build_sam_from_config(config: SamConfig) -> Sam:
    """Build an untrained model (random initialisation) in eval mode, with the exact speed
    paths of :func:`samkit.accel.use_exact_defaults` applied."""
    grid = config.embedding_size
    model = Sam(
        image_encoder=ENCODER_BUILDERS[config.encoder.kind](config.encoder, config),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                num_heads=config.decoder_num_heads,
                mlp_dim=config.decoder_mlp_dim,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=config.pixel_mean,
        pixel_std=config.pixel_std,
    )
    model.config = config
    from samkit.accel import use_exact_defaults

    return use_exact_defaults(model).eval()


_META_BUILD = threading.Lock()


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device (no memory, no random init)
    while buffers, persistent or not, are made as usual: the buffers a checkpoint does not
    hold (``pixel_mean``, anything computed in ``__init__``) come out right for any module,
    and the parameters are then taken from the file with ``load_state_dict(assign=True)``.

    Only modules built by the thread inside the block are affected (a server's other threads
    keep building ordinary modules meanwhile); nested or concurrent uses take turns."""
    register = nn.Module.register_parameter
    owner = threading.get_ident()

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and threading.get_ident() == owner:
            module._parameters[name] = nn.Parameter(param.to("meta"),
                                                    requires_grad=param.requires_grad)

    with _META_BUILD:
        nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
        try:
            yield
        finally:
            nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_sam(
    model_type: str | SamConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    adapter: str | os.PathLike[str] | None = None,
) -> Sam:
    """Build a SAM model, optionally loading weights strictly.

    Args:
        model_type: A registered name (``"vit_h"``, ``"vit_l"``, ``"vit_b"``, ``"default"``), a
            :class:`SamConfig`, or None to infer the architecture from ``checkpoint``.
        checkpoint: ``.pth`` or ``.safetensors`` file in the official key layout. When None,
            models with bundled weights (``"nano"``) load them; others stay random.
        device: Where to put the model.
        adapter: A fine-tuning result (``samkit finetune``'s ``adapter.safetensors``) to
            apply; it must have been trained on exactly these weights (else
            :class:`samkit.train.adapters.AdapterMismatchError`).

    Returns:
        The model in eval mode.
    """
    from samkit.checkpoint import CheckpointError, infer_config, load_state_dict, read_checkpoint

    if model_type is None and checkpoint is None:
        raise InputError("build_sam needs a model_type, a checkpoint, or both")
    if checkpoint is None and isinstance(model_type, str):
        weights = MODELS[resolve_name(model_type)].weights
        if weights is not None and weights.bundled:
            checkpoint = resolve_weights(model_type, None).checkpoint
    state_dict = metadata_config = None
    if checkpoint is not None:
        state_dict, metadata_config = read_checkpoint(checkpoint)
    if isinstance(model_type, SamConfig):
        config, name = model_type, None
    elif model_type is not None:
        name = resolve_name(model_type)
        config = MODELS[name].config
    else:
        assert state_dict is not None
        config, name = metadata_config or infer_config(state_dict, checkpoint), None
    if metadata_config is not None and metadata_config != config:
        raise CheckpointError(
            f"{checkpoint} stores its own model config, which differs from "
            f"{name or 'the config given'}: {metadata_config}. Build it from the file alone "
            "(build_sam(checkpoint=...), or samkit's --checkpoint without --model)"
        )
    if state_dict is None:
        return _with_adapter(build_sam_from_config(config), adapter).to(device)
    # With weights to load, build with the parameters on the meta device (no random init,
    # no memory) and make the file's tensors the parameters: the weights are held once
    # (ViT-H: 2.5 GB, not 5). Buffers are built as usual (see parameters_on_meta).
    with parameters_on_meta():
        model = build_sam_from_config(config)
    load_state_dict(model, state_dict, checkpoint, expected_name=name, assign=True,
                    known={n: e.config for n, e in MODELS.items()})
    left = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors not set by the checkpoint: {left}")
    return _with_adapter(model, adapter).to(device)


def _with_adapter(model: Sam, adapter: str | os.PathLike[str] | None) -> Sam:
    if adapter is None:
        return model
    from samkit.train.adapters import load_adapter

    return load_adapter(model, adapter)


def _registry_builder(name: str) -> Callable[..., Sam]:
    def builder(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
        return build_sam(name, checkpoint=checkpoint)

    builder.__name__ = f"build_sam_{name}"
    builder.__doc__ = f"Build {name} (official API); ``checkpoint`` is loaded strictly."
    return builder


class UnknownModelError(KeyError):
    """A model name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError's own str() would quote the whole message
        return str(self.args[0]) if self.args else ""


class _BuilderRegistry(dict):
    """``name -> builder``; an unknown name raises :class:`UnknownModelError` (a
    ``KeyError``, as a dict would) that names the known models."""

    def __missing__(self, name: object) -> Callable[..., Sam]:
        raise UnknownModelError(
            f"unknown model type {name!r}; known: {', '.join(self)} "
            "(samkit models lists them with their checkpoint files)"
        )


#: Official-style registry: ``sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth")``.
sam_model_registry: dict[str, Callable[..., Sam]] = _BuilderRegistry(
    {alias: _registry_builder(target) for alias, target in DEFAULT_ALIASES.items()}
)
sam_model_registry.update({name: _registry_builder(name) for name in MODELS})
