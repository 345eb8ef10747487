"""Propagation J&F on held-out synthetic videos and volumes, against the true-box bound.

Writes ``--videos`` test-split videos (a third each: plain, occlusion, exit and re-entry) and
``--volumes`` CT-like volumes with ``samkit data synth``, then runs ``samkit eval-video`` on
them with the bundled nano model: propagation from a true box on each object's first visible
frame (for volumes, its largest slice), and the bound of the true box on every frame. Then
the other prompt modes without the bound. Every command is printed and recorded.

    python benchmarks/video_eval.py                    # 15 videos x 40 frames, 6 volumes
    python benchmarks/video_eval.py --videos 3 --volumes 1 --frames 8 --out /tmp/ve

Output: ``benchmarks/results/video_eval.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_domain import cpu_flags, sh

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=15)
    ap.add_argument("--volumes", type=int, default=6)
    ap.add_argument("--frames", type=int, default=None, help="frames per video (default 40)")
    ap.add_argument("--modes", default="box,box+mask,points",
                    help="prompt modes; the first is also run with the bound")
    ap.add_argument("--out", type=Path, default=Path("/tmp/samkit_video_eval"))
    ap.add_argument("--result", type=Path, default=ROOT / "benchmarks/results/video_eval.json")
    args = ap.parse_args()
    log: list[str] = []
    videos, volumes = args.out / "videos", args.out / "volumes"
    frames = ["--frames", str(args.frames)] if args.frames else []
    sh(["samkit", "data", "synth", "--domain", "videos", "--split", "test",
        "--n", str(args.videos), "-o", str(videos), *frames], log)
    sh(["samkit", "data", "synth", "--domain", "volumes", "--split", "test",
        "--n", str(args.volumes), "-o", str(volumes)], log)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for i, mode in enumerate(modes):
        for kind, data in (("videos", videos), ("volumes", volumes)):
            report = args.out / f"{kind}_{mode}.json"
            bound = [] if i == 0 else ["--no-bound"]
            seconds[f"{kind}/{mode}"] = sh(
                ["samkit", "eval-video", str(data), "--model", "nano", "--mode", mode,
                 *bound, "-o", str(report)], log)
            results[f"{kind}/{mode}"] = json.loads(report.read_text())["table"]
    doc = {
        "what": "J&F of samkit.video propagation (bundled nano) on held-out synthetic clips; "
                "bound = the true box given on every frame",
        "commands": log,
        "cpu": cpu_flags(),
        "seconds": seconds,
        "date": time.strftime("%Y-%m-%d"),
        "tables": results,
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {args.result}\n")
    print("| data | group | objects | mode | J | F | J&F | bound J&F | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, table in results.items():
        kind, mode = key.split("/")
        for group in sorted(table, key=lambda g: (g == "all", g)):
            r = table[group]
            bound = (f"{r['bound_JF']:.3f} | {r['ratio']:.3f}" if "bound_JF" in r
                     else "- | -")
            print(f"| {kind} | {group} | {int(r['objects'])} | {mode} | {r['J']:.3f} | "
                  f"{r['F']:.3f} | {r['JF']:.3f} | {bound} |")


if __name__ == "__main__":
    main()
