"""Streaming and speed of ``samkit track`` on 720p video.

1. Memory: ``samkit track`` (label maps, tracks.json and the overlay video, as a user runs
   it) on a ``--short``-frame and a ``--long``-frame 1280x720 H.264 video, each in its own
   process; the peak RSS of each is reported, and the growth between them (target <= 50 MB).
2. Speed: on the short video, frames/s of the encoder alone (decode + ``set_image`` per
   frame) against ``VideoPropagator.propagate`` with two objects (decode, encoder, prompts,
   checks, non-overlap), in this process, runs alternating (target: within 10%); and, as
   the encoder's speed drifts between runs on a shared machine, the time the propagation
   logic took within each propagation run (its total less its ``set_image`` calls and the
   decoding).

The videos show two objects moving over a photograph, drawn here and encoded with PyAV.

    python benchmarks/video_memory_fps.py                       # nano, 100 and 2000 frames
    python benchmarks/video_memory_fps.py --short 20 --long 60 --out /tmp/vm

Output: ``benchmarks/results/video_memory_fps.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_domain import cpu_flags

ROOT = Path(__file__).resolve().parent.parent
SIZE = (720, 1280)
BOXES = {1: (300, 250, 460, 410), 2: (800, 300, 940, 440)}  # XYXY on frame 0


def write_video(path: Path, n: int, fps: float = 25.0) -> Path:
    """``n`` frames: a disc and a square moving over a panned photograph."""
    from skimage import data as skdata

    from samkit.io.video import VideoWriter

    h, w = SIZE
    photo = cv2.resize(skdata.astronaut(), (w + 200, h + 100))
    with VideoWriter(path, fps) as writer:
        for i in range(n):
            t = i / fps
            x0 = int(100 + 80 * np.sin(t / 3))
            frame = np.ascontiguousarray(photo[50:50 + h, x0:x0 + w])
            cx, cy = 380 + 120 * np.sin(t), 330 + 60 * np.cos(t / 2)
            cv2.circle(frame, (int(cx), int(cy)), 80, (230, 40, 40), -1)
            sx, sy = int(870 + 100 * np.cos(t / 1.5)), int(370 + 80 * np.sin(t))
            cv2.rectangle(frame, (sx - 70, sy - 70), (sx + 70, sy + 70), (40, 200, 60), -1)
            writer.write(frame)
    return path


def track_peak_rss(video: Path, out: Path, model: str) -> dict:
    """Run samkit track in a child process; its peak RSS (MB) and wall time."""
    code = ("import resource, sys\nfrom samkit.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
            "sys.exit(rc)\n")
    args = [sys.executable, "-c", code, "track", str(video), "-o", str(out),
            "--model", model, "--frame", "0"]
    for obj, box in BOXES.items():
        args += ["--object", str(obj), "--box", ",".join(map(str, box))]
    print("$ samkit " + " ".join(args[3:]), flush=True)
    t = time.perf_counter()
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    peak = next(int(line.split()[1]) for line in done.stdout.splitlines()
                if line.startswith("PEAK_RSS_KB"))
    return {"peak_rss_mb": peak / 1024, "seconds": wall,
            "summary": [ln for ln in done.stdout.splitlines() if ln.startswith("object")]}


def speed(video: Path, model_name: str, repeats: int) -> dict:
    """Frames/s of the encoder alone and of propagation, alternating runs; and, within each
    propagation run, the time its ``set_image`` calls took, so the cost of the propagation
    logic is measured free of the machine's drift between runs."""
    import torch

    from samkit import SamPredictor, build_sam
    from samkit.io.video import open_frames
    from samkit.video import Prompt, VideoPropagator

    predictor = SamPredictor(build_sam(model_name))
    embed_seconds = [0.0]
    set_image = predictor.set_image

    def timed_set_image(image, image_format="RGB"):
        t0 = time.perf_counter()
        set_image(image, image_format)
        embed_seconds[0] += time.perf_counter() - t0

    prompts = {0: {obj: Prompt(box=box) for obj, box in BOXES.items()}}
    rows: dict[str, list[float]] = {"encoder": [], "propagate": [], "logic_ms": [],
                                    "split_ratio": [], "decode_ms": []}
    with torch.inference_mode():
        for _ in range(repeats):  # alternate, so drift in the machine's speed hits both
            source = open_frames(video)
            t = time.perf_counter()
            n = sum(1 for _ in source.frames())
            decode = (time.perf_counter() - t) / n
            t = time.perf_counter()
            for _, frame in source.frames():
                predictor.set_image(frame)
            rows["encoder"].append(n / (time.perf_counter() - t))
            embed_seconds[0] = 0.0
            predictor.set_image = timed_set_image
            t = time.perf_counter()
            n = sum(1 for _ in VideoPropagator(predictor).propagate(source, prompts))
            total = time.perf_counter() - t
            predictor.set_image = set_image
            rows["propagate"].append(n / total)
            logic = total - embed_seconds[0] - decode * n
            rows["logic_ms"].append(1000 * logic / n)
            rows["decode_ms"].append(1000 * decode)
            rows["split_ratio"].append((total - logic) / total)
            source.close()
    med = {k: float(np.median(v)) for k, v in rows.items()}
    return {"encoder_fps": med["encoder"], "propagate_fps": med["propagate"],
            "ratio": med["propagate"] / med["encoder"],
            "logic_ms_per_frame": med["logic_ms"], "decode_ms_per_frame": med["decode_ms"],
            "split_ratio": med["split_ratio"], "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", type=int, default=100)
    ap.add_argument("--long", type=int, default=2000)
    ap.add_argument("--model", default="nano")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-memory", action="store_true", help="the speed part only")
    ap.add_argument("--out", type=Path, default=Path("/tmp/samkit_video_memory"))
    ap.add_argument("--result", type=Path,
                    default=ROOT / "benchmarks/results/video_memory_fps.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    short = write_video(args.out / f"v{args.short}.mp4", args.short)
    long = None if args.skip_memory else write_video(args.out / f"v{args.long}.mp4", args.long)
    fps = speed(short, args.model, args.repeats)
    print(f"encoder alone {fps['encoder_fps']:.2f} frames/s, propagation "
          f"{fps['propagate_fps']:.2f} frames/s (ratio {fps['ratio']:.3f}); within the "
          f"propagation runs the propagation logic took {fps['logic_ms_per_frame']:.1f} ms a "
          f"frame (ratio {fps['split_ratio']:.3f})", flush=True)
    if long is None:
        doc = json.loads(args.result.read_text()) if args.result.is_file() else {}
        doc["speed"] = fps
        doc["speed_cpu"] = cpu_flags()
        args.result.write_text(json.dumps(doc, indent=1))
        print(f"updated the speed part of {args.result}")
        return
    mem = {n: track_peak_rss(v, args.out / f"track{n}", args.model)
           for n, v in ((args.short, short), (args.long, long))}
    growth = mem[args.long]["peak_rss_mb"] - mem[args.short]["peak_rss_mb"]
    print(f"peak RSS {mem[args.short]['peak_rss_mb']:.0f} MB ({args.short} frames) -> "
          f"{mem[args.long]['peak_rss_mb']:.0f} MB ({args.long} frames): growth {growth:.1f} MB")
    doc = {"what": "samkit track on 1280x720 H.264: peak RSS by video length; frames/s of "
                   "propagation against the encoder alone",
           "model": args.model, "cpu": cpu_flags(), "date": time.strftime("%Y-%m-%d"),
           "command": "python benchmarks/video_memory_fps.py "
                      f"--short {args.short} --long {args.long} --model {args.model}",
           "memory": {str(k): v for k, v in mem.items()}, "rss_growth_mb": growth,
           "speed": fps}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.result}")


if __name__ == "__main__":
    main()
