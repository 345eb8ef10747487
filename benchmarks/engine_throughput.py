"""Folder-scale jobs: the Ray engine against the local engine, and resuming a killed run.

Issue 16's targets, on this machine with nano:

- Ray engine throughput >= 0.9x the local engine's on 200 images (the engine's overhead
  <= 10%); startup overhead reported;
- after a kill at about 50%, the restart redoes at most one batch.

Each engine runs ``samkit.engines.run_job`` (what ``samkit amg --engine`` runs) on the same
200 held-out synthetic scenes (300 x 400) with nano's recommended generator settings and a
16 x 16 point grid (the default 32 x 32 is about 3x slower per image; the engines' overhead is per
image and per batch, not per point). Throughput is measured after the first batch (steady
state) and over the whole run; startup is the time to the first batch less that batch's work.

Resume: a child process runs the job and is killed (SIGKILL) once half the images are in the
manifest; a setup hook in every worker logs each image as it starts, so the work lost is
(images started before the kill) - (images written before it). The restart must finish
every image exactly once.

    python benchmarks/engine_throughput.py     # -> benchmarks/results/engine_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from finetune_domain import cpu_flags


def make_images(folder: Path, n: int) -> Path:
    from PIL import Image

    from samkit.data.synthetic import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = folder / f"scene_{i:04d}.png"
        if not p.exists():
            Image.fromarray(make_scene("test", i, size=(300, 400)).image).save(p)
    return folder


def spec_kwargs(points: int) -> dict:
    from samkit.registry import amg_defaults

    return {"task": "amg", "amg": {**amg_defaults("nano"), "points_per_side": points}}


def timed_run(images: Path, out: Path, engine: str, workers: int, threads: int,
              batch_size: int, points: int) -> dict:
    from samkit.engines import JobSpec, run_job

    spec = JobSpec(**spec_kwargs(points), threads=threads)
    stamps: list[float] = []
    t0 = time.perf_counter()
    summary = run_job(images, out, spec, engine=engine, workers=workers, batch_size=batch_size,
                      progress=False, on_record=lambda r: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    first = stamps[batch_size - 1] if len(stamps) >= batch_size else stamps[0]
    steady = (len(stamps) - batch_size) / (stamps[-1] - first)
    row = {"engine": engine, "workers": workers, "threads_per_worker": threads,
           "batch_size": batch_size, "images": summary["done"], "failed": summary["failed"],
           "wall_s": round(wall, 2), "images_per_s_total": round(summary["done"] / wall, 3),
           "images_per_s_steady": round(steady, 3), "startup_s": summary["startup_s"],
           "worker_s_per_image": summary["worker_seconds_per_image"]}
    print(json.dumps(row), flush=True)
    return row


CHILD = """
import json, os, sys, time
LOG = {log!r}

def hook():  # runs in each Ray worker (and here): log every image as it starts
    import os as _os
    import samkit.engines.batch as batch
    original = batch.Processor.process
    def process(self, path, data):
        with open(LOG, "a") as f:
            f.write(path + "\\n")
            f.flush()
            _os.fsync(f.fileno())
        return original(self, path, data)
    batch.Processor.process = process

hook()
from samkit.engines import JobSpec, run_job
if {engine!r} == "ray":
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={{"worker_process_setup_hook": hook}})
spec = JobSpec(**{spec!r}, threads={threads})
run_job({images!r}, {out!r}, spec, engine={engine!r}, workers={workers},
        batch_size={batch_size}, progress=False)
"""


def resume(images: Path, out: Path, engine: str, workers: int, threads: int, batch_size: int,
           points: int, n: int) -> dict:
    from samkit.engines import JobSpec, list_sources, run_job

    log = out.parent / f"{out.name}.started"
    child = CHILD.format(log=str(log), engine=engine, spec=spec_kwargs(points),
                         threads=threads, images=str(images), out=str(out), workers=workers,
                         batch_size=batch_size)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(child)],
                            start_new_session=True)
    manifest = out / "manifest.jsonl"
    while proc.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= n // 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and, for Ray, its workers
    proc.wait()
    if engine == "ray":
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
    done_before = len([x for x in manifest.read_text().splitlines() if x.strip()])
    started = log.read_text().splitlines()
    t0 = time.perf_counter()
    summary = run_job(images, out, JobSpec(**spec_kwargs(points), threads=threads),
                      engine=engine, workers=workers, batch_size=batch_size, progress=False)
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    once = sorted(r["path"] for r in rows) == list_sources(images)
    row = {"engine": engine, "workers": workers, "batch_size": batch_size,
           "written_before_kill": done_before, "started_before_kill": len(started),
           "redone": len(started) - done_before,
           "redone_batches": round((len(started) - done_before) / batch_size, 2),
           "restart_done": summary["done"], "restart_s": round(time.perf_counter() - t0, 2),
           "every_image_done_once": once}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("-o", "--output", type=Path,
                    default=Path(__file__).parent / "results" / "engine_throughput.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="samkit-engines-"))
    images = make_images(work / "images", args.images)
    b, pts = args.batch_size, args.points_per_side
    cpus = os.cpu_count() or 1
    runs = [timed_run(images, work / "local", "local", 1, cpus, b, pts)]
    from samkit.engines.ray_data import init_ray

    t = time.perf_counter()
    ray = init_ray(num_cpus=cpus)
    init_s = time.perf_counter() - t
    runs.append(timed_run(images, work / "ray1", "ray", 1, cpus, b, pts))  # one 2-thread actor
    runs.append(timed_run(images, work / "ray2", "ray", cpus, 1, b, pts))  # the CLI's default
    ray.shutdown()
    local = runs[0]
    for r in runs[1:]:
        r["ratio_steady"] = round(r["images_per_s_steady"] / local["images_per_s_steady"], 3)
        r["ratio_total"] = round(r["images_per_s_total"] / local["images_per_s_total"], 3)
        r["ratio_total_with_ray_init"] = round(
            r["images"] / (r["wall_s"] + init_s) / local["images_per_s_total"], 3)
    resumes = [resume(images, work / "resume_local", "local", 1, cpus, b, pts, args.images),
               resume(images, work / "resume_ray", "ray", cpus, 1, b, pts, args.images)]
    doc = {"what": f"run_job on {args.images} synthetic scenes (300x400), nano, "
                   f"points_per_side {pts}, batch {b}", "cpu": cpu_flags(), "cpus": cpus,
           "date": time.strftime("%Y-%m-%d"), "ray_init_s": round(init_s, 2), "runs": runs,
           "resume": resumes}
    args.output.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.output} (work files in {work})")


if __name__ == "__main__":
    main()
