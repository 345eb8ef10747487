"""``samkit track``: carry masks through a video's frames or a volume's slices."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from samkit.cli.common import (
    CliError,
    add_model_args,
    add_onnx_args,
    load_model_or_onnx,
    parse_numbers,
)

PROMPT_FLAGS = ("--object", "--frame", "--point", "--box")


class _InOrder(argparse.Action):
    """Keeps ``--object``, ``--frame``, ``--point`` and ``--box`` in the order given: each
    prompt belongs to the object and frame named before it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        seq = getattr(namespace, "prompt_seq", None) or []
        seq.append((option_string, values))
        namespace.prompt_seq = seq


def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser(
        "track", help="propagate masks through a video, a folder of frames or a volume",
        description="Prompt objects on one or more frames; their masks are carried forward "
                    "and backward through the other frames. Prompts apply to the --object and "
                    "--frame named before them: samkit track clip.mp4 -o out --frame 0 --box "
                    "10,20,200,220 --object 2 --frame 30 --point 400,300")
    tr.add_argument("input", type=Path,
                    help="video (.mp4, .mov, .avi, ...), folder of numbered frames, NIfTI "
                         "volume, DICOM series folder or file, multi-page TIFF")
    tr.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    tr.add_argument("--object", action=_InOrder, type=int, metavar="ID",
                    help="the object the following prompts belong to (an integer >= 1, its "
                         "value in the label maps; default 1)")
    tr.add_argument("--frame", action=_InOrder, type=int, metavar="N",
                    help="the frame (slice) the following prompts are on (0-based; default 0)")
    tr.add_argument("--point", action=_InOrder, metavar="X,Y[,LABEL]",
                    help="a click in pixels on that frame; LABEL 1 = foreground (default), "
                         "0 = background")
    tr.add_argument("--box", action=_InOrder, metavar="X0,Y0,X1,Y1",
                    help="a box in pixels on that frame (XYXY)")
    tr.add_argument("--prompts", type=Path, default=None,
                    help='prompts from a JSON file: [{"object": 1, "frame": 0, "box": [x0, y0, '
                         'x1, y1], "points": [[x, y], ...], "labels": [1, ...]}, ...]')
    tr.add_argument("--mode", default="box",
                    choices=["box", "box+mask", "points", "points+mask"],
                    help="what carries a mask to the next frame (default box: its box, moved "
                         "with the object)")
    tr.add_argument("--min-score", type=float, default=None,
                    help="an object is lost on a frame whose predicted IoU falls below this "
                         "(default 0.5)")
    tr.add_argument("--no-recover", action="store_true",
                    help="do not search for lost objects on later frames")
    tr.add_argument("--no-backward", action="store_true",
                    help="propagate forward only (frames before the first prompt stay empty)")
    tr.add_argument("--no-video", action="store_true", help="skip the overlay video")
    tr.add_argument("--window", default=None, metavar="C,W|PRESET|pLO,HI",
                    help="volumes: grey-level window before the encoder (as samkit segment)")
    add_onnx_args(tr)
    add_model_args(tr)
    tr.set_defaults(func=run)


def collect_prompts(args: argparse.Namespace) -> dict[int, dict[int, Any]]:
    """``{frame: {object: Prompt}}`` from the in-order flags and ``--prompts``."""
    from samkit.io.prompts import points_from_triples
    from samkit.video import Prompt

    raw: dict[tuple[int, int], dict[str, Any]] = {}
    obj, frame = 1, 0
    for flag, value in getattr(args, "prompt_seq", None) or []:
        if flag == "--object":
            if value < 1:
                raise CliError(f"--object {value}: object ids are integers >= 1")
            obj = value
        elif flag == "--frame":
            if value < 0:
                raise CliError(f"--frame {value}: frames are numbered from 0")
            frame = value
        elif flag == "--point":
            p = parse_numbers(value, (2, 3), "--point")
            raw.setdefault((frame, obj), {}).setdefault("points", []).append(
                [p[0], p[1], p[2] if len(p) == 3 else 1])
        else:
            entry = raw.setdefault((frame, obj), {})
            if "box" in entry:
                raise CliError(f"two --box for object {obj} on frame {frame}: give one box per "
                               "object and frame")
            entry["box"] = parse_numbers(value, (4,), "--box")
    if args.prompts is not None:
        for item in _read_prompt_file(args.prompts):
            try:
                key = (int(item.get("frame", 0)), int(item.get("object", 1)))
            except (ValueError, TypeError):
                raise CliError(f"--prompts {args.prompts}: frame and object must be integers, "
                               f"got {item}") from None
            if key[0] < 0 or key[1] < 1:
                raise CliError(f"--prompts {args.prompts}: frames count from 0 and objects "
                               f"from 1, got {item}")
            entry = raw.setdefault(key, {})
            pts = item.get("points") or []
            labels = item.get("labels") or [1] * len(pts)
            entry.setdefault("points", []).extend([[*p, lab] for p, lab in zip(pts, labels)])
            if item.get("box") is not None:
                entry["box"] = item["box"]
    if not raw:
        raise CliError("no prompts: give --point X,Y or --box X0,Y0,X1,Y1 (after --frame N "
                       "and --object ID), or --prompts FILE")
    prompts: dict[int, dict[int, Any]] = {}
    for (frame, obj), entry in sorted(raw.items()):
        try:
            checked = points_from_triples(entry["points"]) if entry.get("points") else None
            coords, labels = checked if checked is not None else (None, None)
            prompts.setdefault(frame, {})[obj] = Prompt(coords, labels, entry.get("box"))
        except (ValueError, TypeError) as exc:  # numbers that are not numbers, in a file
            raise CliError(f"object {obj} on frame {frame}: bad prompt ({exc})") from None
    return prompts


def _read_prompt_file(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise CliError(f"--prompts {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"--prompts {path}: not JSON ({exc})") from None
    if isinstance(data, dict):
        data = data.get("prompts", [])
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
        raise CliError(f"--prompts {path}: expected a list of objects like {{\"object\": 1, "
                       "\"frame\": 0, \"box\": [x0, y0, x1, y1]}")
    return data


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from samkit.io.medical import parse_window
    from samkit.io.video import open_frames
    from samkit.video import PropagationConfig, VideoPropagator
    from samkit.video.writers import TrackWriter

    prompts = collect_prompts(args)
    source = open_frames(args.input, parse_window(args.window))
    if args.window is not None and source.kind != "volume":
        raise CliError(f"--window is for volumes (DICOM, NIfTI, TIFF); {args.input} is a "
                       f"{'video' if source.kind == 'video' else 'folder of frames'}")
    for frame in prompts:
        if frame >= len(source):
            raise CliError(f"--frame {frame}: {args.input} has {len(source)} frame(s), "
                           f"0..{len(source) - 1}")
    size = source.size
    for frame, objs in prompts.items():
        for obj, prompt in objs.items():
            _warn_outside(prompt, size, frame, obj)
    model, _ = load_model_or_onnx(args)
    config = PropagationConfig(mode=args.mode, recover=not args.no_recover,
                               **({"min_score": args.min_score}
                                  if args.min_score is not None else {}))
    propagator = VideoPropagator(model, config)
    firsts = {}
    for frame in sorted(prompts):
        for obj in prompts[frame]:
            firsts.setdefault(obj, frame)
    backward = not args.no_backward
    total = len(source) - min(firsts.values()) + (max(firsts.values()) if backward else 0)
    writer = TrackWriter(args.output, source, sorted(firsts))
    with tqdm(total=total, unit="frame", desc="tracking", file=sys.stderr) as bar:
        for result in propagator.propagate(source, prompts, backward=backward):
            writer.add(result)
            bar.update(1)
            bar.set_postfix(lost=sum(s == "lost" for s in result.status.values()))
    outputs = writer.finish(video=not args.no_video, meta={
        "input": str(args.input), "mode": args.mode, "backward": backward,
        "prompts": {str(f): {str(o): _prompt_json(p) for o, p in objs.items()}
                    for f, objs in prompts.items()}})
    source.close()
    for obj, counts in writer.summary().items():
        print(f"object {obj}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    print("wrote " + ", ".join(str(p) for p in outputs))
    return 0


def _prompt_json(p: Any) -> dict[str, Any]:
    return {"points": None if p.points is None else p.points.tolist(),
            "labels": None if p.labels is None else p.labels.tolist(),
            "box": None if p.box is None else p.box.tolist()}


def _warn_outside(prompt: Any, size: tuple[int, int], frame: int, obj: int) -> None:
    from samkit.io.prompts import prompts_outside

    for warning in prompts_outside(prompt.points, prompt.box, size):
        print(f"samkit track: warning: object {obj}, frame {frame}: --{warning}",
              file=sys.stderr)


def register_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval-video",
                        help="J&F of propagation on clips written by samkit data synth "
                             "--domain videos|volumes")
    ev.add_argument("data", type=Path, help="folder of clip folders (each with meta.json)")
    ev.add_argument("--mode", default="box", choices=["box", "box+mask", "points",
                                                       "points+mask"])
    ev.add_argument("--limit", type=int, default=None, help="the first N clips only")
    ev.add_argument("--no-bound", action="store_true",
                    help="skip the true-box-on-every-frame bound (half the time)")
    ev.add_argument("-o", "--output", type=Path, default=None, help="write the JSON report")
    add_onnx_args(ev)
    add_model_args(ev)
    ev.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from samkit.eval.video import evaluate_dataset, format_video_table
    from samkit.video import PropagationConfig

    model, _ = load_model_or_onnx(args)
    report = evaluate_dataset(model, args.data, PropagationConfig(mode=args.mode),
                              bound=not args.no_bound, limit=args.limit)
    print(format_video_table(report["table"]))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.output}")
    return 0
