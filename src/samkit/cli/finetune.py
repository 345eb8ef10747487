"""``samkit finetune`` (adapt a model to your data) and ``samkit merge`` (fold the result into a
plain checkpoint)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samkit.cli.common import CliError, add_speed_args, device


def register(sub: argparse._SubParsersAction) -> None:
    from samkit.train.adapters import LORA_TARGETS, METHODS

    ft = sub.add_parser(
        "finetune", help="fine-tune a model on your annotations (decoder, LoRA, adapters, "
                         "learned prompts); writes a small adapter file")
    ft.add_argument("data", type=Path,
                    help="a COCO .json (e.g. exported by samkit studio) or a folder with "
                         "images/ and masks/ (instance label maps: PNG, TIFF or NIfTI)")
    ft.add_argument("--images", type=Path, default=None,
                    help="the COCO file's image folder (default: images/ beside it)")
    ft.add_argument("--base", default="nano",
                    help="model to adapt: a registered name (nano, vit_b, vit_t, ...) or a "
                         "checkpoint file (default: the bundled nano)")
    ft.add_argument("--checkpoint", type=Path, default=None,
                    help="weights for --base when it names a model without bundled weights")
    ft.add_argument("--method", choices=METHODS, default="lora")
    ft.add_argument("-o", "--output", type=Path, required=True, help="run folder")
    ft.add_argument("--steps", type=int, default=None, help="maximum steps (default 1000)")
    ft.add_argument("--time-limit", type=float, default=None,
                    help="stop after this many minutes (the learning rate then decays over it)")
    ft.add_argument("--lr", type=float, default=None,
                    help="peak learning rate (default per method: decoder 3e-4, lora 1e-3, "
                         "adapter 1e-3, prompt 3e-3)")
    ft.add_argument("--rank", type=int, default=None, help="LoRA rank (default 4)")
    ft.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default = rank)")
    ft.add_argument("--lora-targets", default=None,
                    help=f"comma-separated, of {', '.join(LORA_TARGETS)} (default encoder)")
    ft.add_argument("--prompt-tokens", type=int, default=None,
                    help="learned prompt tokens for --method prompt (default 4)")
    ft.add_argument("--images-per-step", type=int, default=None, help="default 2")
    ft.add_argument("--targets-per-image", type=int, default=None, help="default 8")
    ft.add_argument("--eval-every", type=int, default=None,
                    help="steps between validation evaluations (default 25)")
    ft.add_argument("--patience", type=int, default=None,
                    help="evaluations without improvement before stopping (default 4; 0 never)")
    ft.add_argument("--val-fraction", type=float, default=None,
                    help="share of the images held out for validation (default 0.15)")
    ft.add_argument("--window", default=None,
                    help="grey-level window for volumes (as samkit segment --window)")
    ft.add_argument("--seed", type=int, default=None)
    ft.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    ft.add_argument("--no-gradient-checkpointing", action="store_true",
                    help="keep every encoder block's activations (faster, more memory)")
    ft.add_argument("--restart", action="store_true", help="ignore an existing last.pt")
    ft.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    add_speed_args(ft, model_switches=False)
    ft.set_defaults(func=run)

    mg = sub.add_parser("merge", help="fold a LoRA or decoder adapter into a plain checkpoint "
                                      "that the official classes load")
    mg.add_argument("adapter", type=Path, help="adapter.safetensors from samkit finetune")
    mg.add_argument("--base", default="nano", help="the base model (name or checkpoint file)")
    mg.add_argument("--checkpoint", type=Path, default=None, help="weights for --base")
    mg.add_argument("-o", "--output", type=Path, required=True,
                    help="merged checkpoint: .pth (a plain state dict, as the official files) "
                         "or .safetensors")
    mg.set_defaults(func=run_merge)


def _base(args: argparse.Namespace, dev: str = "cpu"):  # -> (Sam, name)
    from samkit.registry import MODELS, build_sam, resolve_name

    base = str(args.base)
    as_file = Path(base)
    if as_file.suffix.lower() in (".pth", ".pt", ".safetensors") or as_file.is_file():
        if args.checkpoint is not None:
            raise CliError("give the base as --base FILE or as --base NAME --checkpoint FILE, "
                           "not both")
        if not as_file.is_file():
            raise FileNotFoundError(f"base checkpoint not found: {as_file}")
        return build_sam(checkpoint=as_file, device=dev), as_file.name
    name = resolve_name(base)
    weights = MODELS[name].weights
    if args.checkpoint is None and not (weights is not None and weights.bundled):
        raise CliError(f"--base {name} has no bundled weights: give its checkpoint with "
                       "--checkpoint FILE (samkit models lists the files)")
    return build_sam(name, checkpoint=args.checkpoint, device=dev), name


def run(args: argparse.Namespace) -> int:
    from samkit.io.medical import parse_window
    from samkit.train.adapters import AdapterConfig
    from samkit.train.data import load_examples, split_examples
    from samkit.train.finetune import FinetuneConfig, finetune

    adapter_kw = {k: v for k, v in {"method": args.method, "rank": args.rank,
                                    "prompt_tokens": args.prompt_tokens}.items()
                  if v is not None}
    if args.rank is not None or args.alpha is not None:
        adapter_kw["alpha"] = args.alpha if args.alpha is not None else float(args.rank or 4)
    if args.lora_targets:
        adapter_kw["lora_targets"] = tuple(t.strip() for t in args.lora_targets.split(","))
    kw = {k: getattr(args, k) for k in ("steps", "lr", "images_per_step", "targets_per_image",
                                        "eval_every", "patience", "val_fraction", "seed")
          if getattr(args, k) is not None}
    if args.time_limit is not None:
        kw.update(time_limit_s=args.time_limit * 60, schedule="time")
        kw.setdefault("steps", 1_000_000)
    if args.bf16:
        kw["bf16"] = True
    if args.no_gradient_checkpointing:
        kw["gradient_checkpointing"] = False
    cfg = FinetuneConfig(adapter=AdapterConfig(**adapter_kw), **kw)
    examples = load_examples(args.data, args.images, parse_window(args.window))
    train, val = split_examples(examples, cfg.val_fraction, cfg.seed)
    model, name = _base(args, device(args.device))
    summary = finetune(model, train, val, cfg, args.output, base_name=name,
                       resume=not args.restart)
    base, best = summary["base_eval"], None
    if base is not None:
        import json

        lines = (Path(args.output) / "log.jsonl").read_text().splitlines()
        evals = [json.loads(x) for x in lines if "val_miou_box" in x]
        best = next((e for e in evals if e["step"] == summary["best_step"]), evals[-1])
        print(f"validation mIoU  point {base['val_miou_point']:.3f} -> "
              f"{best['val_miou_point']:.3f}, box {base['val_miou_box']:.3f} -> "
              f"{best['val_miou_box']:.3f}", file=sys.stderr)
    as_file = Path(str(args.base)).is_file()
    model_flags = f"--checkpoint {args.base}" if as_file else f"--model {name}" + (
        f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
    print(f"use it: samkit segment IMAGE {model_flags} --adapter {summary['adapter']} ...")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    import torch

    from samkit.checkpoint import save_checkpoint
    from samkit.train.adapters import load_adapter, merge_adapter, read_adapter

    suffix = args.output.suffix.lower()
    if suffix not in (".pth", ".pt", ".safetensors"):
        raise CliError(f"-o {args.output}: use a .pth or .safetensors file name")
    model, _ = _base(args)
    cfg = read_adapter(args.adapter).config
    merge_adapter(load_adapter(model, args.adapter), cfg)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".safetensors":
        save_checkpoint(model, args.output)
    else:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, args.output)
    print(f"merged {cfg.method} into {args.output}")
    return 0
