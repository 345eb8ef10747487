"""``samkit`` command line: thin wrappers over the library (parse, call, write)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from samkit.checkpoint import CheckpointError

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
}


class CliError(Exception):
    """An error reported to the user as one line, without a traceback."""


def _parse_numbers(text: str, n: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CliError(f"{what} {text!r}: expected comma-separated numbers") from None
    if len(values) not in n:
        raise CliError(f"{what} {text!r}: expected {' or '.join(map(str, n))} numbers")
    return values


def _device(name: str | None) -> str:
    import torch

    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_model(args: argparse.Namespace) -> Any:
    from samkit.registry import MODELS, build_sam, resolve_name

    device = _device(args.device)
    if args.checkpoint is None:
        name = resolve_name(args.model or "nano")
        weights = MODELS[name].weights
        if weights is None or not weights.bundled:
            raise CliError(
                f"no --checkpoint given for {name}. samkit cannot download weights; get an "
                "official checkpoint (see `samkit models` for names and the download "
                "address) and pass --checkpoint PATH, or use the bundled --model nano"
            )
        print(f"using the bundled {name} model (trained on synthetic scenes; for real photos "
              "pass an official --checkpoint)", file=sys.stderr)
        model = build_sam(name, device=device)
    else:
        model = build_sam(args.model, checkpoint=args.checkpoint, device=device)
    if getattr(args, "fast", False) or getattr(args, "compile", False):
        from samkit.accel import optimize

        try:
            optimize(model, fused_attention=bool(getattr(args, "fast", False)),
                     compile=bool(getattr(args, "compile", False)))
        except RuntimeError as exc:  # no C++ compiler for torch.compile
            raise CliError(str(exc)) from exc
    return model


def _amg_params(args: argparse.Namespace) -> dict[str, Any]:
    """The AMG flags the user set, over the bundled model's recommended ones (if it is used)."""
    from samkit.registry import amg_defaults, resolve_name

    params = {k: getattr(args, k) for k in AMG_FLAGS if getattr(args, k, None) is not None}
    if args.checkpoint is None:
        name = resolve_name(args.model or "nano")
        recommended = {k: v for k, v in amg_defaults(name).items() if k not in params}
        if recommended:
            shown = ", ".join(f"{k}={v}" for k, v in recommended.items())
            print(f"automatic masks: {name}'s recommended {shown} (override with the flags)",
                  file=sys.stderr)
        params = {**recommended, **params}
    return params


def _add_amg_flags(p: argparse.ArgumentParser) -> None:
    for name, (typ, help_text, default) in AMG_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                       help=f"{help_text} (default {default}; the bundled model may recommend "
                            "its own)")


def _add_model_args(p: argparse.ArgumentParser, model_switches: bool = True) -> None:
    p.add_argument("--checkpoint", type=Path, help="model weights (.pth or .safetensors)")
    p.add_argument(
        "--model",
        default=None,
        help="model type (nano, vit_h, vit_l, vit_b, default); inferred from --checkpoint if "
             "omitted; without --checkpoint the bundled nano model is used",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    _add_speed_args(p, model_switches)


def _add_speed_args(p: argparse.ArgumentParser, model_switches: bool = True) -> None:
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


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


# -- segment -------------------------------------------------------------------------------
def cmd_segment(args: argparse.Namespace) -> int:
    from samkit.io.image import load_image
    from samkit.predictor import SamPredictor
    from samkit.viz import overlay

    points = [_parse_numbers(p, (2, 3), "--point") for p in args.point or []]
    box = _parse_numbers(args.box, (4,), "--box") if args.box else None
    if not points and box is None:
        raise CliError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    image = load_image(args.image)
    model = _load_model(args)
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
        _save_png(out / name, masks[i].astype(np.uint8) * 255)
        files.append({"file": name, "score": float(scores[i]), "area": int(masks[i].sum())})
    best = masks[order[0]]
    vis = overlay(image, [best], points=coords, labels=labels,
                  boxes=None if box is None else np.array([box]))
    _save_png(out / f"{stem}_overlay.png", vis)
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


# -- amg -----------------------------------------------------------------------------------
def cmd_amg(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from samkit.amg import SamAutomaticMaskGenerator
    from samkit.io.image import list_images, load_image

    images = list_images(args.input)
    if not images:
        raise CliError(f"no images found in {args.input}")
    model = _load_model(args)
    generator = SamAutomaticMaskGenerator(model, output_mode="coco_rle", **_amg_params(args))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    coco: dict[str, Any] = {
        "images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]
    }
    failed = []
    for image_id, path in enumerate(tqdm(images, desc="amg", unit="img"), start=1):
        try:
            image = load_image(path)
        except (OSError, ValueError) as exc:
            failed.append(f"{path}: {exc}")
            continue
        records = generator.generate(image)
        h, w = image.shape[:2]
        if args.format == "coco":
            coco["images"].append({"id": image_id, "file_name": path.name, "height": h,
                                   "width": w})
            for rec in records:
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                    "segmentation": rec["segmentation"], "area": rec["area"],
                    "bbox": rec["bbox"], "iscrowd": 0, "score": rec["predicted_iou"],
                    "stability_score": rec["stability_score"],
                    "point_coords": rec["point_coords"], "crop_box": rec["crop_box"],
                })
        elif args.format == "rle-json":
            (out / f"{path.stem}.json").write_text(json.dumps(records))
        else:
            from samkit.ops import decode_coco_rle

            folder = out / path.stem
            folder.mkdir(exist_ok=True)
            meta = []
            for i, rec in enumerate(records):
                _save_png(folder / f"{i}.png", decode_coco_rle(rec["segmentation"])
                          .astype(np.uint8) * 255)
                meta.append({k: v for k, v in rec.items() if k != "segmentation"} |
                            {"file": f"{i}.png"})
            (folder / "metadata.json").write_text(json.dumps(meta, indent=1))
    if args.format == "coco":
        (out / "annotations.json").write_text(json.dumps(coco))
    done = len(images) - len(failed)
    print(f"processed {done}/{len(images)} image(s); results in {out}/")
    for line in failed:
        print(f"skipped {line}", file=sys.stderr)
    return 1 if failed else 0


# -- models --------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from samkit.registry import DEFAULT_ALIASES, MODELS, build_sam_from_config

    rows = []
    for name, entry in MODELS.items():
        with torch.device("meta"):
            model = build_sam_from_config(entry.config)
        n_params = sum(p.numel() for p in model.parameters())
        w = entry.weights
        size = "-"
        if w is not None:
            n_bytes = w.bundled_path().stat().st_size if w.bundled and w.bundled_path().exists() \
                else w.size_bytes
            size = f"{n_bytes / 2**20:.1f} MiB" if n_bytes else "missing"
        filename = "-" if w is None else w.filename + (" (bundled)" if w.bundled else "")
        rows.append((name, f"{n_params / 1e6:.1f}M", filename, size, entry.description))
    header = ("model", "params", "checkpoint", "size", "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    aliases = ", ".join(f"{a} = {t}" for a, t in DEFAULT_ALIASES.items())
    print(f"\naliases: {aliases}")
    print("official checkpoints: https://dl.fbaipublicfiles.com/segment_anything/<checkpoint>")
    return 0


# -- data / train / eval / demo -------------------------------------------------------------
def cmd_data_synth(args: argparse.Namespace) -> int:
    from samkit.data.coco import write_synthetic_coco

    path = write_synthetic_coco(args.split, args.n, args.output, start=args.start)
    print(f"wrote {args.n} {args.split} scenes: {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from samkit.train.loop import TrainConfig, train

    cfg = TrainConfig(model=args.config)
    overrides = {k: getattr(args, k) for k in ("steps", "lr", "images_per_step",
                                                "targets_per_image", "click_rounds", "seed")}
    cfg = TrainConfig(**{**cfg.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    if args.time_limit is not None:
        cfg.time_limit_s = args.time_limit * 60
    summary = train(cfg, args.out, resume=not args.restart, device=args.device,
                    init_from=args.init, stop_after=args.stop_after)
    print(f"trained {summary['steps']} steps in {summary['wall_time_s']:.0f} s; weights: "
          f"{summary['weights']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from samkit.eval.evaluate import evaluate, format_table

    prompts = tuple(p.strip() for p in args.prompts.split(",") if p.strip())
    model = _load_model(args)
    summary = evaluate(model, args.coco_json, args.images, prompts=prompts,
                       max_images=args.max_images, auto_max_images=args.auto_max_images,
                       amg_kwargs=_amg_params(args) if "auto" in prompts else None)
    print(format_table(summary))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from samkit.demo import run_demo

    paths = run_demo(args.output, device=_device(args.device))
    for label, path in paths.items():
        print(f"{label}: {path}")
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    from samkit.studio.launch import make_demo_images, open_project, serve

    words = list(args.words)
    precompute = bool(words) and words[0] == "precompute"
    if precompute:
        words = words[1:]
    if len(words) > 1:
        raise CliError(f"expected one PROJECT_DIR, got {words}")
    if args.demo:
        project_dir = Path(words[0]) if words else Path("samkit-studio-demo")
        images = make_demo_images(project_dir / "images")
    elif not words:
        raise CliError("give a PROJECT_DIR (or --demo)")
    else:
        project_dir, images = Path(words[0]), args.images
    if images is not None and not Path(images).is_dir():
        raise CliError(f"--images {images} is not a directory")
    project, amg = open_project(project_dir, args.model, args.checkpoint, images,
                                device=_device(args.device))
    if precompute:
        from tqdm import tqdm

        n = project.worker.enqueue_missing()
        with tqdm(total=n, desc="embeddings", unit="img") as bar:
            while project.worker.status()["running"]:
                project.worker.wait(0.5)
                bar.update(project.worker.done - bar.n)
            bar.update(project.worker.done - bar.n)
        errors = project.worker.status()["errors"]
        print(f"cached {n - len(errors)} embedding(s) in {project.cache_dir}"
              + (f"; {len(errors)} failed: " + "; ".join(errors) if errors else ""))
        return 1 if errors else 0
    serve(project, args.host, args.port, args.token, amg, allow_hosts=args.allow_host or [])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samkit", description="Segment Anything: masks from clicks, boxes or nothing."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment one object from points and/or a box")
    seg.add_argument("image", type=Path, help="input image")
    seg.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                     help="a click in pixels; LABEL 1 = foreground (default), 0 = background; "
                          "repeat for several")
    seg.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box in pixels (XYXY)")
    seg.add_argument("--multimask", action="store_true",
                     help="write the 3 candidate masks, best first")
    seg.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    _add_model_args(seg)
    seg.set_defaults(func=cmd_segment)

    amg = sub.add_parser("amg", help="segment everything in an image or a directory of images")
    amg.add_argument("input", type=Path, help="image file or directory")
    amg.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    amg.add_argument("--format", choices=["coco", "png", "rle-json"], default="coco",
                     help="coco: one annotations.json; png: a folder of mask PNGs per image; "
                          "rle-json: one JSON of COCO-RLE records per image")
    _add_amg_flags(amg)
    _add_model_args(amg)
    amg.set_defaults(func=cmd_amg)

    models = sub.add_parser("models", help="list model variants and official checkpoints")
    models.set_defaults(func=cmd_models)

    demo = sub.add_parser("demo", help="run the bundled nano model on a bundled sample image")
    demo.add_argument("-o", "--output", type=Path, default=Path("samkit-demo"),
                      help="output directory (default ./samkit-demo)")
    demo.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    _add_speed_args(demo, model_switches=False)
    demo.set_defaults(func=cmd_demo)

    st = sub.add_parser(
        "studio", help="browser annotation server for a project directory",
        description="samkit studio PROJECT_DIR [--images DIR] | samkit studio --demo | "
                    "samkit studio precompute PROJECT_DIR")
    st.add_argument("words", nargs="*", metavar="[precompute] PROJECT_DIR",
                    help="the project directory (created if new); 'precompute' first fills "
                         "the embedding cache and exits")
    st.add_argument("--images", type=Path, default=None,
                    help="folder of images to annotate (default PROJECT_DIR/images)")
    st.add_argument("--demo", action="store_true",
                    help="make a project from bundled sample images (default dir "
                         "./samkit-studio-demo)")
    st.add_argument("--host", default="127.0.0.1",
                    help="listen address (default 127.0.0.1; others require a token)")
    st.add_argument("--port", type=int, default=8765)
    st.add_argument("--token", default=None,
                    help="access token (generated and printed for non-loopback hosts)")
    st.add_argument("--allow-host", action="append", metavar="NAME",
                    help="another host name the studio is reached by (a reverse proxy, a LAN "
                         "name); requests naming any other Host are refused")
    _add_model_args(st, model_switches=False)  # exact embeddings for its cache
    st.set_defaults(func=cmd_studio)

    data = sub.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="write synthetic scenes as a COCO dataset")
    synth.add_argument("--n", type=int, required=True, help="number of scenes")
    synth.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    synth.add_argument("--split", choices=["train", "val", "test"], default="test",
                       help="which stream of scenes; 'test' is the held-out split (default)")
    synth.add_argument("--start", type=int, default=0, help="first scene index")
    synth.set_defaults(func=cmd_data_synth)

    tr = sub.add_parser("train", help="train a model on synthetic scenes (resumes from --out)")
    tr.add_argument("--config", default="nano", help="registered model config (default nano)")
    tr.add_argument("--out", type=Path, required=True, help="run directory")
    tr.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1500)")
    tr.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    tr.add_argument("--images-per-step", type=int, default=None)
    tr.add_argument("--targets-per-image", type=int, default=None)
    tr.add_argument("--click-rounds", type=int, default=None)
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--time-limit", type=float, default=None, help="stop after this many minutes")
    tr.add_argument("--stop-after", type=int, default=None,
                    help="stop at this step (the schedule still spans --steps); resume later")
    tr.add_argument("--restart", action="store_true", help="ignore an existing last.pt")
    tr.add_argument("--init", type=Path, default=None,
                    help="start from these weights (e.g. src/samkit/weights/nano.safetensors)")
    tr.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    _add_speed_args(tr, model_switches=False)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="mIoU by prompt type on a COCO dataset")
    ev.add_argument("coco_json", type=Path, help="COCO instances JSON (RLE or polygons)")
    ev.add_argument("--images", type=Path, required=True, help="image directory")
    ev.add_argument("--prompts", default="point1,point5,box,box+point,auto",
                    help="comma-separated: point1, point5, box, box+point, auto")
    ev.add_argument("--max-images", type=int, default=None, help="evaluate the first N images")
    ev.add_argument("--auto-max-images", type=int, default=None,
                    help="run the (slow) automatic generator on the first N images only")
    ev.add_argument("-o", "--output", type=Path, default=None, help="write the JSON report here")
    _add_amg_flags(ev)
    _add_model_args(ev)
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from samkit.accel import set_threads

        set_threads(getattr(args, "threads", None))
        return int(args.func(args))
    except (CliError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"samkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
