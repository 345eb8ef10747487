"""``samkit label``: a folder of images and class names in, a labelled dataset out."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from samkit.cli.common import (
    CliError,
    add_amg_flags,
    add_model_args,
    add_onnx_args,
    amg_params,
    device,
    load_model,
    load_model_or_onnx,
    save_png,
)

CHOICES = ("coco", "coco-polygons", "yolo", "png", "labelme", "mask-pngs", "rle-json")


def add_text_args(p: argparse.ArgumentParser, multimask: bool = True) -> None:
    """Class names, the detector / CLIP folders and their thresholds (label and segment)."""
    p.add_argument("--text", metavar="NAMES",
                   help="class names, comma-separated: \"cat, dog\"")
    p.add_argument("--detector", type=Path, metavar="DIR",
                   help="a Hugging Face zero-shot detector folder (Grounding DINO, OWLv2, "
                        "OWL-ViT) that finds the --text classes")
    p.add_argument("--clip", type=Path, metavar="DIR",
                   help="a CLIP folder (Hugging Face or open_clip) that names each mask; "
                        "alone, it names the automatic generator's masks")
    p.add_argument("--box-threshold", type=float, default=0.3,
                   help="detector: minimum box score (default 0.3)")
    p.add_argument("--text-threshold", type=float, default=0.25,
                   help="Grounding DINO: minimum probability of the class's words (default "
                        "0.25)")
    p.add_argument("--nms", type=float, default=0.5,
                   help="per-class NMS IoU of the detector's boxes; 1 turns it off (default 0.5)")
    p.add_argument("--max-detections", type=int, default=100,
                   help="at most this many objects per image (default 100)")
    p.add_argument("--clip-threshold", type=float, default=0.5,
                   help="CLIP: a mask whose best class has a lower probability is unknown "
                        "and dropped (default 0.5)")
    p.add_argument("--template", action="append", metavar="TEXT",
                   help="CLIP prompt template with {} for the class (repeat for several; "
                        "default: three 'a photo of a {}.' variants)")
    p.add_argument("--keep-unknown", action="store_true",
                   help="keep masks CLIP cannot name, as class 'unknown'")
    if multimask:
        p.add_argument("--multimask", action="store_true",
                       help="decode three masks per box and keep the best-scored one")


def register(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("label", help="auto-label images: class names -> labelled masks "
                                       "(text detector, detector boxes or CLIP)")
    lab.add_argument("input", type=Path, help="image file or directory")
    lab.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    lab.add_argument("--boxes", type=Path, metavar="FILE",
                     help="boxes from another detector: a COCO JSON (instances file or "
                          "results list) or a folder of YOLO txt files")
    lab.add_argument("--format", choices=CHOICES, default="coco",
                     help="dataset format (see samkit amg --help; default coco)")
    lab.add_argument("--no-overlays", action="store_true",
                     help="do not draw overlays/<image>.png (masks, boxes, class and score)")
    add_text_args(lab)
    add_amg_flags(lab)
    add_onnx_args(lab)
    add_model_args(lab)
    lab.set_defaults(func=run)


def build_labeler(args: argparse.Namespace, need_source: bool = True) -> Any:
    """The :class:`~samkit.pipelines.AutoLabeler` the text arguments ask for."""
    from samkit.pipelines import AutoLabeler, ClipLabeler, LabelConfig, TextDetector

    if need_source and not (args.detector or args.clip or getattr(args, "boxes", None)):
        raise CliError("say where the objects come from: --detector DIR (with --text), "
                       "--boxes FILE, or --clip DIR (with --text)")
    if (args.detector or args.clip) and not args.text:
        raise CliError("--detector and --clip need the class names: --text \"cat, dog\"")
    dev = device(getattr(args, "device", None))
    detector = TextDetector.from_pretrained(args.detector, dev) if args.detector else None
    clip = ClipLabeler.from_pretrained(args.clip, dev) if args.clip else None
    if hasattr(args, "onnx"):
        model, exported_from = load_model_or_onnx(args)
    else:
        model, exported_from = load_model(args), None
    config = LabelConfig(box_threshold=args.box_threshold, text_threshold=args.text_threshold,
                         nms_threshold=args.nms, max_detections=args.max_detections,
                         clip_threshold=args.clip_threshold, keep_unknown=args.keep_unknown,
                         multimask=getattr(args, "multimask", False),
                         amg=amg_params(args, exported_from) if hasattr(args, "strategy")
                         else {})
    if args.template:
        config.templates = tuple(args.template)
    return AutoLabeler(model, args.text, detector=detector, clip=clip, config=config)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from samkit.io.formats import DatasetWriter, directory_sink
    from samkit.io.image import list_images, load_image
    from samkit.pipelines import BoxFile, categories, draw, parse_classes, to_entry

    images = list_images(args.input)
    if not images:
        raise CliError(f"no images found in {args.input}")
    boxes = None
    if args.boxes:
        boxes = BoxFile(args.boxes, parse_classes(args.text) if args.text else None)
    labeler = build_labeler(args)
    names = labeler.classes or (boxes.names if boxes is not None else [])
    if not names:
        raise CliError(f"{args.boxes} names no classes: give them with --text \"cat, dog\"")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter(args.format, directory_sink(out),
                           categories(names, unknown=args.keep_unknown),
                           info={"description": "samkit label", "classes": names})
    counts: Counter[str] = Counter()
    failed = []
    bar = tqdm(images, desc="label", unit="img")
    for image_id, path in enumerate(bar, start=1):
        try:
            image = load_image(path)
        except (OSError, ValueError) as exc:
            failed.append(f"{path}: {exc}")
            continue
        given = boxes.for_image(path, image.shape[:2]) if boxes is not None else None
        det = labeler.label(image, given)
        counts.update(det.labels())
        writer.add(to_entry(det, path.name, image_id))
        if not args.no_overlays:
            (out / "overlays").mkdir(exist_ok=True)
            save_png(out / "overlays" / f"{path.stem}.png", draw(image, det))
        bar.set_postfix(objects=sum(counts.values()))
    writer.close()
    done = len(images) - len(failed)
    per_class = ", ".join(f"{n} {counts[n]}" for n in [*names, "unknown"] if counts[n])
    print(f"labelled {done}/{len(images)} image(s): {sum(counts.values())} object(s)"
          f"{' (' + per_class + ')' if per_class else ''}; results in {out}/ ({args.format})")
    for line in failed:
        print(f"skipped {line}", file=sys.stderr)
    return 1 if failed else 0
