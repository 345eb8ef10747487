"""Peak memory of one ViT-B + LoRA training step on this CPU, and the adapter file sizes.

Each configuration runs in a fresh process (peak RSS, ``ru_maxrss``, only grows): ViT-B with
random weights in the official layout (no download needed: memory and file size do not depend
on the values), LoRA rank 4 on the image encoder's attention, one training step of
``samkit.train.loop.train_step`` on one 1024 x 1024 image with 8 targets (point and box
prompts, a corrective click), with and without gradient checkpointing. Also the size of
a rank-4 LoRA file for ViT-B and nano.

    python benchmarks/finetune_memory.py     # -> benchmarks/results/finetune_memory.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def one_step(model_name: str, checkpointing: bool) -> dict:
    import resource

    import numpy as np
    import torch

    from samkit.accel import use_gradient_checkpointing
    from samkit.registry import build_sam
    from samkit.train.adapters import AdapterConfig, apply_method, count_parameters
    from samkit.train.finetune import FinetuneConfig
    from samkit.train.loop import make_optimizer, train_step

    torch.manual_seed(0)
    model = build_sam(model_name)  # random weights unless bundled
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    apply_method(model, AdapterConfig(method="lora", rank=4))
    if checkpointing:
        use_gradient_checkpointing(model)
    model.eval()
    size = model.img_size
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (1, 3, size, size), dtype=np.uint8))
    gt = torch.zeros(8, size, size, dtype=torch.bool)
    for k in range(8):
        y, x = rng.integers(0, size - 200, 2)
        gt[k, y : y + 50 + 20 * k, x : x + 60 + 15 * k] = True
    cfg = FinetuneConfig(adapter=AdapterConfig(method="lora"))
    opt = make_optimizer(model, 1e-3, 0.01)
    t = time.perf_counter()
    train_step(model, opt, images, gt, torch.tensor([8]), cfg,
               torch.Generator().manual_seed(0), encoder_grad=True,
               sizes=torch.tensor([[size, size]]))
    trainable, total = count_parameters(model)
    return {"model": model_name, "gradient_checkpointing": checkpointing,
            "step_s": round(time.perf_counter() - t, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_after_build_mib": round(rss_model), "trainable_parameters": trainable,
            "total_parameters": total, "threads": torch.get_num_threads()}


def lora_file_bytes(model_name: str) -> int:
    from samkit.checkpoint import weights_fingerprint
    from samkit.registry import build_sam
    from samkit.train.adapters import AdapterConfig, apply_method, save_adapter

    model = build_sam(model_name)
    sha = weights_fingerprint(model)
    cfg = AdapterConfig(method="lora", rank=4)
    apply_method(model, cfg)
    with tempfile.TemporaryDirectory() as d:
        return save_adapter(model, cfg, Path(d) / "a.safetensors", sha, model_name).stat().st_size


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(one_step(sys.argv[2], sys.argv[3] == "1")))
        return 0
    from finetune_domain import cpu_flags

    rows = []
    for checkpointing in (True, False):
        out = subprocess.run([sys.executable, __file__, "--child", "vit_b",
                              "1" if checkpointing else "0"], capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"model": "vit_b", "gradient_checkpointing": checkpointing,
                         "error": out.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    report = {"cpu": cpu_flags(), "steps": rows,
              "lora_rank4_file_bytes": {m: lora_file_bytes(m) for m in ("vit_b", "nano")}}
    path = ROOT / "benchmarks" / "results" / "finetune_memory.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
