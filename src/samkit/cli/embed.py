"""``samkit embed``: image embeddings for a folder, in the studio's cache layout; and the
``--engine`` arguments that ``samkit amg`` shares (folder-scale, resumable jobs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from samkit.cli.common import CliError, add_model_args, device


def add_engine_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default=default,
                   help="run as a resumable job: local (this process) or ray (Ray Data actors; "
                        "pip install 'samkit[ray]')" + ("" if default else
                        "; writes SA-1B JSON per image with a manifest instead of --format"))
    p.add_argument("--address", default=None,
                   help="ray: the cluster to join ('auto' for the one `ray start --head` made "
                        "here, ray://HOST:10001 for a remote one; default: a local Ray)")
    p.add_argument("--workers", type=int, default=None,
                   help="ray: actors, each with its own model and --threads torch threads "
                        "(default: as many as the cluster's CPUs / --threads, or its GPUs / "
                        "--gpus-per-worker); fewer for big models on little memory")
    p.add_argument("--gpus-per-worker", type=float, default=0,
                   help="ray: GPUs per actor (e.g. 1; the model then runs on cuda)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="images per batch (a killed run redoes at most the batches in flight; "
                        "default 4)")


def register(sub: argparse._SubParsersAction) -> None:
    emb = sub.add_parser("embed", help="image embeddings of a folder, written where the studio "
                                       "looks for them (resumable; local or Ray)")
    emb.add_argument("input", help="folder, glob ('photos/**/*.jpg'), or a .txt / .parquet "
                                   "manifest of image paths")
    emb.add_argument("-o", "--output", type=Path, required=True,
                     help="the studio project folder to fill (OUT/.samkit/embeddings/...)")
    add_engine_args(emb, "local")
    add_model_args(emb, model_switches=False)  # exact embeddings, as the studio computes them
    emb.set_defaults(func=lambda args: run_engine(args, "embed"))


def register_collect(sub: argparse._SubParsersAction) -> None:
    col = sub.add_parser("collect", help="gather the per-image results of 'samkit amg "
                                         "--engine' into one dataset (COCO, YOLO, ...)")
    col.add_argument("job", type=Path, help="the job's output folder (samkit amg --engine -o)")
    col.add_argument("-o", "--output", type=Path, required=True, help="dataset folder")
    col.add_argument("--format", default="coco",
                     choices=("coco", "coco-polygons", "yolo", "png", "labelme", "mask-pngs",
                              "rle-json"), help="dataset format (default coco)")
    col.set_defaults(func=run_collect)


def run_collect(args: argparse.Namespace) -> int:
    from samkit.engines import collect

    counts = collect(args.job, args.output, args.format)
    print(f"collected {counts['annotations']} mask(s) of {counts['images']} image(s) into "
          f"{args.output}/ ({args.format})")
    return 0


def run_engine(args: argparse.Namespace, task: str, amg: dict | None = None) -> int:
    """Run ``task`` over ``args.input`` with ``args.engine``; prints a summary; exit code 1 if
    some images failed."""
    from samkit.engines import JobSpec, run_job

    if (args.workers is not None and args.workers < 1) or args.batch_size < 1:
        raise CliError("--workers and --batch-size must be at least 1")
    if args.engine == "local" and (args.address or args.workers is not None
                                   or args.gpus_per_worker):
        raise CliError("--address, --workers and --gpus-per-worker are for --engine ray")
    dev = device(args.device) if not args.gpus_per_worker else "cuda"
    # Ray: one torch thread per actor unless asked (actors of one thread scale best on CPUs)
    threads = args.threads if args.engine == "local" else (args.threads or 1)
    spec = JobSpec(task=task, model=args.model,
                   checkpoint=None if args.checkpoint is None else str(args.checkpoint),
                   adapter=None if args.adapter is None else str(args.adapter),
                   amg=amg or {}, device=dev, threads=threads)
    summary = run_job(str(args.input), args.output, spec, engine=args.engine,
                      workers=args.workers, batch_size=args.batch_size,
                      gpus_per_worker=args.gpus_per_worker, address=args.address)
    rate = summary["images_per_s"]
    print(f"{task}: {summary['done']} done, {summary['failed']} failed, "
          f"{summary['skipped_done_before']} done before, of {summary['total']} image(s)"
          + (f"; {rate} images/s" if rate else "") + f"; results in {args.output}/")
    for f in summary["failures"]:
        print(f"failed {f['path']}: {f['error']}", file=sys.stderr)
    (Path(args.output) / "last_run.json").write_text(json.dumps(summary, indent=1))
    return 1 if summary["failed"] else 0
