"""One visible training loop for SAM models on synthetic scenes (CPU by default, GPU if any).

Each step: draw ``images_per_step`` training scenes (long side = the model's input size),
encode them once, then simulate interaction for ``targets_per_image`` instances per image:
a point or a jittered box, then ``click_rounds`` corrective clicks with the previous low-res
logits fed back as ``mask_input``. Loss: focal + dice on masks (best of the three outputs for
single-point prompts) + MSE on predicted IoU, summed over rounds. AdamW with linear warm-up and
cosine decay, gradient clipping, periodic held-out evaluation, resumable checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samkit.config import SamConfig
from samkit.data.synthetic import make_scene
from samkit.errors import InputError
from samkit.modeling import Sam
from samkit.modeling.transformer import Attention
from samkit.registry import build_sam_from_config, get_config
from samkit.train.losses import mask_iou, sam_loss
from samkit.train.prompts import (
    corrective_clicks,
    jitter_boxes,
    mask_boxes,
    sample_points_in_masks,
)


@dataclass
class TrainConfig:
    """Everything a run depends on; saved with every checkpoint."""

    model: str = "nano"
    steps: int = 1500
    images_per_step: int = 4
    targets_per_image: int = 8
    click_rounds: int = 1
    box_fraction: float = 0.5
    easy_fraction: float = 0.25  # curriculum: this share of the steps sees easy scenes
    focal_weight: float = 1.0  # SAM used 20:1; from scratch on CPU budgets, 1:1 escapes the
    dice_weight: float = 1.0  # "predict nothing" plateau far sooner
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    eval_every: int = 150
    eval_scenes: int = 16
    checkpoint_every: int = 50
    seed: int = 0
    bf16: bool = False
    time_limit_s: float | None = None
    # "steps": warm-up then cosine over ``steps``; "time": the cosine runs over
    # ``time_limit_s`` of wall time (for time-boxed runs: a GPU lease, a session)
    schedule: str = "steps"
    checkpoint_every_s: float | None = None  # also checkpoint after this much wall time
    first_scene: int = 0  # step s draws training scenes first_scene + s * images_per_step ...
    # Train the prompt encoder and mask decoder only: the image encoder runs without
    # gradients in eval mode (batch norms keep their statistics) and has no backward pass
    freeze_encoder: bool = False
    # "low": masks are scored against the target pooled to the decoder's low-res grid
    # (S/4); "full": the low-res logits are upsampled (bilinear, as the predictor does) and
    # scored against the full-resolution target, which is what small objects need
    loss_resolution: str = "low"
    # "normalized": each scene is normalised, then zero padded, as the predictor and
    # ``samkit eval`` do; "raw": the padded uint8 canvas is normalised as a whole, so the
    # padding looks black (how nano v2's stages 1-3 were trained)
    pad: str = "normalized"

    def __post_init__(self) -> None:
        if self.schedule not in ("steps", "time"):
            raise InputError(f"schedule must be 'steps' or 'time', not {self.schedule!r}")
        if self.schedule == "time" and not self.time_limit_s:
            raise InputError("schedule='time' needs a time limit (--time-limit)")
        if self.pad not in ("normalized", "raw"):
            raise InputError(f"pad must be 'normalized' or 'raw', not {self.pad!r}")
        if self.loss_resolution not in ("low", "full"):
            raise InputError(f"loss_resolution must be 'low' or 'full', not "
                             f"{self.loss_resolution!r}")

    def same_run(self, other: TrainConfig) -> bool:
        """Whether ``other`` continues this run: only the length, the time limit and how often
        to checkpoint may change on resume."""
        keep = {"steps": self.steps, "time_limit_s": self.time_limit_s,
                "checkpoint_every_s": self.checkpoint_every_s}
        return dataclasses.replace(other, **keep) == self


def lr_at(step: int, cfg: TrainConfig, elapsed_s: float | None = None) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` over the steps
    (or, with ``schedule="time"``, over ``time_limit_s`` given the run's ``elapsed_s``)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "time" and cfg.time_limit_s:
        progress = min(1.0, (elapsed_s or 0.0) / cfg.time_limit_s)
    else:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def init_weights(model: Sam, seed: int) -> None:
    """Initialisation for training from scratch: ViT-style for the image encoder's linear
    layers (a ViT's absolute positions get small noise, not zeros; a TinyViT's convolutions
    and batch norms keep PyTorch's defaults); the prompt encoder and mask decoder keep
    PyTorch's default initialisation, whose larger attention weights let prompts steer masks
    from the start."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pe = getattr(model.image_encoder, "pos_embed", None)
        if pe is not None:
            pe.copy_(torch.randn(pe.shape, generator=gen) * 0.02)
        for m in model.image_encoder.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, generator=gen)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Cross-attention starts as a positional kernel: with W_q = W_k = s * (orthonormal
        # rows), q . k ~ s^2 x_q . x_k, and the Fourier encodings of a pixel and a prompt
        # are most alike where they coincide, so each prompt token first attends near itself.
        for name, m in model.mask_decoder.transformer.named_modules():
            if isinstance(m, Attention) and ("cross" in name or name.startswith("final_attn")):
                w = torch.empty_like(m.q_proj.weight)
                nn.init.orthogonal_(w, gain=2.0, generator=gen)
                m.q_proj.weight.copy_(w)
                m.k_proj.weight.copy_(w)
                nn.init.zeros_(m.q_proj.bias)
                nn.init.zeros_(m.k_proj.bias)


# -- data ----------------------------------------------------------------------------------
@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, S, S) uint8, zero padded bottom/right
    targets: list[torch.Tensor]  # per image (K, S, S) bool instance masks
    sizes: torch.Tensor  # (B, 2) the unpadded (h, w) of each image


def scene_batch(split: str, start: int, n: int, size: int, k: int,
                rng: np.random.Generator, easy: bool = False) -> Batch:
    """``n`` scenes with long side ``size``, each with up to ``k`` random instances.

    ``easy`` scenes (the curriculum's start) hold 1-5 large objects.
    """
    scene_kwargs: dict = {"max_objects": 5, "min_objects": 1, "radius_range": (0.12, 0.45)} \
        if easy else {}
    images, targets, sizes = [], [], []
    for i in range(start, start + n):
        long_side_h = (i + rng.integers(2)) % 2 == 0
        other = int(np.random.default_rng([7, i]).integers(int(size * 0.625), size + 1))
        hw = (size, other) if long_side_h else (other, size)
        scene = make_scene(split, i, size=hw, **scene_kwargs)
        img = torch.zeros(3, size, size, dtype=torch.uint8, device="cpu")  # data: on the CPU
        img[:, : hw[0], : hw[1]] = torch.from_numpy(scene.image).permute(2, 0, 1)
        masks = [inst.mask for inst in scene.instances]
        if not masks:
            continue
        pick = rng.permutation(len(masks))[:k]
        t = torch.zeros(len(pick), size, size, dtype=torch.bool, device="cpu")
        for j, idx in enumerate(pick):
            t[j, : hw[0], : hw[1]] = torch.from_numpy(masks[idx])
        images.append(img)
        targets.append(t)
        sizes.append(hw)
    return Batch(torch.stack(images), targets,
                 torch.tensor(sizes, dtype=torch.long, device="cpu").reshape(-1, 2))


class SceneSteps(torch.utils.data.Dataset):
    """Map-style dataset over training steps: item ``step`` is that step's scenes, so worker
    processes can draw them ahead of the model and a resumed run sees the same data.

    Each item holds ``images`` ``(B, 3, S, S)`` uint8, ``masks`` ``(N, S, S // 8)`` uint8 (the
    instance masks of all images, bits packed along x by :func:`numpy.packbits`; unpack with
    :func:`unpack_masks`), ``counts`` ``(B,)`` (instances per image) and ``sizes`` ``(B, 2)``
    (each image's unpadded ``(h, w)``).
    """

    def __init__(self, cfg: TrainConfig, size: int) -> None:
        if size % 8:
            raise InputError(f"image size {size} must be a multiple of 8")
        self.cfg, self.size = cfg, size

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        easy = step < cfg.easy_fraction * cfg.steps
        batch = scene_batch("train", cfg.first_scene + step * cfg.images_per_step,
                            cfg.images_per_step, self.size, cfg.targets_per_image, rng, easy=easy)
        masks = np.packbits(torch.cat(batch.targets).numpy(), axis=-1)
        return {"images": batch.images, "masks": torch.from_numpy(masks),
                "counts": torch.tensor([t.shape[0] for t in batch.targets]),
                "sizes": batch.sizes}


def unpack_masks(packed: torch.Tensor) -> torch.Tensor:
    """``(..., W // 8)`` uint8 (bits packed big-endian along x) -> ``(..., W)`` bool, on the
    tensor's device."""
    bits = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    return ((packed[..., None] >> bits) & 1).flatten(-2).bool()


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # one core per worker: the workers are the parallelism
    torch.set_num_threads(1)


def step_loader(cfg: TrainConfig, size: int, first_step: int, workers: int
                ) -> torch.utils.data.DataLoader:
    """Batches for steps ``first_step .. cfg.steps - 1``, drawn by ``workers`` processes (0:
    in this process). Workers start from a fork server, not by forking this process: a fork
    of a process with running threads (OpenMP, a server's, a test runner's) can deadlock."""
    return torch.utils.data.DataLoader(
        SceneSteps(cfg, size), batch_size=None, sampler=range(first_step, cfg.steps),
        num_workers=workers, pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None, worker_init_fn=_worker_init if workers else None,
        multiprocessing_context="forkserver" if workers else None,
    )


# -- one step ------------------------------------------------------------------------------
def _decode(model: Sam, feats: torch.Tensor, coords: torch.Tensor | None,
            labels: torch.Tensor | None, boxes: torch.Tensor | None,
            mask_input: torch.Tensor | None, multimask: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    points = None if coords is None else (coords, labels)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    return model.mask_decoder(
        image_embeddings=feats, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def interactive_loss(model: Sam, feats: torch.Tensor, gt: torch.Tensor, use_box: torch.Tensor,
                     rounds: int, size: int, gen: torch.Generator,
                     weights: tuple[float, float] = (20.0, 1.0), full_res: bool = False,
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one simulated interaction for ``N`` targets.

    Args:
        feats: ``(N, C, h, w)`` image embedding per target.
        gt: ``(N, S, S)`` bool target masks in the padded input frame.
        use_box: ``(N,)`` bool, start from a box (else from one point).
        rounds: Corrective clicks after the first prompt.
        weights: Focal and dice loss weights.
        full_res: Score masks at ``S x S`` (logits upsampled bilinearly) instead of against
            the target pooled to the low-res grid.
    """
    dev = gt.device
    low = model.prompt_encoder.mask_input_size
    factor = size // low[0]
    soft = F.avg_pool2d(gt[:, None].float(), factor)[:, 0]  # (N, h4, w4) in [0, 1]
    gt_low = soft > 0.5
    use_box = use_box.to(dev)
    total = torch.zeros((), device=dev)
    stats: dict[str, float] = {}
    coords = sample_points_in_masks(gt, gen)[:, None, :]
    labels = torch.ones(gt.shape[0], 1, dtype=torch.long, device=dev)
    labels[use_box, 0] = -1  # box-first targets get no initial click (a padding point)
    boxes = jitter_boxes(mask_boxes(gt), (size, size), generator=gen)
    mask_input = None
    for r in range(rounds + 1):
        logits = torch.empty(gt.shape[0], 1, *low, device=dev)
        chosen_iou = torch.empty(gt.shape[0], device=dev)
        loss_r = torch.zeros((), device=dev)
        for box_group in (False, True):
            sel = use_box == box_group
            if not sel.any():
                continue
            multimask = r == 0 and not box_group
            pc = None if (box_group and r == 0) else coords[sel]
            pl = None if pc is None else labels[sel]
            out, iou = _decode(model, feats[sel], pc, pl, boxes[sel] if box_group else None,
                               None if mask_input is None else mask_input[sel], multimask)
            if full_res:
                up = F.interpolate(out.float(), (size, size), mode="bilinear",
                                   align_corners=False)
                loss, best, actual = sam_loss(up, iou.float(), gt[sel].float(), *weights)
            else:
                loss, best, actual = sam_loss(out.float(), iou.float(), soft[sel], *weights)
            loss_r = loss_r + loss * sel.float().mean()
            ar = torch.arange(out.shape[0], device=dev)
            logits[sel] = out[ar, best][:, None].detach().float()
            chosen_iou[sel] = actual
        total = total + loss_r
        stats[f"iou_r{r}"] = float(chosen_iou.mean())
        if r == rounds:
            break
        mask_input = logits
        xy, lab = corrective_clicks(logits[:, 0] > 0, gt_low, gen)
        xy = xy * factor + factor / 2
        coords = torch.cat([coords, xy[:, None]], dim=1)
        labels = torch.cat([labels, lab[:, None]], dim=1)
    return total / (rounds + 1), stats


# -- one optimizer step ---------------------------------------------------------------------
class StepSettings(Protocol):
    """The prompt-simulation and loss settings a training step reads (``TrainConfig`` and
    ``FinetuneConfig`` both have them)."""

    box_fraction: float
    click_rounds: int
    focal_weight: float
    dice_weight: float
    loss_resolution: str
    bf16: bool
    grad_clip: float


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases, norms and positional
    parameters."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "pos" not in n]
    no_decay = [p for n, p in params if p.ndim < 2 or "pos" in n]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999),
    )


def train_step(model: Sam, opt: torch.optim.Optimizer, images: torch.Tensor, gt: torch.Tensor,
               counts: torch.Tensor, cfg: StepSettings, gen: torch.Generator,
               encoder_grad: bool = True, sizes: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict[str, float], float]:
    """One optimizer step of simulated interaction.

    Args:
        images: ``(B, 3, S, S)`` uint8 images, zero padded bottom/right.
        gt: ``(N, S, S)`` bool target masks, the targets of image 0 first, then image 1's...
        counts: ``(B,)`` targets per image (sums to ``N``; images may differ).
        cfg: Prompt simulation and loss settings.
        gen: Generator for the prompts (boxes vs points, clicks, jitter).
        encoder_grad: Whether the image encoder's forward records gradients (False for a
            frozen encoder: no activations kept, no backward through it).
        sizes: ``(B, 2)`` unpadded ``(h, w)`` of each image: each is then normalised and
            padded as the predictor does (the padding is zero after normalisation). None:
            the padded images are normalised whole (``TrainConfig.pad="raw"``).

    Returns:
        The loss, per-round IoU statistics and the gradient norm before clipping.
    """
    dev = gt.device
    size = images.shape[-1]
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        with torch.set_grad_enabled(encoder_grad):
            x = images.to(dev, non_blocking=True).float()
            if sizes is None:
                x = model.preprocess(x)
            else:
                x = torch.cat([model.preprocess(x[i : i + 1, :, :h, :w])
                               for i, (h, w) in enumerate(sizes.tolist())])
            feats = model.image_encoder(x)
        f = torch.repeat_interleave(feats, counts.to(dev), dim=0)
        use_box = torch.rand(gt.shape[0], generator=gen, device=gen.device) < cfg.box_fraction
        loss, stats = interactive_loss(model, f, gt, use_box, cfg.click_rounds, size, gen,
                                       (cfg.focal_weight, cfg.dice_weight),
                                       full_res=cfg.loss_resolution == "full")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
    opt.step()
    return loss, stats, grad_norm


# -- evaluation ----------------------------------------------------------------------------
@torch.no_grad()
def prompt_miou(model: Sam, samples: Iterable[tuple[torch.Tensor, torch.Tensor]], size: int
                ) -> dict[str, float]:
    """Held-out mIoU for one interior point (top predicted IoU) and for the tight box.

    Args:
        samples: ``(image (1, 3, S, S) uint8, targets (K, S, S) bool)`` pairs in the padded
            input frame (``S = size``).

    Returns:
        ``{"val_miou_point": ..., "val_miou_box": ...}`` (NaN without targets).
    """
    from samkit.eval.prompts import interior_point

    was_training = model.training
    model.eval()
    dev = model.device
    ious_point, ious_box = [], []
    for image, gt in samples:
        if not len(gt):
            continue
        feats = model.image_encoder(model.preprocess(image.to(dev).float()))
        gt = gt.to(dev)
        n = gt.shape[0]
        f = feats.expand(n, -1, -1, -1)
        pts = torch.tensor(np.stack([interior_point(m.cpu().numpy()) for m in gt]),
                           dtype=torch.float, device=dev)
        out, iou = _decode(model, f, pts[:, None],
                           torch.ones(n, 1, dtype=torch.long, device=dev), None, None, True)
        best = out[torch.arange(n, device=dev), iou.argmax(1)]
        up = F.interpolate(best[:, None], (size, size), mode="bilinear")[:, 0] > 0
        ious_point += mask_iou(up, gt).tolist()
        out, _ = _decode(model, f, None, None, mask_boxes(gt), None, False)
        up = F.interpolate(out, (size, size), mode="bilinear")[:, 0] > 0
        ious_box += mask_iou(up, gt).tolist()
    model.train(was_training)
    nan = float("nan")
    return {"val_miou_point": float(np.mean(ious_point)) if ious_point else nan,
            "val_miou_box": float(np.mean(ious_box)) if ious_box else nan}


def quick_eval(model: Sam, n_scenes: int, size: int, max_targets: int = 8,
               pad: str = "normalized") -> dict[str, float]:
    """:func:`prompt_miou` on the first ``n_scenes`` synthetic validation scenes, padded as
    ``pad`` says (see :class:`TrainConfig`)."""
    rng = np.random.default_rng(0)

    def samples() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(n_scenes):
            batch = scene_batch("val", i, 1, size, max_targets, rng)
            if batch.targets:
                h, w = batch.sizes[0].tolist() if pad == "normalized" else (size, size)
                yield batch.images[:, :, :h, :w], batch.targets[0]

    metrics = prompt_miou(model, samples(), size)
    model.train()
    return metrics


# -- the loop ------------------------------------------------------------------------------
def _train_mode(model: Sam, cfg: TrainConfig) -> None:
    model.train()
    if cfg.freeze_encoder:
        model.image_encoder.eval()  # frozen: batch norms keep their running statistics


def train(cfg: TrainConfig, out_dir: str | os.PathLike[str], resume: bool = True,
          device: str | None = None, progress: bool = True,
          model_config: SamConfig | None = None, stop_after: int | None = None,
          init_from: str | os.PathLike[str] | None = None, workers: int = 0
          ) -> dict[str, Any]:
    """Train (or resume) and write ``last.pt``, ``<model>.safetensors`` and ``log.jsonl``.

    Args:
        cfg: The run's settings (saved with every checkpoint).
        out_dir: Run directory; an existing ``last.pt`` there is resumed unless ``resume``
            is False.
        device: Torch device (default: CUDA when available).
        progress: Show a progress bar with loss and held-out mIoU.
        model_config: Architecture to train instead of the registered ``cfg.model``.
        stop_after: Stop (as if interrupted) once this step is reached; a later call resumes.
        init_from: Start from these weights (e.g. the bundled nano) instead of scratch;
            ignored when resuming.
        workers: Processes that draw scenes ahead of the model (0: the training process).
            The data of a step does not depend on it.
    """
    from tqdm import tqdm

    from samkit.checkpoint import save_checkpoint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model_cfg: SamConfig = model_config or get_config(cfg.model)
    torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed
    model = build_sam_from_config(model_cfg)
    init_weights(model, cfg.seed)
    if init_from is not None:
        from samkit.checkpoint import load_state_dict, read_checkpoint

        load_state_dict(model, read_checkpoint(init_from)[0], init_from)
    if cfg.freeze_encoder:
        model.image_encoder.requires_grad_(False)
    model.to(dev)
    _train_mode(model, cfg)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    step, elapsed = 0, 0.0
    ckpt_path = out / "last.pt"
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=True)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        saved = TrainConfig(**{k: v for k, v in state["train_config"].items() if k in known})
        if not cfg.same_run(saved):
            raise InputError(f"{ckpt_path} was written with another TrainConfig: {saved}; "
                             "use another --out or --restart")
        if SamConfig.from_dict(state["config"]) != model_cfg:
            raise InputError(f"{ckpt_path} holds another architecture; use another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
    size = model_cfg.image_size
    log = (out / "log.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train")
    metrics: dict[str, float] = {}
    t_start = time.time() - elapsed

    def save() -> None:
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "elapsed_s": time.time() - t_start, "config": model_cfg.to_dict(),
                 "train_config": dataclasses.asdict(cfg)}
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(ckpt_path)  # atomic: an interrupted save never corrupts last.pt
        weights_tmp = save_checkpoint(model, out / f"{cfg.model}.safetensors.tmp", model_cfg)
        weights_tmp.replace(out / f"{cfg.model}.safetensors")  # usable even if cut short

    last_save = time.time()
    batches = iter(step_loader(cfg, size, step, workers))
    while step < cfg.steps:
        if cfg.time_limit_s is not None and time.time() - t_start > cfg.time_limit_s:
            break
        if stop_after is not None and step >= stop_after:
            break
        lr = lr_at(step, cfg, time.time() - t_start)
        for group in opt.param_groups:
            group["lr"] = lr
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # prompts: f(step)
        t_wait = time.perf_counter()
        data = next(batches)
        data_wait = time.perf_counter() - t_wait  # > 0: the model waits for scenes
        gt = unpack_masks(data["masks"].to(dev, non_blocking=True))
        loss, stats, grad_norm = train_step(
            model, opt, data["images"], gt, data["counts"], cfg, gen,
            encoder_grad=not cfg.freeze_encoder,
            sizes=data["sizes"] if cfg.pad == "normalized" else None)
        step += 1
        record = {"step": step, "loss": float(loss.detach()), "lr": lr,
                  "grad_norm": grad_norm, "time_s": round(time.time() - t_start, 1),
                  "pairs": int(gt.shape[0]), "data_wait_s": round(data_wait, 4), **stats}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = quick_eval(model, cfg.eval_scenes, size, pad=cfg.pad)
            _train_mode(model, cfg)
            record.update(metrics)
        log.write(json.dumps(record) + "\n")
        log.flush()
        bar.set_postfix(loss=f"{record['loss']:.3f}", iou=f"{stats['iou_r0']:.2f}",
                        **{k[4:]: f"{v:.3f}" for k, v in metrics.items()})
        bar.update(1)
        timed = cfg.checkpoint_every_s is not None and \
            time.time() - last_save >= cfg.checkpoint_every_s
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or timed:
            save()
            last_save = time.time()
    bar.close()
    del batches  # stops the workers
    if step and step % cfg.eval_every and step != cfg.steps:  # stopped between evals
        metrics = quick_eval(model, cfg.eval_scenes, size, pad=cfg.pad)
        log.write(json.dumps({"step": step, "eval_only": True,
                              "time_s": round(time.time() - t_start, 1), **metrics}) + "\n")
        log.flush()
    save()
    model.eval()
    weights = out / f"{cfg.model}.safetensors"
    summary = {
        "steps": step, "wall_time_s": round(time.time() - t_start, 1),
        "hardware": f"{platform.processor() or platform.machine()}, "
                    f"{torch.get_num_threads()} threads, {dev.type}",
        "train_config": dataclasses.asdict(cfg), "workers": workers,
        "final_quick_eval": metrics,
        "weights": str(weights),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
