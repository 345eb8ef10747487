"""What the commands share: model and speed arguments, model loading, AMG flags, parsing."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError

AMG_FLAGS: dict[str, tuple[type, str, str]] = {
    "points_per_side": (int, "points sampled along each image side", "32"),
    "points_per_batch": (int, "points decoded per batch", "64"),
    "pred_iou_thresh": (float, "keep masks with predicted IoU above this", "0.88"),
    "stability_score_thresh": (float, "keep masks with stability score at least this", "0.95"),
    "stability_score_offset": (float, "logit offset for the stability score", "1.0"),
    "box_nms_thresh": (float, "box IoU for NMS within a crop", "0.7"),
    "crop_n_layers": (int, "extra layers of image crops", "0"),
    "crop_nms_thresh": (float, "box IoU for NMS across crops", "0.7"),
    "crop_overlap_ratio": (float, "crop overlap as a fraction of the short side", "0.3413"),
    "crop_n_points_downscale_factor": (int, "points-per-side shrink per crop layer", "1"),
    "min_mask_region_area": (int, "remove islands/holes smaller than this (pixels)", "0"),
    "strategy": (str, "exact (the official algorithm) or fast (a quarter of the grid first, "
                      "then only the points no kept object mask covers)", "exact"),
}

#: Options whose value is a list of numbers that may start with a minus sign.
NUMBER_LIST_OPTIONS = ("--point", "--box")
_NUMBERS = re.compile(r"^-[\d.]+(,-?[\d.]*)*$")


class CliError(SamkitError):
    """An error reported to the user as one line, without a traceback."""


def join_negative_values(argv: list[str]) -> list[str]:
    """``--point -5,50`` -> ``--point=-5,50``: argparse would read ``-5,50`` as an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in NUMBER_LIST_OPTIONS and i + 1 < len(argv) and _NUMBERS.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def parse_numbers(text: str, n: tuple[int, ...], what: str) -> list[float]:
    """Comma-separated numbers (``"500,375"``), ``n`` of them."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CliError(f"{what} {text!r}: expected comma-separated numbers") from None
    if len(values) not in n:
        raise CliError(f"{what} {text!r}: expected {' or '.join(map(str, n))} numbers")
    return values


def device(name: str | None) -> str:
    """The torch device to use: ``name``, else CUDA when present, else the CPU."""
    import torch

    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(args: argparse.Namespace) -> Any:
    """The model the command's ``--model`` / ``--checkpoint`` / speed flags ask for."""
    from samkit.registry import build_sam, resolve_weights

    choice = resolve_weights(args.model, args.checkpoint)
    if choice.bundled:
        print(f"using the bundled {choice.name} model (trained on synthetic scenes; for real "
              "photos pass an official --checkpoint)", file=sys.stderr)
    model = build_sam(choice.name if choice.bundled else args.model,
                      checkpoint=choice.checkpoint, device=device(args.device),
                      adapter=getattr(args, "adapter", None))
    if getattr(args, "fast", False) or getattr(args, "compile", False):
        from samkit.accel import optimize

        try:
            optimize(model, fused_attention=bool(getattr(args, "fast", False)),
                     compile=bool(getattr(args, "compile", False)))
        except RuntimeError as exc:  # no C++ compiler for torch.compile
            raise CliError(str(exc)) from exc
    return model


def add_onnx_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", type=Path, default=None,
                   help="run exported files from this folder on ONNX Runtime instead of "
                        "PyTorch (samkit export onnx -o DIR)")
    p.add_argument("--int8", action="store_true", help="with --onnx: the int8 files")


def load_model_or_onnx(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The PyTorch model (:func:`load_model`), or with ``--onnx`` an ``OnnxPredictor`` and the
    model name recorded in its files."""
    if args.onnx is None:
        if args.int8:
            raise CliError("--int8 runs exported int8 files: give --onnx DIR too")
        return load_model(args), None
    ignored = [f"--{n.replace('_', '-')}" for n in ("checkpoint", "model", "adapter", "device",
                                                     "fast", "compile") if getattr(args, n, None)]
    if ignored:
        raise CliError(f"--onnx runs the exported files as they are; {', '.join(ignored)} "
                       "would be ignored (export another model to change it)")
    from samkit.backends.onnxruntime import OnnxPredictor

    predictor = OnnxPredictor(args.onnx, precision="int8" if args.int8 else "fp32",
                              threads=args.threads)
    return predictor, predictor.metadata.get("samkit_model", "")


def amg_params(args: argparse.Namespace, exported_from: str | None = None
               ) -> dict[str, Any]:
    """The AMG flags the user set, over the bundled model's recommended ones (if it is used,
    or ``exported_from`` names it: the ``samkit_model`` of exported files)."""
    from samkit.registry import MODELS, amg_defaults, resolve_name

    params = {k: getattr(args, k) for k in AMG_FLAGS if getattr(args, k, None) is not None}
    if exported_from is not None:
        if exported_from not in MODELS:
            return params
        name = exported_from
    elif args.checkpoint is None:
        name = resolve_name(args.model or "nano")
    else:
        return params
    recommended = {k: v for k, v in amg_defaults(name).items() if k not in params}
    if recommended:
        shown = ", ".join(f"{k}={v}" for k, v in recommended.items())
        print(f"automatic masks: {name}'s recommended {shown} (override with the flags)",
              file=sys.stderr)
    return {**recommended, **params}


def add_amg_flags(p: argparse.ArgumentParser) -> None:
    for name, (typ, help_text, default) in AMG_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                       help=f"{help_text} (default {default}; the bundled model may recommend "
                            "its own)")


def add_model_args(p: argparse.ArgumentParser, model_switches: bool = True) -> None:
    from samkit.registry import DEFAULT_ALIASES, MODELS

    names = ", ".join([*MODELS, *DEFAULT_ALIASES])
    p.add_argument("--checkpoint", type=Path, help="model weights (.pth or .safetensors)")
    p.add_argument(
        "--model",
        default=None,
        help=f"model type ({names}); inferred from --checkpoint if omitted; without "
             "--checkpoint the bundled nano model is used",
    )
    p.add_argument("--adapter", type=Path, default=None,
                   help="a fine-tuning result to apply (samkit finetune's adapter.safetensors; "
                        "it must match the model's weights)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    add_speed_args(p, model_switches)


def add_speed_args(p: argparse.ArgumentParser, model_switches: bool = True) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: one per core, at most the CPUs this process may "
                        "use)")
    if model_switches:
        p.add_argument("--fast", action="store_true",
                       help="fused attention: faster, masks at IoU >= 0.999 against the exact "
                            "default")
        p.add_argument("--compile", action="store_true",
                       help="torch.compile the encoder and decoder (slow first image; pays off "
                            "on many images; needs a C++ compiler on CPU)")


def save_png(path: Path, array: Any) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)
