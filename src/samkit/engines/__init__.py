"""Folder-scale jobs (automatic masks, embeddings) on this process or on Ray Data, resumable.

:mod:`~samkit.engines.batch` is the job (inputs, the work per image, outputs, manifest);
:mod:`~samkit.engines.local` and :mod:`~samkit.engines.ray_data` decide where it runs.
``samkit amg SOURCE -o OUT --engine local|ray`` and ``samkit embed`` call :func:`run_job`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samkit.engines.batch import (
    JobSpec,
    Processor,
    ResultWriter,
    collect,
    list_sources,
    output_relpath,
    summarize,
)
from samkit.errors import InputError

ENGINES = ("local", "ray")


def run_job(source: str | os.PathLike[str] | list[str], out: str | os.PathLike[str],
            spec: JobSpec, engine: str = "local", workers: int | None = None,
            batch_size: int = 4,
            gpus_per_worker: float = 0, address: str | None = None, progress: bool = True,
            on_record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``spec`` on every image of ``source`` not done yet in ``out``.

    Args:
        source: A folder, glob, ``.txt`` / ``.parquet`` manifest (:func:`list_sources`), or
            a list of image paths.
        out: The output folder (see :mod:`samkit.engines.batch` for its layout).
        spec: The task and model.
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data actors).
        workers: Ray actors (None: fill the cluster, see
            :func:`~samkit.engines.ray_data.run_ray`); the local engine has one.
        batch_size: Images per batch; a killed run redoes at most the batches in flight.
        gpus_per_worker: GPUs per Ray actor.
        address: Ray cluster address (``"auto"``, ``"ray://host:10001"``; None: local Ray).
        progress: Show a progress bar with images/s and the time left.
        on_record: Called with each image's manifest record as it is written.

    Returns:
        ``{"done", "failed", "skipped_done_before", "seconds", "images_per_s",
        "worker_seconds_per_image", "failures", "startup_s", "engine", "total"}``.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    if batch_size < 1 or (workers is not None and workers < 1):
        raise InputError("batch_size and workers must be at least 1")
    if engine == "local" and workers not in (None, 1):
        raise InputError("the local engine runs one worker (this process); use engine='ray' "
                         "for several")
    paths = sorted({str(Path(p).resolve()) for p in source}) if isinstance(source, list) \
        else list_sources(source)
    writer = ResultWriter(out, spec)
    records: list[dict[str, Any]] = []
    startup = None
    t0 = time.perf_counter()
    try:
        pending = writer.pending(paths)
        missing = [p for p in pending if not os.path.isfile(p)]
        if missing:  # failed rows at once: an engine would stop on a file it cannot open
            pending = [p for p in pending if p not in set(missing)]
            records.extend(writer.write(
                {"path": missing, "status": ["failed"] * len(missing),
                 "output": [""] * len(missing), "payload": [b""] * len(missing),
                 "error": [f"FileNotFoundError: no such file: {p}" for p in missing],
                 "seconds": [0.0] * len(missing)}))
        if engine == "local":
            from samkit.engines.local import run_local

            batches = run_local(pending, spec, batch_size)
        else:
            from samkit.engines.ray_data import run_ray

            batches = run_ray(pending, spec, workers, batch_size, gpus_per_worker,
                              address=address)
        from tqdm import tqdm

        with tqdm(total=len(pending), unit="img", desc=f"{spec.task} ({engine})",
                  disable=not progress or not pending) as bar:
            for rows in batches if pending else ():
                if startup is None:
                    startup = time.perf_counter() - t0 - sum(float(s) for s in rows["seconds"])
                for record in writer.write(rows):
                    records.append(record)
                    bar.update(1)
                    if on_record is not None:
                        on_record(record)
    finally:
        writer.close()
    summary = summarize(records, time.perf_counter() - t0,
                        len(paths) - len(pending) - len(missing))
    summary.update(engine=engine, total=len(paths),
                   startup_s=None if startup is None else round(startup, 2))
    return summary


__all__ = ["ENGINES", "JobSpec", "Processor", "ResultWriter", "collect", "list_sources",
           "output_relpath", "run_job"]
