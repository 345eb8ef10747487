"""Fine-tuning on a domain the bundled model never saw: synthetic 16-bit cells.

Writes ``--train`` training images and ``--test`` held-out images of the cells domain
(``samkit data synth --domain cells``), measures the base nano on the held-out images (one
click at the interior point with the top predicted IoU, and the tight box), then for each
method runs ``samkit finetune`` for at most ``--minutes`` on this CPU and measures again with
``--adapter``. Every command is run as a user would type it, and printed.

    python benchmarks/finetune_domain.py                 # 200 train / 60 test, 15 min each
    python benchmarks/finetune_domain.py --minutes 1 --train 20 --test 10 --out /tmp/ft

Output: ``benchmarks/results/finetune_cells.json`` (and a markdown table on stdout).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: label -> the method's ``samkit finetune`` arguments (defaults otherwise)
VARIANTS = {
    "decoder": ["--method", "decoder"],
    "lora": ["--method", "lora"],  # rank 4 on the encoder's attention
    "lora-enc-dec": ["--method", "lora", "--lora-targets", "encoder,decoder"],
    "adapter": ["--method", "adapter"],
    "prompt": ["--method", "prompt"],
}


def nano_sha256() -> str:
    """SHA-256 of the bundled nano weights (the base every method starts from)."""
    from samkit.registry import resolve_weights

    return hashlib.sha256(Path(resolve_weights("nano", None).checkpoint).read_bytes()).hexdigest()


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    keep = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2")))
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), "")
    return f"{name}; {' '.join(keep) or 'no AVX2/AVX-512'}"


def sh(args: list[str], log: list[str]) -> float:
    cmd = " ".join(shlex.quote(a) for a in args)
    print(f"$ {cmd}", flush=True)
    log.append(cmd)
    t = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - t


def evaluate(test: Path, out: Path, log: list[str], adapter: Path | None = None) -> dict:
    args = ["samkit", "eval", str(test / "annotations.json"), "--images", str(test / "images"),
            "--model", "nano", "--prompts", "point1,box", "-o", str(out)]
    if adapter is not None:
        args += ["--adapter", str(adapter)]
    sh(args, log)
    return json.loads(out.read_text())["miou"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("finetune-cells"), help="work folder")
    ap.add_argument("--train", type=int, default=200, help="training images (<= 200)")
    ap.add_argument("--test", type=int, default=60, help="held-out images")
    ap.add_argument("--minutes", type=float, default=15.0, help="time limit per method")
    ap.add_argument("--methods", default=",".join(VARIANTS),
                    help="labels of VARIANTS to run; rows of others already in --result are "
                         "kept when the base figures match")
    ap.add_argument("--result", type=Path,
                    default=ROOT / "benchmarks" / "results" / "finetune_cells.json")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    train, test = out / "train", out / "test"
    if not (train / "annotations.json").exists():
        sh(["samkit", "data", "synth", "--domain", "cells", "--split", "train", "--n",
            str(args.train), "-o", str(train)], commands)
    if not (test / "annotations.json").exists():
        sh(["samkit", "data", "synth", "--domain", "cells", "--split", "test", "--n",
            str(args.test), "-o", str(test)], commands)
    report: dict = {"cpu": cpu_flags(), "python": platform.python_version(),
                    "nano_sha256": nano_sha256(),  # which bundled weights were measured
                    "train_images": args.train, "test_images": args.test,
                    "minutes_per_method": args.minutes, "commands": commands}
    base = evaluate(test, out / "eval_base.json", commands)
    report["base"] = {"point1": base["point1"], "box": base["box"]}
    labels = args.methods.split(",")
    unknown = [m for m in labels if m not in VARIANTS]
    if unknown:
        ap.error(f"unknown --methods {unknown}; known: {', '.join(VARIANTS)}")
    rows = []
    if args.result.exists():  # keep the other variants' rows of the same setting
        old = json.loads(args.result.read_text())
        same = {k: old.get(k) for k in ("base", "train_images", "test_images",
                                        "minutes_per_method")} == \
            {k: report[k] for k in ("base", "train_images", "test_images", "minutes_per_method")}
        if same:
            rows = [r for r in old.get("methods", []) if r["method"] not in labels]
            report["commands"] = [c for c in old.get("commands", []) if c not in commands] + \
                commands
            commands = report["commands"]
    for method in labels:
        run = out / f"run_{method}"
        wall = sh(["samkit", "finetune", str(train / "annotations.json"), "--base", "nano",
                   *VARIANTS[method], "--time-limit", str(args.minutes), "--eval-every", "50",
                   "--val-fraction", "0.1", "-o", str(run), "--restart"], commands)
        summary = json.loads((run / "summary.json").read_text())
        after = evaluate(test, out / f"eval_{method}.json", commands,
                         adapter=run / "adapter.safetensors")
        row = {"method": method, "point1": after["point1"], "box": after["box"],
               "point1_gain": after["point1"] - base["point1"],
               "box_gain": after["box"] - base["box"],
               "trainable_parameters": summary["trainable_parameters"],
               "adapter_bytes": summary["adapter_bytes"], "steps": summary["steps"],
               "kept_step": summary["best_step"], "stopped_by": summary["stopped_by"],
               "train_wall_s": summary["wall_time_s"], "command_wall_s": round(wall, 1),
               "lr": summary["config"]["lr"]}
        rows.append(row)
        report["methods"] = rows
        args.result.write_text(json.dumps(report, indent=2) + "\n")  # after every method
    print(f"\ncells domain, held-out {args.test} images; CPU: {report['cpu']}")
    print("| method | trainable params | file | 1-point mIoU | box mIoU | steps (kept) | time |")
    print("|---|---|---|---|---|---|---|")
    print(f"| base nano | - | - | {base['point1']:.3f} | {base['box']:.3f} | - | - |")
    rows.sort(key=lambda r: list(VARIANTS).index(r["method"]))
    for r in rows:
        print(f"| {r['method']} | {r['trainable_parameters']:,} | "
              f"{r['adapter_bytes'] / 1e6:.2f} MB | {r['point1']:.3f} ({r['point1_gain']:+.3f}) "
              f"| {r['box']:.3f} ({r['box_gain']:+.3f}) | {r['steps']} ({r['kept_step']}) | "
              f"{r['train_wall_s'] / 60:.1f} min |")
    print(f"wrote {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
