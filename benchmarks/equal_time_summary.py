"""Summarise the equal-time recipe comparison (``benchmarks/equal_time.sh``).

    python3 benchmarks/equal_time_summary.py [--root runs/equal_time]

For each variant: steps, wall time, images/s and image-prompt pairs/s of training (from the
per-step log; held-out quick evals included in the wall time, as each variant pays them),
and the validation curve (box and one-click mIoU on the same 16 validation scenes). Written to
``benchmarks/results/equal_time.json`` with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "equal_time.json"


def cpu() -> dict[str, object]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.*)", info)
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split()) if info else set()
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))
    return {"model": name.group(1) if name else platform.processor(), "flags": wanted}


def final_eval(run: Path, name: str) -> dict[str, float]:
    """The quick eval of the run's final weights, for logs written before ``samkit train``
    evaluated a run stopped between evals (the same eval it runs)."""
    import torch

    from samkit import build_sam
    from samkit.train.loop import quick_eval

    model = build_sam(checkpoint=run / f"{name}.safetensors")
    with torch.no_grad():
        return quick_eval(model, 16, model.config.image_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("runs/equal_time"))
    args = ap.parse_args()
    variants = {}
    for run in sorted(p for p in args.root.iterdir() if (p / "log.jsonl").exists()):
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        summary = json.loads((run / "summary.json").read_text())
        tc = summary["train_config"]
        steps = [r for r in rows if not r.get("eval_only")]
        t = steps[-1]["time_s"]
        pairs = sum(r["pairs"] for r in steps)
        curve = [{"step": r["step"], "time_s": r["time_s"], "val_miou_box": r["val_miou_box"],
                  "val_miou_point": r["val_miou_point"]} for r in rows if "val_miou_box" in r]
        variants[run.name] = {
            "steps": len(steps), "wall_s": t,
            "images_per_s": len(steps) * tc["images_per_step"] / t, "pairs_per_s": pairs / t,
            "images_per_step": tc["images_per_step"],
            "targets_per_image": tc["targets_per_image"], "bf16": tc["bf16"],
            "workers": summary.get("workers", 0), "model": tc["model"],
            # the run's own end-of-run eval when it logged one, else the same eval here
            "final": ({k: rows[-1][k] for k in ("val_miou_point", "val_miou_box")}
                      if "val_miou_box" in rows[-1] else final_eval(run, tc["model"])),
            "curve": curve,
        }
        v = variants[run.name]
        final = v["final"] or {}
        print(f"{run.name:<22} {v['steps']:>5} steps {t:>5.0f} s  {v['images_per_s']:.2f} img/s "
              f"{v['pairs_per_s']:.1f} pairs/s  val box {final.get('val_miou_box', 0):.3f} "
              f"point {final.get('val_miou_point', 0):.3f}")
    RESULTS.write_text(json.dumps({"cpu": cpu(), "variants": variants}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
