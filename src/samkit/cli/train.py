"""``samkit data synth`` and ``samkit train``: synthetic scenes and the training loop."""

from __future__ import annotations

import argparse
from pathlib import Path

from samkit.cli.common import add_speed_args


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="write synthetic scenes as a COCO dataset")
    synth.add_argument("--n", type=int, required=True, help="number of scenes")
    synth.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    synth.add_argument("--split", choices=["train", "val", "test"], default="test",
                       help="which stream of scenes; 'test' is the held-out split (default)")
    synth.add_argument("--start", type=int, default=0, help="first scene index")
    synth.add_argument("--domain", choices=["scenes", "cells", "videos", "volumes"],
                       default="scenes",
                       help="scenes: what nano trains on (default); cells: a domain it never "
                            "saw (crowded, touching, low-contrast 16-bit cells) for "
                            "fine-tuning; videos / volumes: clips with per-frame masks for "
                            "samkit eval-video (moving, occluded, leaving objects over photos; "
                            "CT-like scans)")
    synth.add_argument("--frames", type=int, default=None,
                       help="videos / volumes: frames (slices) per clip (default 40 / 32)")
    synth.set_defaults(func=run_synth)

    tr = sub.add_parser("train", help="train a model on synthetic scenes (resumes from --out)")
    tr.add_argument("--config", default="nano",
                    help="registered model config (default nano), or a JSON file holding a "
                         "SamConfig (SamConfig.to_dict()); the weights file is named after it")
    tr.add_argument("--out", type=Path, required=True, help="run directory")
    tr.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1500)")
    tr.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    tr.add_argument("--images-per-step", type=int, default=None)
    tr.add_argument("--targets-per-image", type=int, default=None)
    tr.add_argument("--click-rounds", type=int, default=None)
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--box-fraction", type=float, default=None,
                    help="share of targets prompted by a box first (default 0.5)")
    tr.add_argument("--easy-fraction", type=float, default=None,
                    help="share of the steps that sees easy scenes (default 0.25)")
    tr.add_argument("--warmup-steps", type=int, default=None)
    tr.add_argument("--first-scene", type=int, default=None,
                    help="index of the first training scene (a later stage that starts from "
                         "--init weights can draw scenes the earlier stages never saw)")
    tr.add_argument("--eval-every", type=int, default=None, help="steps between quick evals")
    tr.add_argument("--freeze-encoder", action="store_true",
                    help="train the prompt encoder and mask decoder only (the image encoder "
                         "runs without gradients); use with --init")
    tr.add_argument("--loss-resolution", choices=["low", "full"], default=None,
                    help="score masks on the decoder's low-res grid (default) or upsampled "
                         "to the input size (sharper edges, small objects)")
    tr.add_argument("--pad", choices=["normalized", "raw"], default=None,
                    help="normalized (default): scenes padded after normalisation, as the "
                         "predictor pads; raw: the padded canvas normalised whole (black "
                         "padding, as nano v2's first three stages were trained)")
    tr.add_argument("--bf16", action="store_true",
                    help="bfloat16 autocast (GPUs; CPUs with AVX-512 BF16 or AMX)")
    tr.add_argument("--workers", type=int, default=0,
                    help="processes that draw scenes ahead of the model (default 0: none)")
    tr.add_argument("--schedule", choices=["steps", "time"], default=None,
                    help="learning-rate decay over --steps (default) or over --time-limit")
    tr.add_argument("--checkpoint-minutes", type=float, default=None,
                    help="also checkpoint (last.pt and the weights) after this many minutes")
    tr.add_argument("--time-limit", type=float, default=None, help="stop after this many minutes")
    tr.add_argument("--stop-after", type=int, default=None,
                    help="stop at this step (the schedule still spans --steps); resume later")
    tr.add_argument("--restart", action="store_true", help="ignore an existing last.pt")
    tr.add_argument("--init", type=Path, default=None,
                    help="start from these weights (e.g. src/samkit/weights/nano.safetensors)")
    tr.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    add_speed_args(tr, model_switches=False)
    tr.set_defaults(func=run)


def run_synth(args: argparse.Namespace) -> int:
    from samkit.data.coco import write_synthetic_coco

    if args.domain in ("videos", "volumes"):
        from samkit.data.video import write_synthetic_clips

        out = write_synthetic_clips(args.split, args.n, args.output, args.domain,
                                    start=args.start, n_frames=args.frames)
        print(f"wrote {args.n} {args.split} {args.domain} under {out}")
        return 0
    if args.frames is not None:
        from samkit.errors import InputError

        raise InputError("--frames is for --domain videos or volumes")
    path = write_synthetic_coco(args.split, args.n, args.output, start=args.start,
                                domain=args.domain)
    print(f"wrote {args.n} {args.split} {args.domain}: {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    import json

    from samkit.config import SamConfig
    from samkit.errors import InputError
    from samkit.train.loop import TrainConfig, train

    if args.workers < 0:
        raise InputError(f"--workers {args.workers}: expected 0 (none) or more processes")
    name, model_config = args.config, None
    if args.config.endswith(".json"):
        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"--config {path}: no such file (expected a SamConfig JSON or a "
                             "registered name such as nano)")
        try:
            model_config = SamConfig.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"--config {path}: not a SamConfig JSON ({e})") from None
        name = path.stem
    overrides = {k: getattr(args, k) for k in (
        "steps", "lr", "images_per_step", "targets_per_image", "click_rounds", "seed",
        "box_fraction", "easy_fraction", "warmup_steps", "eval_every", "schedule",
        "first_scene", "loss_resolution", "pad")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.bf16:
        overrides["bf16"] = True
    if args.freeze_encoder:
        overrides["freeze_encoder"] = True
    if args.time_limit is not None:
        overrides["time_limit_s"] = args.time_limit * 60
    if args.checkpoint_minutes is not None:
        overrides["checkpoint_every_s"] = args.checkpoint_minutes * 60
    cfg = TrainConfig(**{**TrainConfig(model=name).__dict__, **overrides})
    summary = train(cfg, args.out, resume=not args.restart, device=args.device,
                    init_from=args.init, stop_after=args.stop_after, model_config=model_config,
                    workers=args.workers)
    print(f"trained {summary['steps']} steps in {summary['wall_time_s']:.0f} s; weights: "
          f"{summary['weights']}")
    return 0
