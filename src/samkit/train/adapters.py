"""Fine-tuning methods: small trainable parts over a frozen SAM, saved as small files.

Four methods (:class:`AdapterConfig` ``method``), each applied to a built model by
:func:`apply_method`, which freezes everything else:

- ``decoder``: the mask decoder and the prompt encoder train; the image encoder is frozen.
- ``lora``: low-rank updates ``W + (alpha / r) B A`` on the image encoder's attention
  projections (``qkv``, ``proj``) and, optionally, the mask decoder's (``q_proj``, ``k_proj``,
  ``v_proj``, ``out_proj``), injected with PEFT (``pip install 'samkit[finetune]'``).
  ``B`` starts at zero, so training starts from the base model's outputs.
- ``adapter``: bottleneck adapters in every image-encoder block, as in Medical-SAM-Adapter:
  one after the attention (``y + up(gelu(down(y)))``) and one beside the MLP
  (``mlp(x) + s * up(gelu(down(x)))``). ``up`` starts at zero.
- ``prompt``: learned prompt tokens appended to every prompt's sparse embedding and a learned
  dense prompt added to its dense embedding; the whole base model is frozen.

The trained tensors, the method's config and the base model's identity (the SHA-256 of its
weights, :func:`samkit.checkpoint.weights_fingerprint`) are saved together by
:func:`save_adapter`; :func:`load_adapter` refuses a model whose weights differ.
:func:`merge_adapter` folds ``lora`` (and ``decoder``, whose tensors already are the model's)
into plain weights that the official classes load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samkit.checkpoint import CheckpointError, weights_fingerprint
from samkit.errors import InputError
from samkit.modeling import Sam, tiny_vit
from samkit.modeling import image_encoder as vit

METHODS = ("decoder", "lora", "adapter", "prompt")
LORA_TARGETS = ("encoder", "decoder")
_META_KEY = "samkit_adapter"
_LORA_PATTERNS = {
    "encoder": r"image_encoder\..*\.attn\.(qkv|proj)",
    "decoder": r"mask_decoder\.transformer\..*\.(q_proj|k_proj|v_proj|out_proj)",
}


class AdapterMismatchError(CheckpointError):
    """An adapter file applied to a model other than the one it was trained on."""


@dataclass(frozen=True)
class AdapterConfig:
    """One fine-tuning method and its settings (saved in the adapter file).

    Attributes:
        method: ``decoder``, ``lora``, ``adapter`` or ``prompt``.
        rank: LoRA rank ``r``.
        alpha: LoRA scale numerator: the update is ``alpha / rank * B A``.
        lora_targets: Where LoRA goes: ``encoder`` (attention ``qkv`` and ``proj`` of every
            image-encoder block) and/or ``decoder`` (the two-way transformer's projections).
        adapter_ratio: Bottleneck width of an adapter as a share of its block's width.
        adapter_scale: Scale ``s`` of the MLP-side adapter.
        prompt_tokens: Learned sparse prompt tokens appended to every prompt.
        dense_prompt: Also learn a dense prompt ``(C, h, w)`` added to the dense embedding.
    """

    method: str = "lora"
    rank: int = 4
    alpha: float = 4.0
    lora_targets: tuple[str, ...] = ("encoder",)
    adapter_ratio: float = 0.25
    adapter_scale: float = 0.5
    prompt_tokens: int = 4
    dense_prompt: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown fine-tuning method {self.method!r}; use one of "
                             f"{', '.join(METHODS)}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if bad or not self.lora_targets:
            raise InputError(f"LoRA targets {list(self.lora_targets)}: use one or both of "
                             f"{', '.join(LORA_TARGETS)}")
        if self.rank < 1 or self.prompt_tokens < 0 or not 0 < self.adapter_ratio <= 4:
            raise InputError("rank must be >= 1, prompt_tokens >= 0 and adapter_ratio in "
                             f"(0, 4]; got {self.rank}, {self.prompt_tokens}, "
                             f"{self.adapter_ratio}")
        if self.method == "prompt" and not self.prompt_tokens and not self.dense_prompt:
            raise InputError("the prompt method needs prompt tokens or a dense prompt")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lora_targets": list(self.lora_targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- the methods' modules ------------------------------------------------------------------
class Bottleneck(nn.Module):
    """``up(gelu(down(x)))`` over the last axis, ``up`` zero-initialised (a no-op at start).

    Used as a forward hook: :meth:`after` adds it to a module's output (the attention-side
    adapter), :meth:`beside` adds ``scale`` times it, applied to the module's input, to the
    output (the MLP-side adapter)."""

    def __init__(self, dim: int, hidden: int, scale: float = 1.0) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        self.scale = scale
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))

    def after(self, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor
              ) -> torch.Tensor:
        return out + self(out)

    def beside(self, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor
               ) -> torch.Tensor:
        return out + self.scale * self(args[0])


class LearnedPrompt(nn.Module):
    """Learned prompt embeddings for a frozen model, applied as a forward hook on the prompt
    encoder: ``tokens`` ``(K, C)`` are appended to every sparse embedding ``(B, N, C)``, and
    ``dense`` ``(C, h, w)`` (zero at start) is added to every dense embedding."""

    def __init__(self, dim: int, grid: tuple[int, int], n_tokens: int, dense: bool) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(n_tokens, dim) * 0.02) if n_tokens else None
        self.dense = nn.Parameter(torch.zeros(dim, *grid)) if dense else None

    def hook(self, module: nn.Module, args: tuple[Any, ...],
             out: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.add_to(*out)

    def add_to(self, sparse: torch.Tensor, dense: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``sparse`` ``(B, N, C)`` -> ``(B, N + K, C)``; ``dense`` ``(B, C, h, w)`` plus the
        learned dense prompt."""
        if self.tokens is not None:
            tokens = self.tokens.to(sparse.dtype).expand(sparse.shape[0], -1, -1)
            sparse = torch.cat([sparse, tokens], dim=1)
        if self.dense is not None:
            dense = dense + self.dense.to(dense.dtype)
        return sparse, dense


def _encoder_blocks(model: Sam) -> list[tuple[nn.Module, int]]:
    """The image encoder's transformer blocks with their widths (ViT and TinyViT)."""
    blocks = []
    for module in model.image_encoder.modules():
        if isinstance(module, vit.Block):
            blocks.append((module, module.norm1.normalized_shape[0]))
        elif isinstance(module, tiny_vit.TinyViTBlock):
            blocks.append((module, module.attn.qkv.in_features))
    if not blocks:
        raise InputError(f"{type(model.image_encoder).__name__} has no ViT or TinyViT blocks "
                         "for adapters; use the decoder, lora or prompt method")
    return blocks


def _peft() -> Any:
    from samkit._extras import require

    return require("peft", "finetune", "LoRA fine-tuning")


def apply_method(model: Sam, cfg: AdapterConfig) -> list[str]:
    """Add the method's modules to ``model`` (in place) and freeze everything else.

    Returns:
        The names of the trainable parameters (``model.named_parameters()`` names).

    Raises:
        InputError: ``model`` already carries a method's modules.
    """
    if any(".lora_" in n or "_adapter." in n or "learned_prompt." in n
           for n, _ in model.named_parameters()):
        raise InputError("this model already has an adapter applied; build the base model "
                         "again to apply another")
    model.requires_grad_(False)
    if cfg.method == "decoder":
        model.mask_decoder.requires_grad_(True)
        model.prompt_encoder.requires_grad_(True)
    elif cfg.method == "lora":
        peft = _peft()
        pattern = "|".join(f"(?:{_LORA_PATTERNS[t]})" for t in cfg.lora_targets)
        peft.inject_adapter_in_model(
            peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=pattern,
                            lora_dropout=0.0, bias="none"), model)
        for name, p in model.named_parameters():
            p.requires_grad_(".lora_" in name)
    elif cfg.method == "adapter":
        for block, dim in _encoder_blocks(model):
            hidden = max(1, round(dim * cfg.adapter_ratio))
            block.attn_adapter = Bottleneck(dim, hidden)
            block.mlp_adapter = Bottleneck(dim, hidden, cfg.adapter_scale)
            block.attn.register_forward_hook(block.attn_adapter.after)
            block.mlp.register_forward_hook(block.mlp_adapter.beside)
    else:
        pe = model.prompt_encoder
        pe.learned_prompt = LearnedPrompt(pe.embed_dim, tuple(pe.image_embedding_size),
                                          cfg.prompt_tokens, cfg.dense_prompt)
        pe.register_forward_hook(pe.learned_prompt.hook)
    device = next(model.image_encoder.parameters()).device
    model.to(device)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def trainable_state(model: Sam) -> dict[str, torch.Tensor]:
    """The trainable tensors by name (what an adapter file holds)."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters()
            if p.requires_grad}


def count_parameters(model: Sam) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


@dataclass(frozen=True)
class AdapterFile:
    """What an adapter file says about itself."""

    config: AdapterConfig
    base_sha256: str
    base_model: str
    tensors: dict[str, torch.Tensor]


def save_adapter(model: Sam, cfg: AdapterConfig, path: str | os.PathLike[str],
                 base_sha256: str, base_model: str = "") -> Path:
    """Write the trainable tensors, ``cfg`` and the base identity to ``path`` (safetensors,
    written atomically)."""
    from safetensors.torch import save_file

    from samkit import __version__

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {_META_KEY: json.dumps(cfg.to_dict()), "base_sha256": base_sha256,
            "base_model": base_model, "samkit_version": __version__, "format": "pt"}
    tmp = p.with_name(p.name + ".tmp")
    save_file(trainable_state(model), str(tmp), metadata=meta)
    tmp.replace(p)
    return p


def read_adapter(path: str | os.PathLike[str]) -> AdapterFile:
    """Read an adapter file written by :func:`save_adapter`, with a clear error otherwise."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"adapter file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p} is not a safetensors adapter file ({exc})") from None
    if _META_KEY not in meta:
        raise CheckpointError(f"{p} is not a samkit adapter file (no {_META_KEY!r} metadata); "
                              "it may be a full checkpoint: pass it as --checkpoint instead")
    cfg = AdapterConfig.from_dict(json.loads(meta[_META_KEY]))
    return AdapterFile(cfg, meta.get("base_sha256", ""), meta.get("base_model", ""), tensors)


def load_adapter(model: Sam, path: str | os.PathLike[str], check_base: bool = True) -> Sam:
    """Apply the adapter file at ``path`` to ``model`` (in place) and return it in eval mode.

    Raises:
        AdapterMismatchError: ``model``'s weights are not the ones the adapter was trained on.
        CheckpointError: The file is not an adapter file or does not fit the model.
    """
    file = read_adapter(path)
    if check_base:
        actual = weights_fingerprint(model)
        if actual != file.base_sha256:
            raise AdapterMismatchError(
                f"{path} was trained on another base model ({file.base_model or 'unnamed'}, "
                f"weights sha256 {file.base_sha256[:12]}); this model's weights are "
                f"{actual[:12]}. Load the base it was trained on (--model / --checkpoint)")
    names = set(apply_method(model, file.config))
    missing, unexpected = sorted(names - set(file.tensors)), sorted(set(file.tensors) - names)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit this model's {file.config.method} "
                              f"modules: missing {missing[:5]}, unexpected {unexpected[:5]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in file.tensors.items():
            if params[name].shape != t.shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(t.shape)}, the model "
                                      f"expects {tuple(params[name].shape)}")
            params[name].copy_(t)
    model.requires_grad_(False)
    return model.eval()


def merge_adapter(model: Sam, cfg: AdapterConfig) -> Sam:
    """Fold the method into plain weights (in place): afterwards the model has its original
    modules and key names, so the official classes load its ``state_dict()``.

    Raises:
        InputError: ``adapter`` and ``prompt`` add modules that plain weights cannot hold.
    """
    if cfg.method in ("adapter", "prompt"):
        raise InputError(f"the {cfg.method} method adds modules that a plain checkpoint "
                         "cannot hold; load it with the base model and --adapter instead")
    if cfg.method == "lora":
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in list(model.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge(safe_merge=True)
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    model.requires_grad_(False)
    return model
