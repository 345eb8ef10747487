"""Fine-tune a SAM on your own data with a small trainable part (:mod:`samkit.train.adapters`).

The loop is :mod:`samkit.train.loop`'s step (point / box prompts, a corrective click with the
previous logits as ``mask_input``, focal + dice + IoU loss) over :mod:`samkit.train.data`'s
batches, with the base model frozen and in eval mode (its batch norms keep their statistics,
so the adapter file is all that changes). Every ``eval_every`` steps the validation split's
point and box mIoU are measured (also before the first step: the base's own figures); the
best adapter so far is written to ``<out>/adapter.safetensors``; training stops early after
``patience`` evaluations without improvement. ``<out>/last.pt`` (trainable tensors,
optimizer, step) makes a run resumable; ``<out>/log.jsonl`` and ``<out>/summary.json`` record it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from samkit.checkpoint import weights_fingerprint
from samkit.errors import InputError
from samkit.modeling import Sam
from samkit.train.adapters import (
    AdapterConfig,
    apply_method,
    count_parameters,
    save_adapter,
    trainable_state,
)
from samkit.train.data import Example, ExampleBatches, prepare
from samkit.train.loop import lr_at, make_optimizer, prompt_miou, train_step

#: Default peak learning rates (the ones benchmarks/finetune_domain.py ran with; not tuned).
DEFAULT_LR = {"decoder": 3e-4, "lora": 1e-3, "adapter": 1e-3, "prompt": 3e-3}


@dataclass
class FinetuneConfig:
    """A fine-tuning run's settings (saved in ``last.pt`` and ``summary.json``)."""

    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    steps: int = 1000
    lr: float | None = None  # None: DEFAULT_LR[method]
    weight_decay: float = 0.01
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    images_per_step: int = 2
    targets_per_image: int = 8
    click_rounds: int = 1
    box_fraction: float = 0.5
    focal_weight: float = 20.0  # SAM's 20:1 (fine-tuning starts from a working model)
    dice_weight: float = 1.0
    loss_resolution: str = "low"
    grad_clip: float = 1.0
    bf16: bool = False
    eval_every: int = 25
    patience: int = 4  # evaluations without improvement before stopping; 0: never
    val_fraction: float = 0.15
    seed: int = 0
    time_limit_s: float | None = None
    schedule: str = "steps"  # "time": the cosine spans time_limit_s
    checkpoint_every: int = 25
    # None: on for lora/adapter with a ViT encoder (activations of one block kept at a time)
    gradient_checkpointing: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.adapter, dict):
            self.adapter = AdapterConfig.from_dict(self.adapter)
        if self.lr is None:
            self.lr = DEFAULT_LR[self.adapter.method]
        if self.schedule == "time" and not self.time_limit_s:
            raise InputError("schedule='time' needs a time limit (--time-limit)")
        if self.steps < 1 or self.images_per_step < 1 or self.targets_per_image < 1:
            raise InputError("steps, images per step and targets per image must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "adapter": self.adapter.to_dict()}


def _metric(m: dict[str, float]) -> float:
    """The validation score early stopping watches: mean of point and box mIoU."""
    return (m["val_miou_point"] + m["val_miou_box"]) / 2


def _val_samples(model: Sam, examples: list[Example]
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    size = model.img_size
    for ex in examples:
        p = prepare(ex, size)
        yield p.image[None], p.masks


def finetune(model: Sam, train: list[Example], val: list[Example], cfg: FinetuneConfig,
             out_dir: str | os.PathLike[str], base_name: str = "", resume: bool = True,
             progress: bool = True, log: Any = None) -> dict[str, Any]:
    """Fine-tune ``model`` (a built base model; changed in place) and write the run.

    Args:
        model: The base model, on the device to train on. Its weights identify the adapter.
        train: Training examples (:func:`samkit.train.data.load_examples`).
        val: Validation examples (may be empty: no early stopping, the last step is kept).
        cfg: The run's settings.
        out_dir: Run folder: ``adapter.safetensors`` (the result), ``last.pt``, ``log.jsonl``,
            ``summary.json``. An existing ``last.pt`` of the same settings is resumed.
        base_name: The base model's name, recorded in the adapter file.
        progress: Show a progress bar with the loss and the validation mIoU.
        log: Where the parameter counts and the outcome are printed (default stderr).

    Returns:
        The summary (also in ``summary.json``).
    """
    from tqdm import tqdm

    log = log or sys.stderr
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = model.device
    base_sha = weights_fingerprint(model)
    method = cfg.adapter.method
    apply_method(model, cfg.adapter)
    checkpointing = cfg.gradient_checkpointing
    if checkpointing is None:
        from samkit.modeling.image_encoder import ImageEncoderViT

        checkpointing = method in ("lora", "adapter") and isinstance(model.image_encoder,
                                                                      ImageEncoderViT)
    if checkpointing and method in ("lora", "adapter"):
        from samkit.accel import use_gradient_checkpointing

        use_gradient_checkpointing(model)
    model.eval()  # the base is frozen: batch norms keep their statistics, no dropout
    trainable, total = count_parameters(model)
    print(f"finetune {method}: {trainable:,} trainable parameters of {total:,} "
          f"({100 * trainable / total:.2f}%); {len(train)} training and {len(val)} validation "
          f"examples; device {dev}", file=log)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    size = model.img_size
    batches = ExampleBatches(train, size, cfg.images_per_step, cfg.targets_per_image, cfg.seed)
    adapter_path = out / "adapter.safetensors"
    ckpt = out / "last.pt"
    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "best": -math.inf, "best_step": 0,
                             "bad_evals": 0, "base_eval": None, "last_eval": None}
    if resume and ckpt.exists():
        saved = torch.load(ckpt, map_location=dev, weights_only=True)
        length = ("steps", "time_limit_s")  # a resumed run may be made longer
        if {k: v for k, v in saved["config"].items() if k not in length} != \
                {k: v for k, v in cfg.to_dict().items() if k not in length} or \
                saved["base_sha256"] != base_sha:
            raise InputError(f"{ckpt} belongs to a run with other settings or another base "
                             "model; use another output folder or --restart")
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, t in saved["trainable"].items():
                params[name].copy_(t)
        opt.load_state_dict(saved["optimizer"])
        state.update(saved["state"])
    encoder_grad = method in ("lora", "adapter")
    log_file = (out / "log.jsonl").open("a")

    def evaluate() -> dict[str, float]:
        return prompt_miou(model, _val_samples(model, val), size)

    def save_last() -> None:
        blob = {"trainable": trainable_state(model), "optimizer": opt.state_dict(),
                "config": cfg.to_dict(), "base_sha256": base_sha,
                "state": {**state, "elapsed_s": time.time() - t_start}}
        tmp = ckpt.with_suffix(".tmp")
        torch.save(blob, tmp)
        tmp.replace(ckpt)

    def record(entry: dict[str, Any]) -> None:
        log_file.write(json.dumps(entry) + "\n")
        log_file.flush()

    t_start = time.time() - state["elapsed_s"]
    if val and state["base_eval"] is None:
        state["base_eval"] = state["last_eval"] = evaluate()
        record({"step": 0, **state["base_eval"]})
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, desc=method,
               file=log)
    stopped = "steps"
    while state["step"] < cfg.steps:
        if cfg.time_limit_s is not None and time.time() - t_start > cfg.time_limit_s:
            stopped = "time limit"
            break
        step = state["step"]
        lr = lr_at(step, cfg, time.time() - t_start)  # type: ignore[arg-type]
        for group in opt.param_groups:
            group["lr"] = lr
        batch = batches(step)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        loss, stats, grad_norm = train_step(
            model, opt, batch.images, batch.masks.to(dev), batch.counts, cfg, gen,
            encoder_grad=encoder_grad, sizes=batch.sizes)
        state["step"] = step = step + 1
        entry = {"step": step, "loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm,
                 "pairs": int(batch.masks.shape[0]), "time_s": round(time.time() - t_start, 1),
                 **stats}
        if val and (step % cfg.eval_every == 0 or step == cfg.steps):
            metrics = state["last_eval"] = evaluate()
            entry.update(metrics)
            if _metric(metrics) > state["best"]:
                state.update(best=_metric(metrics), best_step=step, bad_evals=0)
                save_adapter(model, cfg.adapter, adapter_path, base_sha, base_name)
            else:
                state["bad_evals"] += 1
        record(entry)
        last = state["last_eval"] or {}
        bar.set_postfix(loss=f"{entry['loss']:.3f}",
                        **{k[9:]: f"{v:.3f}" for k, v in last.items()})
        bar.update(1)
        if step % cfg.checkpoint_every == 0:
            save_last()
        if cfg.patience and state["bad_evals"] >= cfg.patience:
            stopped = "early stopping"
            break
    bar.close()
    if not val:
        save_adapter(model, cfg.adapter, adapter_path, base_sha, base_name)
    elif state["best"] == -math.inf or (state["step"] % cfg.eval_every and stopped != "steps"):
        metrics = state["last_eval"] = evaluate()  # stopped between evaluations
        record({"step": state["step"], "eval_only": True, **metrics})
        if _metric(metrics) > state["best"]:
            state.update(best=_metric(metrics), best_step=state["step"])
            save_adapter(model, cfg.adapter, adapter_path, base_sha, base_name)
    save_last()
    log_file.close()
    summary = {
        "method": method, "base_model": base_name, "base_sha256": base_sha,
        "steps": state["step"], "stopped_by": stopped,
        "wall_time_s": round(time.time() - t_start, 1),
        "trainable_parameters": trainable, "total_parameters": total,
        "adapter": str(adapter_path), "adapter_bytes": adapter_path.stat().st_size,
        "best_step": state["best_step"] if val else state["step"],
        "base_eval": state["base_eval"], "best_val_score": None if not val else state["best"],
        "train_examples": len(train), "val_examples": len(val),
        "hardware": f"{platform.processor() or platform.machine()}, "
                    f"{torch.get_num_threads()} threads, {dev.type}",
        "config": cfg.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"finetune {method}: {state['step']} steps ({stopped}) in "
          f"{summary['wall_time_s']:.0f} s; kept step {summary['best_step']}: {adapter_path} "
          f"({summary['adapter_bytes'] / 1e6:.2f} MB)", file=log)
    return summary
