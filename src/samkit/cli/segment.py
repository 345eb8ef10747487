"""``samkit segment``: one object from points and/or a box."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from samkit.cli.common import CliError, add_model_args, load_model, parse_numbers, save_png


def register(sub: argparse._SubParsersAction) -> None:
    seg = sub.add_parser("segment", help="segment one object from points and/or a box")
    seg.add_argument("image", type=Path, help="input image")
    seg.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                     help="a click in pixels; LABEL 1 = foreground (default), 0 = background; "
                          "repeat for several")
    seg.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box in pixels (XYXY)")
    seg.add_argument("--multimask", action="store_true",
                     help="write the 3 candidate masks, best first")
    seg.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    add_model_args(seg)
    seg.set_defaults(func=run)


def outside_warnings(points: list[list[float]], box: list[float] | None,
                     hw: tuple[int, int]) -> list[str]:
    """Warnings for prompts that fall outside an image of size ``(H, W)`` (they are still
    used: SAM accepts them, but they are usually a mistake of coordinates)."""
    h, w = hw
    out = []
    for p in points:
        if not (0 <= p[0] < w and 0 <= p[1] < h):
            out.append(f"--point {p[0]:g},{p[1]:g} is outside the {w}x{h} image (X in 0..{w - 1},"
                       f" Y in 0..{h - 1})")
    if box is not None and (box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h):
        out.append(f"--box {','.join(f'{v:g}' for v in box)} lies entirely outside the "
                   f"{w}x{h} image")
    elif box is not None and (box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h):
        out.append(f"--box {','.join(f'{v:g}' for v in box)} reaches outside the {w}x{h} image")
    return out


def run(args: argparse.Namespace) -> int:
    from samkit.io.image import load_image
    from samkit.predictor import SamPredictor
    from samkit.viz import overlay

    points = [parse_numbers(p, (2, 3), "--point") for p in args.point or []]
    box = parse_numbers(args.box, (4,), "--box") if args.box else None
    if not points and box is None:
        raise CliError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    image = load_image(args.image)
    for warning in outside_warnings(points, box, image.shape[:2]):
        print(f"samkit segment: warning: {warning}", file=sys.stderr)
    model = load_model(args)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    coords = labels = None
    if points:
        coords = np.array([p[:2] for p in points])
        labels = np.array([int(p[2]) if len(p) == 3 else 1 for p in points])
    masks, scores, _ = predictor.predict(
        point_coords=coords,
        point_labels=labels,
        box=None if box is None else np.array(box),
        multimask_output=args.multimask,
    )
    order = np.argsort(-scores)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    files = []
    for rank, i in enumerate(order):
        name = f"{stem}_mask{rank}.png" if len(order) > 1 else f"{stem}_mask.png"
        save_png(out / name, masks[i].astype(np.uint8) * 255)
        files.append({"file": name, "score": float(scores[i]), "area": int(masks[i].sum())})
    best = masks[order[0]]
    vis = overlay(image, [best], points=coords, labels=labels,
                  boxes=None if box is None else np.array([box]))
    save_png(out / f"{stem}_overlay.png", vis)
    report = {
        "image": str(args.image),
        "size": list(image.shape[:2]),
        "points": None if coords is None else coords.tolist(),
        "labels": None if labels is None else labels.tolist(),
        "box": box,
        "masks": files,
        "overlay": f"{stem}_overlay.png",
    }
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {len(files)} mask(s), overlay and scores to {out}/ (best score "
          f"{files[0]['score']:.3f})")
    return 0
