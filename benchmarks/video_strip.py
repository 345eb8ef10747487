"""The README's frame strip: ``samkit track`` on a held-out synthetic video.

Writes test video ``--index`` as an mp4, tracks its objects from their true boxes on the
first frame with the bundled nano model (the command is printed), and lays out every
``--step``-th frame of the overlay video it wrote, with the frame number and each object's
status from ``tracks.json``.

    python benchmarks/video_strip.py        # -> docs/images/track_strip.png
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=int, default=5, help="test video (5: exit and re-entry)")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--step", type=int, default=5)
    ap.add_argument("--width", type=int, default=300, help="width of each frame in the strip")
    ap.add_argument("--out", type=Path, default=Path("/tmp/samkit_strip"))
    ap.add_argument("--image", type=Path, default=ROOT / "docs/images/track_strip.png")
    args = ap.parse_args()
    from samkit.data.video import make_video
    from samkit.io.video import VideoWriter, open_frames

    clip = make_video("test", args.index, n_frames=args.frames)
    args.out.mkdir(parents=True, exist_ok=True)
    video = args.out / f"test_{args.index}.mp4"
    with VideoWriter(video, 10) as writer:
        for frame in clip.frames:
            writer.write(frame)
    cmd = ["samkit", "track", str(video), "-o", str(args.out / "track")]
    for obj in sorted(clip.prompt_frames):
        f = clip.prompt_frames[obj]
        ys, xs = np.nonzero(clip.labels[f] == obj)
        cmd += ["--object", str(obj), "--frame", str(f),
                "--box", f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)
    tracks = json.loads((args.out / "track" / "tracks.json").read_text())
    status = {a["object_id"]: a["status"] for a in tracks["annotations"]}
    overlay = open_frames(args.out / "track" / "overlay.mp4")
    tiles = []
    for i, frame in overlay.frames(0, None):
        if i % args.step:
            continue
        h = round(frame.shape[0] * args.width / frame.shape[1])
        tile = cv2.resize(frame, (args.width, h), interpolation=cv2.INTER_AREA)
        text = f"{i}: " + " ".join(f"{o}:{status[o][i][:4] if status[o][i] else '-'}"
                                  for o in sorted(status))
        cv2.rectangle(tile, (0, 0), (args.width, 18), (0, 0, 0), -1)
        cv2.putText(tile, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1,
                    cv2.LINE_AA)
        tiles.append(tile)
    rows = [np.concatenate(tiles[k:k + 4], 1) for k in range(0, len(tiles) - 3, 4)]
    args.image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.image, optimize=True)
    print(f"wrote {args.image}")


if __name__ == "__main__":
    main()
