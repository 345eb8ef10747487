"""Where a training step's time goes, on this CPU, for v1's recipe and nano v2's.

    python3 benchmarks/train_profile.py [--steps 4]

Times the parts of ``samkit.train.loop``'s step (drawing the scenes, the image encoder's
forward, the prompt encoder + mask decoder + losses of the simulated interaction, the
backward pass, the optimizer) after one warm-up step, for each recipe below; prints images/s
and image-prompt pairs/s and writes ``benchmarks/results/train_profile.json`` with the CPU
flags. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "train_profile.json"


def recipes(bf16_ok: bool) -> dict[str, dict]:
    v2 = {"config": "configs/nano_v2.json", "images": 4}
    out = {
        "v1: ViT nano, 4 img x 8 targets, fp32": {"config": "configs/nano_v1.json",
                                                   "images": 4, "targets": 8, "bf16": False},
        "v2: TinyViT nano, 4 img x 8 targets, fp32": {**v2, "targets": 8, "bf16": False},
        "v2: TinyViT nano, 4 img x 16 targets, fp32": {**v2, "targets": 16, "bf16": False},
    }
    if bf16_ok:
        out["v2: TinyViT nano, 4 img x 16 targets, bf16"] = {**v2, "targets": 16, "bf16": True}
    return out


def profile(recipe: dict, steps: int) -> dict[str, float]:
    from samkit.config import SamConfig
    from samkit.registry import build_sam_from_config
    from samkit.train.loop import TrainConfig, init_weights, interactive_loss, scene_batch

    cfg = SamConfig.from_dict(json.loads((ROOT / recipe["config"]).read_text()))
    model = build_sam_from_config(cfg).train()
    init_weights(model, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tc = TrainConfig(images_per_step=recipe["images"], targets_per_image=recipe["targets"])
    parts = {"data": 0.0, "encoder_forward": 0.0, "decoder_and_loss_forward": 0.0,
             "backward": 0.0, "optimizer": 0.0}
    pairs = 0
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch = scene_batch("train", step * tc.images_per_step, tc.images_per_step,
                            cfg.image_size, tc.targets_per_image, np.random.default_rng(step))
        gen = torch.Generator().manual_seed(step)
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe["bf16"]):
            feats = model.image_encoder(model.preprocess(batch.images.float()))
            t2 = time.perf_counter()
            counts = torch.tensor([t.shape[0] for t in batch.targets])
            f = torch.repeat_interleave(feats, counts, dim=0)
            gt = torch.cat(batch.targets)
            use_box = torch.rand(gt.shape[0], generator=gen) < 0.5
            loss, _ = interactive_loss(model, f, gt, use_box, 1, cfg.image_size, gen, (1.0, 1.0))
        t3 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        if step == 0:
            continue  # warm-up
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            parts[key] += dt / steps
        pairs += gt.shape[0]
    total = sum(parts.values())
    return {"seconds_per_step": total, **{f"{k}_s": v for k, v in parts.items()},
            "images_per_s": recipe["images"] / total, "pairs_per_s": pairs / steps / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from equal_time_summary import cpu

    info = cpu()
    bf16_ok = any(f in info["flags"] for f in ("avx512_bf16", "amx_bf16"))
    rows = {}
    for name, recipe in recipes(bf16_ok).items():
        rows[name] = r = profile(recipe, args.steps)
        print(f"{name:<46} {r['seconds_per_step']:.2f} s/step  {r['images_per_s']:.2f} img/s  "
              f"{r['pairs_per_s']:.1f} pairs/s  (data {r['data_s']:.2f}, encoder "
              f"{r['encoder_forward_s']:.2f}, decoder+loss {r['decoder_and_loss_forward_s']:.2f}"
              f", backward {r['backward_s']:.2f}, optimizer {r['optimizer_s']:.2f})")
    RESULTS.write_text(json.dumps({"cpu": info, "threads": torch.get_num_threads(),
                                   "steps": args.steps, "recipes": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
