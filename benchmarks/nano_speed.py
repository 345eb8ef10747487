"""Image-encoding time of the bundled nano against v1's architecture, on this CPU.

    python3 benchmarks/nano_speed.py [--repeats 10]

``SamPredictor.set_image`` on the bundled 512x384 sample image (what ``samkit demo`` does),
median of ``--repeats`` after one warm-up, for the bundled nano (v2, TinyViT) and for v1's
ViT architecture (``configs/nano_v1.json``, random weights: the time does not depend on
them). Writes ``benchmarks/results/nano_speed.json`` with the CPU flags and thread count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "nano_speed.json"


def set_image_seconds(model: torch.nn.Module, image, repeats: int) -> float:
    from samkit import SamPredictor

    predictor = SamPredictor(model)
    predictor.set_image(image)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        predictor.set_image(image)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from equal_time_summary import cpu

    from samkit import build_sam
    from samkit.accel import use_fused_attention
    from samkit.config import SamConfig
    from samkit.demo import sample_image

    image, _ = sample_image()
    v1 = build_sam(SamConfig.from_dict(json.loads((ROOT / "configs/nano_v1.json").read_text())))
    rows = {"nano v2 (bundled, TinyViT)": set_image_seconds(build_sam("nano"), image,
                                                            args.repeats),
            "nano v2, fused attention (--fast)": set_image_seconds(
                use_fused_attention(build_sam("nano")), image, args.repeats),
            "nano v1 architecture (ViT)": set_image_seconds(v1, image, args.repeats)}
    for name, s in rows.items():
        print(f"{name:<34} set_image {s * 1000:.0f} ms")
    RESULTS.write_text(json.dumps({"cpu": cpu(), "threads": torch.get_num_threads(),
                                   "image": list(image.shape), "set_image_s": rows},
                                  indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
