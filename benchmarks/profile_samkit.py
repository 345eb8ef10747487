"""Where samkit's time goes: the profile behind the speed targets that are out of reach.

    python3 benchmarks/profile_samkit.py            # about 2 minutes on 2 cores

ViT-B with the same lively random weights as ``compare_official.py``, a 1024x768 photo:

- the matmul peak of this machine and the encoder's share of it (exact and fused);
- the mask decoder per prompt (one batch of 64 single-point prompts, as the automatic
  generator runs it), split into the two-way transformer, the output upscaling (transposed
  convolutions, LayerNorm, GELU) and the mask product, with the FLOPs of each and the
  fraction of peak they reach;
- the automatic generator (16x16 points, default thresholds) split into ``set_image``, the
  decoder and the post-processing, with the top operators by self CPU time.

Writes ``benchmarks/results/profile_samkit.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from compare_official import matmul_peak, photo  # noqa: E402


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    from torch.profiler import ProfilerActivity, profile

    from samkit import SamAutomaticMaskGenerator, SamPredictor, build_sam
    from samkit.accel import use_fused_attention
    from samkit.registry import get_config
    from samkit.testing import lively_state_dict

    torch.set_grad_enabled(False)
    cfg = get_config("vit_b")
    state = lively_state_dict(cfg, seed=0)
    model = build_sam("vit_b")
    model.load_state_dict(state)
    image = photo()
    peak = matmul_peak(torch.float32)
    report: dict = {"matmul_peak_gflops_fp32": peak, "threads": torch.get_num_threads()}

    pred = SamPredictor(model)
    pred.set_image(image)
    encoder_gflop = 972.0
    t_exact = best_of(lambda: pred.set_image(image), 2)
    use_fused_attention(model, True, 16)
    t_fused = best_of(lambda: pred.set_image(image), 2)
    use_fused_attention(model, False)
    pred.set_image(image)
    report["encoder"] = {
        "gflop": encoder_gflop,
        "exact_s": t_exact, "exact_fraction_of_peak": encoder_gflop / t_exact / peak,
        "fused_s": t_fused, "fused_fraction_of_peak": encoder_gflop / t_fused / peak,
    }

    # The decoder on a batch of 64 single-point prompts, stage by stage.
    dec = model.mask_decoder
    gen = torch.Generator().manual_seed(1)
    pts = torch.rand(64, 1, 2, generator=gen) * 1024
    labels = torch.ones(64, 1, dtype=torch.int)
    sparse, dense = model.prompt_encoder(points=(pts, labels), boxes=None, masks=None)
    emb, pe = pred.get_image_embedding(), model.prompt_encoder.get_dense_pe()
    whole = best_of(lambda: dec(emb, pe, sparse, dense[:1], True)) / 64
    chunk = dec.prompt_chunk or 64
    side = dec.image_side(emb, pe, dense[:1])  # the shared image side, once per image
    t_chunk = best_of(lambda: dec.predict_masks_shared(side, sparse[:chunk])) / chunk
    c, h, w = emb.shape[1:]
    grid = torch.randn(chunk, c, h, w, generator=gen).contiguous(
        memory_format=torch.channels_last)  # the token-major layout the decoder upscales
    upscaled = dec.output_upscaling(grid)
    t_up = best_of(lambda: dec.output_upscaling(grid)) / chunk
    hyper = torch.randn(chunk, dec.num_mask_tokens, upscaled.shape[1])
    t_mask = best_of(lambda: hyper @ upscaled.reshape(chunk, upscaled.shape[1], -1)) / chunk
    t_tr = t_chunk - t_up - t_mask  # the transformer: the rest of a chunk's time
    d, n = c, h * w
    i = d // 2  # attention_downsample_rate 2
    # Per prompt, with the first block's image side shared: block 1 image->token output
    # projection; block 2 k, v, q and output projections; final attention k and v.
    tr_gflop = 2 * n * d * i * (1 + 4 + 2) / 1e9
    up_macs = (2 * h) * (2 * w) * (d // 4) * d + (4 * h) * (4 * w) * (d // 8) * (d // 4)
    up_gflop = 2 * up_macs / 1e9
    report["decoder_per_prompt"] = {
        "batch": 64, "chunk": chunk, "total_ms": whole * 1e3,
        "transformer_ms": t_tr * 1e3, "transformer_gflop": tr_gflop,
        "transformer_fraction_of_peak": tr_gflop / t_tr / peak,
        "upscaling_ms": t_up * 1e3, "upscaling_gflop": up_gflop,
        "upscaling_fraction_of_peak": up_gflop / t_up / peak,
        "mask_product_ms": t_mask * 1e3,
        "ideal_ms_at_peak": (tr_gflop + up_gflop) / peak * 1e3,
    }

    # The generator: set_image, decoder, post-processing.
    amg = SamAutomaticMaskGenerator(model, points_per_side=16)
    amg.generate(image)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        masks = amg.generate(image)
        total = time.perf_counter() - t
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    top = [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count}
           for e in rows[:15]]
    n_prompts = 16 * 16
    report["amg_16x16"] = {
        "total_s_under_profiler": total, "masks": len(masks),
        "set_image_s": t_exact, "decoder_s_estimate": whole * n_prompts,
        "postprocessing_s_estimate": total - t_exact - whole * n_prompts,
        "top_ops_self_cpu": top,
    }
    report["median_note"] = "times are the best of 2-3 runs; the profiler adds some overhead"
    out = ROOT / "results" / "profile_samkit.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "amg_16x16"}, indent=1))
    print({k: v for k, v in report["amg_16x16"].items() if k != "top_ops_self_cpu"})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
