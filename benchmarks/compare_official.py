"""samkit against the official segment-anything on the same random weights, in one process.

    python3 benchmarks/compare_official.py            # full run (about an hour on 2 cores)
    python3 benchmarks/compare_official.py --quick    # fewer repeats, smaller generator grid
    python3 benchmarks/compare_official.py --device cuda --skip-rss   # GPU rows

Both implementations get one random ViT-B checkpoint. Runs alternate (official, samkit, ...)
after a warm-up; each figure is the median of ``--repeats`` runs, printed as the ratio
official / samkit, with the outputs compared in the same run. The machine's matmul peak is
measured too. The JSON report goes to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent


def photo(h: int = 768, w: int = 1024) -> np.ndarray:
    """A real photograph (scikit-image's ``coffee``) resized to ``h x w``."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.coffee()).resize((w, h), Image.Resampling.BILINEAR))


DEVICE = torch.device("cpu")


def sync() -> None:
    """Wait for queued GPU work, so wall-clock times cover it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an ``n x n`` matmul on ``DEVICE``."""
    a = torch.randn(n, n, device=DEVICE).to(dtype)
    b = torch.randn(n, n, device=DEVICE).to(dtype)
    a @ b
    sync()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def matched_iou(ref: list[dict], out: list[dict]) -> dict:
    """For each reference mask, its best IoU among ``out``'s masks: min and mean (1.0 when
    both are empty), for the variants that are not bit-exact."""
    from pycocotools import mask as mask_utils

    if not ref or not out:
        return {"min": float(len(ref) == len(out)), "mean": float(len(ref) == len(out))}

    def enc(masks: list[dict]) -> list:
        return [mask_utils.encode(np.asfortranarray(m["segmentation"].astype(np.uint8)))
                for m in masks]

    ious = mask_utils.iou(enc(ref), enc(out), [0] * len(out)).max(axis=1)
    return {"min": float(ious.min()), "mean": float(ious.mean())}


def cpu_flags() -> list[str]:
    """The CPU's vector-extension flags (kernels round differently across them)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags.split() if f.startswith(("avx", "amx", "fma")))


def write_vit_h_checkpoint(path: Path) -> None:
    """Random ViT-H weights in the official layout, saved as an official-style ``.pth``."""
    code = f"""
import torch
from segment_anything import sam_model_registry
torch.manual_seed(0)
torch.save(sam_model_registry["vit_h"]().state_dict(), {str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def peak_rss_child(which: str, checkpoint: Path) -> float:
    """Peak RSS (GiB) of a fresh process that loads ``checkpoint`` (ViT-H) the way users do
    with ``which`` and runs ``set_image`` on the photo."""
    code = f"""
import resource, sys, torch, numpy as np
sys.path.insert(0, {str(ROOT)!r})
from compare_official import photo, build_pair_single
model, predictor = build_pair_single("vit_h", {which!r}, {str(checkpoint)!r})
predictor.set_image(photo())
# VmHWM: this process's own high-water mark (ru_maxrss would include the parent's RSS,
# which Linux carries across fork + exec).
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(int(hwm) / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure_rss() -> dict[str, float]:
    """Peak RSS (GiB) of ViT-H checkpoint loading + ``set_image``, each in a fresh process."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "sam_vit_h_random.pth"
        write_vit_h_checkpoint(ckpt)
        rss = {k: peak_rss_child(k, ckpt) for k in ("official", "samkit", "samkit_fused")}
    print("vit_h peak RSS (GiB)", rss, flush=True)
    return rss


def build_pair_single(name: str, which: str, checkpoint: str | None = None):
    """One model + predictor, loaded from ``checkpoint`` as each implementation does."""
    torch.manual_seed(0)
    if which == "official":
        from segment_anything import SamPredictor, sam_model_registry

        model = sam_model_registry[name](checkpoint=checkpoint)
        return model, SamPredictor(model)
    from samkit import SamPredictor, build_sam
    from samkit.accel import optimize

    model = build_sam(name, checkpoint=checkpoint)  # samkit's defaults (exact)
    if which == "samkit_fused":
        optimize(model, "fp32")  # fused attention, global blocks 16 query rows at a time
    return model, SamPredictor(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 16-point grid")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--skip-rss", action="store_true", help="skip the vit_h memory check")
    parser.add_argument("--rss-only", action="store_true",
                        help="only (re)measure the vit_h memory rows into the existing report")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the torch.compile row (it needs a C++ compiler)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (GPU rows; no RSS rows)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":
        args.skip_rss = True  # the RSS rows measure CPU memory
    repeats = args.repeats or (1 if args.quick else 3)
    if args.rss_only:
        path = ROOT / "results" / ("compare_official_quick.json" if args.quick
                                   else "compare_official.json")
        report = json.loads(path.read_text())
        report["vit_h_set_image_peak_rss_gib"] = measure_rss()
        report["vit_h_rss_measured_by"] = "compare_official.py --rss-only"
        rss = report["vit_h_set_image_peak_rss_gib"]
        for k in ("samkit", "samkit_fused"):
            report["ratios_official_over_samkit"][f"vit_h_peak_rss_{k}_over_official"] = (
                rss[k] / rss["official"])
        path.write_text(json.dumps(report, indent=2))
        print(f"wrote {path}")
        return
    pps = 16 if args.quick else 32

    from segment_anything import SamAutomaticMaskGenerator as OfficialAMG
    from segment_anything import SamPredictor as OfficialPredictor
    from segment_anything import sam_model_registry as official_registry

    from samkit import SamAutomaticMaskGenerator, SamPredictor, build_sam
    from samkit.accel import optimize
    from samkit.registry import get_config
    from samkit.testing import lively_state_dict

    # Random ViT-B weights in the official layout, made "lively" (varied masks and predicted
    # IoUs near the default thresholds) so that the outputs compared below are not trivial.
    state = lively_state_dict(get_config("vit_b"), seed=0)
    ref = official_registry["vit_b"]()
    ref.load_state_dict(state)
    plain = build_sam("vit_b")  # samkit's defaults (exact: same masks as the official code)
    plain.load_state_dict(state)
    fused = optimize(build_sam("vit_b"), "fp32")  # + fused attention (not bit-exact)
    fused.load_state_dict(state)
    compiled = optimize(build_sam("vit_b"), "fp32", compile=not args.no_compile)
    compiled.load_state_dict(state)
    low = optimize(build_sam("vit_b"), "bf16")
    low.load_state_dict(state)  # copies (and rounds) the fp32 weights into the bf16 encoder
    for m in (ref, plain, fused, compiled, low):
        m.to(DEVICE)
    image = photo()
    report: dict = {
        "machine": {"processor": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if DEVICE.type == "cuda"
                    else "cpu", "cpu_flags": cpu_flags()},
        "settings": {"repeats": repeats, "points_per_side": pps, "image": list(image.shape),
                     "weights": "samkit.testing.lively_state_dict(vit_b, seed=0)"},
        "variants": {"samkit": "defaults (exact)",
                     "samkit_fused": "accel.optimize(model, 'fp32'): + fused attention",
                     "samkit_compiled": "accel.optimize(model, 'fp32', compile=True): "
                                        "+ torch.compile (compiled during the warm-up)",
                     "samkit_bf16": "accel.optimize(model, 'bf16')"},
    }
    peaks = {"fp32": matmul_peak(torch.float32)}
    # Without native bf16 kernels (no AVX-512 BF16 / AMX) bf16 matmuls fall back to a path
    # ~100x slower than fp32; a small probe decides whether the bf16 rows can run at all.
    probe = matmul_peak(torch.bfloat16, n=512, repeats=2)
    if probe < 0.1 * peaks["fp32"]:
        report["bf16_skipped"] = f"bf16 matmul {probe:.1f} GFLOP/s vs fp32 {peaks['fp32']:.0f}"
        print(f"skipping bf16: {report['bf16_skipped']}")
        low = None
    else:
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    report["matmul_peak_gflops"] = peaks
    print("matmul peak (GFLOP/s):", {k: round(v) for k, v in peaks.items()})

    preds = {"official": OfficialPredictor(ref), "samkit": SamPredictor(plain),
             "samkit_fused": SamPredictor(fused)}
    if not args.no_compile:
        preds["samkit_compiled"] = SamPredictor(compiled)
    if low is not None:
        preds["samkit_bf16"] = SamPredictor(low)
    ours = [k for k in preds if k != "official"]
    warm = {}
    for key, p in preds.items():  # warm-up (compiles the compiled variant's encoder)
        t = time.perf_counter()
        p.set_image(image)
        sync()
        warm[key] = time.perf_counter() - t
    times = {}
    for _ in range(repeats):  # alternate implementations run by run
        for key, p in preds.items():
            t = time.perf_counter()
            p.set_image(image)
            sync()
            times.setdefault(key, []).append(time.perf_counter() - t)
    times = {k: statistics.median(v) for k, v in times.items()}
    print("set_image", {k: round(v, 2) for k, v in times.items()}, flush=True)
    emb = {k: p.get_image_embedding() for k, p in preds.items()}
    report["set_image_s"] = times
    report["first_set_image_s"] = warm
    report["embedding_max_abs_diff"] = {
        k: float((emb["official"] - emb[k]).abs().max()) for k in ours}
    encoder_gflop = 972.0  # ViT-B at 1024 x 1024 (issue #4)
    report["encoder_fraction_of_peak"] = {
        k: encoder_gflop / times[k] / peaks["bf16" if k.endswith("bf16") else "fp32"]
        for k in ours}
    click = {"point_coords": np.array([[500, 375]]), "point_labels": np.array([1])}
    predict = {}
    speed_rows = [k for k in ("official", "samkit", "samkit_fused", "samkit_compiled")
                  if k in preds]
    for key in speed_rows:
        preds[key].predict(**click)
        predict[key], _ = timed(lambda k=key: preds[k].predict(**click), max(10, repeats))
    report["predict_s"] = predict
    prompts = [np.array([[x, y]]) for x in (150, 400, 650, 900) for y in (150, 380, 600)]
    agree: dict = {k: {"identical": True, "ious": []} for k in ours}
    for pt in prompts:
        kw = {"point_coords": pt, "point_labels": np.array([1])}
        a = preds["official"].predict(**kw)[0]
        for k in ours:
            b = preds[k].predict(**kw)[0]
            agree[k]["identical"] &= bool(np.array_equal(a, b))
            agree[k]["ious"] += [mask_iou(x, y) for x, y in zip(a, b)]
    report["click_masks_vs_official"] = {
        k: {"identical": v["identical"], "min_iou": min(v["ious"]),
            "mean_iou": float(np.mean(v["ious"]))} for k, v in agree.items()}

    boxes = torch.tensor([[x, y, x + 200, y + 150] for x in range(0, 800, 100)
                          for y in range(0, 600, 75)], dtype=torch.float, device=DEVICE)
    batch = {}
    for key in speed_rows:
        p = preds[key]
        p.predict_torch(None, None, boxes=p.transform.apply_boxes_torch(boxes, image.shape[:2]),
                        multimask_output=False)  # warm-up (compiles the 64-box shapes)
        tb = p.transform.apply_boxes_torch(boxes, image.shape[:2])
        batch[key], _ = timed(lambda p=p, tb=tb: p.predict_torch(None, None, boxes=tb,
                                                                   multimask_output=False), repeats)
    report["predict_torch_64_boxes_s"] = batch
    print("predict", predict, "64 boxes", batch, flush=True)

    amg = {}
    models = {"official": ref, "samkit": plain, "samkit_fused": fused}
    if not args.no_compile:
        models["samkit_compiled"] = compiled
    if low is not None:
        models["samkit_bf16"] = low
    for label, kw in (("default", {}), ("no_thresholds", {"pred_iou_thresh": 0.0,
                                                          "stability_score_thresh": 0.0})):
        gens = {k: (OfficialAMG if k == "official" else SamAutomaticMaskGenerator)(
            m, points_per_side=pps, **kw) for k, m in models.items()}
        out: dict = {}
        amg[label] = {}
        for _ in range(repeats):
            for key, g in gens.items():
                t = time.perf_counter()
                out[key] = g.generate(image)
                amg[label].setdefault(key, []).append(time.perf_counter() - t)
        for key in gens:
            amg[label][key] = statistics.median(amg[label][key])
        a = out["official"]
        for key in ours:
            if key not in out:
                continue
            b = out[key]
            amg[label][f"identical_{key}"] = len(a) == len(b) and all(
                np.array_equal(x["segmentation"], y["segmentation"]) for x, y in zip(a, b))
            amg[label][f"matched_iou_{key}"] = matched_iou(a, b)
        amg[label]["n_masks"] = {k: len(v) for k, v in out.items()}
        print("amg", label, amg[label], flush=True)
    report["amg_s"] = amg

    if not args.skip_rss:
        report["vit_h_set_image_peak_rss_gib"] = measure_rss()

    ratios = {f"set_image_{k}": times["official"] / times[k] for k in ours}
    for k in speed_rows[1:]:
        ratios[f"predict_{k}"] = predict["official"] / predict[k]
        ratios[f"predict_torch_64_boxes_{k}"] = batch["official"] / batch[k]
    for label, row in amg.items():
        for k in ours:
            if k in row:
                ratios[f"amg_{label}_{k}"] = row["official"] / row[k]
    if "vit_h_set_image_peak_rss_gib" in report:
        rss = report["vit_h_set_image_peak_rss_gib"]
        for k in ("samkit", "samkit_fused"):
            ratios[f"vit_h_peak_rss_{k}_over_official"] = rss[k] / rss["official"]
    report["ratios_official_over_samkit"] = ratios
    for k, v in ratios.items():
        print(f"{k:<40}{v:8.2f}")
    print(json.dumps({k: report.get(k) for k in ("click_masks_vs_official",
                                                  "embedding_max_abs_diff")}, indent=1))
    out_dir = ROOT / "results"
    out_dir.mkdir(exist_ok=True)
    name = "compare_official_quick" if args.quick else "compare_official"
    name += "_cuda.json" if DEVICE.type == "cuda" else ".json"
    (out_dir / name).write_text(json.dumps(report, indent=2))
    print(f"wrote {out_dir / name}  (peak RSS of this process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB)")


if __name__ == "__main__":
    main()
