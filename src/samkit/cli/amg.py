"""``samkit amg``: every object in an image or a folder, written in any dataset format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samkit.cli.common import (
    CliError,
    add_amg_flags,
    add_model_args,
    add_onnx_args,
    amg_params,
    load_model_or_onnx,
)
from samkit.cli.embed import add_engine_args, run_engine

CHOICES = ("coco", "coco-polygons", "yolo", "png", "labelme", "mask-pngs", "rle-json")


def register(sub: argparse._SubParsersAction) -> None:
    amg = sub.add_parser("amg", help="segment everything in an image or a directory of images")
    amg.add_argument("input", type=Path,
                     help="image file or directory; with --engine also a glob "
                          "('photos/**/*.jpg') or a .txt / .parquet manifest of image paths")
    amg.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    amg.add_argument("--format", choices=CHOICES, default=None,
                     help="coco: one annotations.json (RLE); coco-polygons; yolo: labels/*.txt "
                          "segmentation lines; png: instances/ and semantic/ label maps; "
                          "labelme: one JSON per image; mask-pngs: a folder of 0/255 mask PNGs "
                          "per image (overlaps kept) with metadata.json; rle-json: one JSON "
                          "of COCO-RLE records per image (default coco; --engine writes SA-1B "
                          "JSON per image)")
    add_amg_flags(amg)
    add_engine_args(amg, None)
    add_onnx_args(amg)
    add_model_args(amg)
    amg.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from samkit.amg import SamAutomaticMaskGenerator
    from samkit.io.formats import DatasetWriter, ImageEntry, Instance, directory_sink
    from samkit.io.image import list_images, load_image

    if args.engine is not None:
        if args.format is not None:
            raise CliError("--engine writes SA-1B JSON per image (resumable, with a manifest); "
                           "for --format, run without --engine")
        if args.onnx is not None:
            raise CliError("--engine runs PyTorch models; --onnx is not supported with it")
        return run_engine(args, "amg", amg_params(args))
    args.format = args.format or "coco"
    images = list_images(args.input)
    if not images:
        raise CliError(f"no images found in {args.input}")
    model, exported_from = load_model_or_onnx(args)
    generator = SamAutomaticMaskGenerator(model, output_mode="coco_rle",
                                          **amg_params(args, exported_from))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter(args.format, directory_sink(out),
                           info={"description": "samkit amg"})
    failed = []
    for image_id, path in enumerate(tqdm(images, desc="amg", unit="img"), start=1):
        try:
            image = load_image(path)
        except (OSError, ValueError) as exc:
            failed.append(f"{path}: {exc}")
            continue
        records = generator.generate(image)
        h, w = image.shape[:2]
        instances = [
            Instance(rle=rec["segmentation"], score=rec["predicted_iou"],
                     extra={"area": rec["area"], "bbox": [int(v) for v in rec["bbox"]],
                            "predicted_iou": rec["predicted_iou"],
                            "stability_score": rec["stability_score"],
                            "point_coords": rec["point_coords"], "crop_box": rec["crop_box"]})
            for rec in records
        ]
        writer.add(ImageEntry(path.name, h, w, instances, id=image_id))
    writer.close()
    done = len(images) - len(failed)
    print(f"processed {done}/{len(images)} image(s); results in {out}/ ({args.format})")
    for line in failed:
        print(f"skipped {line}", file=sys.stderr)
    return 1 if failed else 0
