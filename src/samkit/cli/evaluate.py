"""``samkit eval``: mIoU by prompt type on a COCO dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from samkit.cli.common import (
    add_amg_flags,
    add_model_args,
    add_onnx_args,
    amg_params,
    load_model_or_onnx,
)


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval", help="mIoU by prompt type on a COCO dataset",
        description="mIoU by prompt type on a COCO dataset, overall and by COCO object size "
                    "(small < 32^2, medium, large >= 96^2 mask pixels; `miou_by_size` in the "
                    "JSON report).")
    ev.add_argument("coco_json", type=Path, help="COCO instances JSON (RLE or polygons)")
    ev.add_argument("--images", type=Path, required=True, help="image directory")
    ev.add_argument("--prompts", default="point1,point5,box,box+point,auto",
                    help="comma-separated: point1, point5, box, box+point, auto")
    ev.add_argument("--max-images", type=int, default=None, help="evaluate the first N images")
    ev.add_argument("--auto-max-images", type=int, default=None,
                    help="run the (slow) automatic generator on the first N images only")
    ev.add_argument("-o", "--output", type=Path, default=None, help="write the JSON report here")
    add_onnx_args(ev)
    add_amg_flags(ev)
    add_model_args(ev)
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samkit.eval.evaluate import evaluate, format_table

    prompts = tuple(p.strip() for p in args.prompts.split(",") if p.strip())
    model, exported_from = load_model_or_onnx(args)
    summary = evaluate(model, args.coco_json, args.images, prompts=prompts,
                       max_images=args.max_images, auto_max_images=args.auto_max_images,
                       amg_kwargs=amg_params(args, exported_from) if "auto" in prompts else None)
    print(format_table(summary))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.output}")
    return 0
