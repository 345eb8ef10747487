"""Deployment rows: ONNX Runtime fp32 / int8, PyTorch bf16 / dynamic int8 and the fast
generator, against the official code in the same run.

    python3 benchmarks/deploy.py                    # vit_b, vit_t and nano (~30 min, 2 cores)
    python3 benchmarks/deploy.py --models nano --quick

Per model (ViT-B and vit_t: lively random weights in the official layout; nano: its bundled
weights), on scikit-image's coffee photo at 1024 x 768:

* ``set_image_s``: median of ``--repeats`` alternating runs for the official code (ViT-B:
  segment-anything; vit_t: MobileSAM when installed), samkit exact, samkit bf16 (only where
  the CPU has native bf16 matmuls), samkit with ``accel.quantize_dynamic_int8``, ONNX Runtime
  fp32 and ONNX Runtime int8 (``samkit export onnx --quantize int8``, calibrated on
  ``--calibration-images`` synthetic scenes, default 8), both without ONNX Runtime's memory
  arena so that all variants of ViT-B fit in 24 GiB at once.
* ``click_s`` and ``boxes64_s``: one click, and 64 boxes in one call (ONNX: one decoder run).
* ``click_iou_vs_fp32``: for each lower-precision variant, the IoU of its click masks against
  samkit fp32's on a 4 x 3 grid of clicks (all three multimask outputs): median and min
  (two empty masks count as agreeing).
* ``amg``: the exact generator (samkit) and the official one, and ``strategy="fast"`` on the
  PyTorch model and on the ONNX Runtime int8 predictor: time and recall of the exact masks
  (IoU >= 0.9).

Ratios are official / variant (> 1: faster than the official code). The JSON goes to
``benchmarks/results/deploy.json`` (``deploy_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from compare_official import cpu_flags, matmul_peak, photo  # noqa: E402


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def mask_recall(ref: list[dict], out: list[dict], thresh: float = 0.9) -> float:
    """Share of ``ref``'s masks matched by one of ``out``'s at IoU >= ``thresh``."""
    from pycocotools import mask as mask_utils

    if not ref:
        return 1.0
    if not out:
        return 0.0

    def enc(masks: list[dict]) -> list:
        return [mask_utils.encode(np.asfortranarray(m["segmentation"].astype(np.uint8)))
                for m in masks]

    ious = mask_utils.iou(enc(ref), enc(out), [0] * len(out)).max(axis=1)
    return float((ious >= thresh).mean())


def official_model(name: str, state: dict | None):
    """(predictor, generator class) of the reference implementation of ``name`` loaded with
    ``state``, or (None, None): nano has none, MobileSAM may not be installed."""
    import warnings

    if state is None or name not in ("vit_b", "vit_t"):
        return None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "vit_b":
                from segment_anything import SamAutomaticMaskGenerator as Generator
                from segment_anything import SamPredictor, sam_model_registry
            else:
                from mobile_sam import SamAutomaticMaskGenerator as Generator
                from mobile_sam import SamPredictor, sam_model_registry
    except ImportError:
        return None, None
    model = sam_model_registry[name]()
    # MobileSAM's TinyViT keeps an unused classifier head (norm_head, head) that SAM
    # checkpoints do not hold; every other key must load.
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("image_encoder.") or "head" not in k
                         for k in missing):
        raise RuntimeError(f"reference model does not take the weights: {missing} {unexpected}")
    model.eval()  # after loading: MobileSAM's build calls .eval() first, caching zero biases
    return SamPredictor(model), Generator


def run_model(name: str, args: argparse.Namespace, bf16_ok: bool) -> dict:
    from samkit import SamAutomaticMaskGenerator, SamPredictor, build_sam
    from samkit.accel import quantize_dynamic_int8, set_precision
    from samkit.backends.onnxruntime import OnnxPredictor
    from samkit.export import export_onnx
    from samkit.export.quantize import quantize_int8, synthetic_calibration_images
    from samkit.registry import get_config
    from samkit.testing import lively_state_dict

    repeats = args.repeats or (1 if args.quick else 3)
    pps = 16 if args.quick else 32
    print(f"== {name}", flush=True)

    def build():
        m = build_sam(name)
        if name != "nano":
            m.load_state_dict(state)
        return m

    state = None if name == "nano" else lively_state_dict(get_config(name), seed=0)
    exact = build()
    preds: dict = {}
    official, official_amg = official_model(name, state)
    if official is not None:
        preds["official"] = official
    preds["samkit"] = SamPredictor(exact)
    if bf16_ok:
        preds["samkit_bf16"] = SamPredictor(set_precision(build(), "bf16"))
    preds["samkit_int8_dynamic"] = SamPredictor(quantize_dynamic_int8(build()))
    tmp = tempfile.mkdtemp(prefix=f"deploy_{name}_")
    t = time.perf_counter()
    export_onnx(exact, tmp, model_name=name)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    quantize_int8(tmp, synthetic_calibration_images(args.calibration_images,
                                                    get_config(name).image_size))
    quantize_s = time.perf_counter() - t
    # Without the arena: every variant of ViT-B stays loaded at once in 24 GiB.
    preds["onnx_fp32"] = OnnxPredictor(tmp, memory_arena=False)
    preds["onnx_int8"] = OnnxPredictor(tmp, precision="int8", memory_arena=False)
    image = photo()
    h, w = image.shape[:2]
    for p in preds.values():  # warm-up
        p.set_image(image)
    times: dict = {k: [] for k in preds}
    for _ in range(repeats):
        for k, p in preds.items():
            t = time.perf_counter()
            p.set_image(image)
            times[k].append(time.perf_counter() - t)
    set_image = {k: statistics.median(v) for k, v in times.items()}
    print("set_image", {k: round(v, 3) for k, v in set_image.items()}, flush=True)

    click = {"point_coords": np.array([[w // 2, h // 2]]), "point_labels": np.array([1])}
    click_s, boxes_s = {}, {}
    boxes = torch.tensor([[x, y, x + 200, y + 150] for x in range(0, 800, 100)
                          for y in range(0, 600, 75)], dtype=torch.float)
    for k, p in preds.items():
        p.predict(**click)
        click_s[k] = timed(lambda p=p: p.predict(**click), max(10, repeats))
        tb = p.transform.apply_boxes_torch(boxes, (h, w))
        p.predict_torch(None, None, boxes=tb, multimask_output=False)
        boxes_s[k] = timed(lambda p=p, tb=tb: p.predict_torch(None, None, boxes=tb,
                                                                multimask_output=False), repeats)
    print("click", {k: round(v * 1000, 1) for k, v in click_s.items()}, "ms; 64 boxes",
          {k: round(v, 3) for k, v in boxes_s.items()}, flush=True)

    clicks = [np.array([[x, y]]) for x in np.linspace(0.15, 0.85, 4) * w
              for y in np.linspace(0.2, 0.8, 3) * h]
    agree: dict = {k: [] for k in preds if k not in ("samkit", "official")}
    for pt in clicks:
        kw = {"point_coords": pt, "point_labels": np.array([1])}
        ref = preds["samkit"].predict(**kw)[0]
        for k in agree:
            out = preds[k].predict(**kw)[0]
            agree[k] += [float((a & b).sum() / (a | b).sum()) if (a | b).any() else 1.0
                         for a, b in zip(ref, out)]  # both empty: they agree
    click_iou = {k: {"median": float(np.median(v)), "min": float(np.min(v))}
                 for k, v in agree.items()}
    print("click IoU vs samkit fp32", {k: round(v["median"], 3) for k, v in click_iou.items()})

    amg: dict = {}
    if not args.skip_amg:
        # nano's recommended thresholds (chosen on validation scenes); the official defaults
        # for the random-weight models (lively weights are tuned around them).
        kw = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.9} if name == "nano" else {}
        gens = {"samkit": SamAutomaticMaskGenerator(exact, points_per_side=pps, **kw),
                "samkit_fast": SamAutomaticMaskGenerator(exact, points_per_side=pps,
                                                         strategy="fast", **kw),
                "onnx_int8_fast": SamAutomaticMaskGenerator(preds["onnx_int8"],
                                                            points_per_side=pps,
                                                            strategy="fast", **kw)}
        if official_amg is not None:
            gens["official"] = official_amg(official.model, points_per_side=pps, **kw)
        outs = {}
        for k, g in gens.items():
            t = time.perf_counter()
            outs[k] = g.generate(image)
            amg[k] = {"s": time.perf_counter() - t, "n_masks": len(outs[k])}
        for k in gens:
            if k != "samkit":
                amg[k]["recall_of_exact@0.9"] = mask_recall(outs["samkit"], outs[k])
        print("amg", amg, flush=True)

    row = {"set_image_s": set_image, "click_s": click_s, "boxes64_s": boxes_s,
           "click_iou_vs_fp32": click_iou, "amg": amg, "export_s": export_s,
           "quantize_s": quantize_s,
           "onnx_mib": {f.name: f.stat().st_size / 2**20 for f in sorted(Path(tmp).iterdir())}}
    base = "official" if "official" in preds else "samkit"
    row["ratios_vs"] = base
    row["set_image_ratio"] = {k: set_image[base] / v for k, v in set_image.items()}
    row["click_ratio"] = {k: click_s[base] / v for k, v in click_s.items()}
    if amg:
        ref_s = amg.get("official", amg["samkit"])["s"]
        row["amg_ratio"] = {k: ref_s / v["s"] for k, v in amg.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_b,vit_t,nano")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 16-point grid")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--skip-amg", action="store_true")
    parser.add_argument("--calibration-images", type=int, default=8,
                        help="synthetic scenes calibrating the int8 encoder (default 8)")
    args = parser.parse_args()
    peaks = {"fp32": matmul_peak(torch.float32)}
    bf16 = matmul_peak(torch.bfloat16, n=512, repeats=2)
    bf16_ok = bf16 >= 0.1 * peaks["fp32"]  # else a slow fallback path: skip the bf16 rows
    if bf16_ok:
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    import onnxruntime

    report: dict = {
        "machine": {"processor": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__, "cpu_flags": cpu_flags(),
                    "matmul_peak_gflops": peaks, "bf16_rows": bf16_ok},
        "settings": {"quick": args.quick, "repeats": args.repeats or (1 if args.quick else 3),
                     "calibration_images": args.calibration_images,
                     "onnxruntime_memory_arena": False},
        "models": {},
    }
    print(report["machine"], flush=True)
    out = ROOT / "results" / ("deploy_quick.json" if args.quick else "deploy.json")
    for name in args.models.split(","):
        report["models"][name] = run_model(name.strip(), args, bf16_ok)
        out.write_text(json.dumps(report, indent=2))  # after each model: a crash keeps rows
        print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
