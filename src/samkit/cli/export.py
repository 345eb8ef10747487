"""``samkit export onnx``: ONNX files of a model's image encoder and decoder (and int8)."""

from __future__ import annotations

import argparse
from pathlib import Path

from samkit.cli.common import add_model_args, load_model


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export a model for deployment")
    ex_sub = ex.add_subparsers(dest="export_format", required=True)
    onnx = ex_sub.add_parser(
        "onnx", help="image_encoder.onnx, decoder.onnx and decoder_official.onnx",
        description="Write the image encoder (RGB uint8 resized image in, embedding out), "
                    "samkit's decoder (original-image prompts, many prompt sets per call) and "
                    "a decoder in the official export's convention. Run them with "
                    "samkit.backends.onnxruntime.OnnxPredictor or plain onnxruntime.")
    onnx.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    onnx.add_argument("--quantize", choices=["int8"], default=None,
                      help="also write int8 files (static encoder, dynamic decoder)")
    onnx.add_argument("--calibration", type=Path, default=None,
                      help="folder of images to calibrate the int8 encoder (default: 16 "
                           "synthetic scenes; your own images are better)")
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    onnx.add_argument("--all-masks", action="store_true",
                      help="decoder_official.onnx returns all four masks instead of one")
    add_model_args(onnx, model_switches=False)
    onnx.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samkit._extras import require
    from samkit.errors import InputError

    require("onnxscript", "onnx", "ONNX export")
    from samkit.export import export_onnx
    from samkit.export.onnx import DEFAULT_OPSET

    images = None
    if args.calibration is not None:
        if args.quantize is None:
            raise InputError("--calibration is for --quantize int8")
        from samkit.io.image import list_images, load_image

        files = list_images(args.calibration)
        if not files:
            raise InputError(f"--calibration {args.calibration}: no images found in that folder")
        images = (load_image(p) for p in files)
    model = load_model(args).cpu()
    name = args.model or (args.checkpoint.name if args.checkpoint else "nano")
    done = export_onnx(model, args.output, model_name=name, opset=args.opset or DEFAULT_OPSET,
                       return_single_mask=not args.all_masks)
    written = [done.encoder, done.decoder, done.official_decoder]
    if args.quantize == "int8":
        from samkit.export.quantize import quantize_int8

        written += list(quantize_int8(args.output, images))
    for p in written:
        print(f"wrote {p} ({p.stat().st_size / 2**20:.1f} MiB)")
    return 0
