"""``samkit segment``: one object from points and/or a box."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from samkit.cli.common import CliError, add_model_args, load_model, parse_numbers, save_png
from samkit.cli.label import add_text_args


def register(sub: argparse._SubParsersAction) -> None:
    seg = sub.add_parser("segment", help="segment one object from points and/or a box")
    seg.add_argument("image", type=Path,
                     help="input image, or a volume: DICOM series folder or file, NIfTI "
                          "(.nii, .nii.gz), multi-page TIFF (with --slice)")
    seg.add_argument("--slice", type=int, default=None, metavar="Z",
                     help="slice of a volume to segment (0-based)")
    seg.add_argument("--window", default=None, metavar="C,W|PRESET|pLO,HI",
                     help="grey-level window before the encoder: CENTER,WIDTH (CT: 40,400), a "
                          "CT preset (brain, lung, bone, abdomen, liver, mediastinum, ...), "
                          "percentiles pLOW,HIGH (e.g. p1,99) or minmax; default: the file's "
                          "own window, CT soft tissue for CT, else p1,99 (volumes) or the "
                          "value range (2D images)")
    seg.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                     help="a click in pixels; LABEL 1 = foreground (default), 0 = background; "
                          "repeat for several")
    seg.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box in pixels (XYXY)")
    seg.add_argument("--multimask", action="store_true",
                     help="write the 3 candidate masks, best first")
    seg.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    add_text_args(seg, multimask=False)
    add_model_args(seg)
    seg.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samkit.io.medical import load_any, parse_window
    from samkit.io.prompts import check_box, points_from_triples, prompts_outside
    from samkit.predictor import SamPredictor
    from samkit.viz import overlay

    if args.text or args.detector or args.clip:
        if args.point or args.box:
            raise CliError("--text finds the objects itself: give it without --point/--box")
        return run_text(args)
    points = [parse_numbers(p, (2, 3), "--point") for p in args.point or []]
    box = parse_numbers(args.box, (4,), "--box") if args.box else None
    if not points and box is None:
        raise CliError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1, or "
                       "--text NAMES with --detector DIR")
    triples = [[*p[:2], p[2] if len(p) == 3 else 1] for p in points]
    checked = points_from_triples(triples)
    check_box(box)
    loaded = load_any(args.image, args.slice, parse_window(args.window))
    image = loaded.image
    for warning in prompts_outside(None if checked is None else checked[0], box,
                                   image.shape[:2]):
        print(f"samkit segment: warning: --{warning}", file=sys.stderr)
    model = load_model(args)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    coords, labels = checked if checked is not None else (None, None)
    masks, scores, _ = predictor.predict(
        point_coords=coords,
        point_labels=labels,
        box=None if box is None else np.array(box),
        multimask_output=args.multimask,
    )
    order = np.argsort(-scores)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = loaded.stem
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
        "slice": loaded.slice,
        "window": args.window,
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


def run_text(args: argparse.Namespace) -> int:
    """``--text NAMES --detector DIR`` (or ``--clip DIR``): every object of those classes."""
    from samkit.cli.label import build_labeler
    from samkit.io.medical import load_any, parse_window
    from samkit.pipelines import draw

    if not (args.detector or args.clip):
        raise CliError("--text needs a model that finds the objects: --detector DIR (Grounding "
                       "DINO, OWLv2) or --clip DIR")
    loaded = load_any(args.image, args.slice, parse_window(args.window))
    labeler = build_labeler(args, need_source=False)
    det = labeler.label(loaded.image)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = loaded.stem
    objects = []
    assert det.masks is not None
    for i, label in enumerate(det.labels()):
        name = f"{stem}_{label.replace(' ', '_')}{i}.png"
        save_png(out / name, det.masks[i].astype(np.uint8) * 255)
        objects.append({"file": name, "class": label, "score": round(float(det.scores[i]), 4),
                        "box": [round(float(v), 1) for v in det.boxes[i]],
                        "area": int(det.masks[i].sum())})
    save_png(out / f"{stem}_overlay.png", draw(loaded.image, det))
    report = {"image": str(args.image), "size": list(loaded.image.shape[:2]),
              "classes": det.names, "objects": objects, "overlay": f"{stem}_overlay.png"}
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    print(f"found {len(objects)} object(s) of {', '.join(det.names)}; masks, overlay and "
          f"{stem}.json in {out}/")
    return 0
