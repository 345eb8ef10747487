"""The Ray engine: the job's :class:`~samkit.engines.batch.Processor` in a pool of Ray actors.

``ray.data.read_binary_files`` reads the image files (decoded inside the workers by samkit's
own loader, so EXIF orientation and 16-bit images are handled as everywhere else),
``map_batches`` runs a :class:`~samkit.engines.batch.Processor` per actor of an
``ActorPoolStrategy`` (the model is built once per actor), and the driver receives one row
per image and writes it (:class:`~samkit.engines.batch.ResultWriter`). On a cluster the image
paths must be readable from every node (shared storage); the output folder is written by the
driver only.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterator
from typing import Any

from samkit._extras import require
from samkit.engines.batch import JobSpec, Processor


def init_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connect to a Ray cluster (``address="auto"``: the one ``ray start --head`` made on this
    machine; ``"ray://host:10001"``: a remote one) or start a local one with ``num_cpus``."""
    ray = require("ray", "ray", "The Ray engine (--engine ray)")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # Ray's C++ notices
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.ERROR}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # samkit's own bar counts images
    ctx.print_on_execution_start = False
    return ray


def run_ray(paths: list[str], spec: JobSpec, workers: int | None = None, batch_size: int = 4,
            gpus_per_worker: float = 0, cpus_per_worker: float | None = None,
            address: str | None = None) -> Iterator[dict[str, Any]]:
    """Process ``paths`` on Ray; yields the rows of each finished batch.

    Args:
        paths: Absolute image paths.
        spec: The job (its ``threads`` are the torch threads of each actor).
        workers: Actors in the pool (one model each). None fills the cluster: its GPUs /
            ``gpus_per_worker``, or its CPUs / ``cpus_per_worker``. On CPUs, actors of one
            thread each beat fewer actors of several threads: a multi-threaded actor stalls
            whenever another process (the driver, Ray's own) takes one of its cores.
        batch_size: Images per ``map_batches`` call.
        gpus_per_worker: GPUs each actor reserves (0: CPU; with a GPU set ``spec.device``
            to ``"cuda"``).
        cpus_per_worker: CPUs each actor reserves (default: ``spec.threads`` or 1).
        address: The cluster to join (None: a local Ray for this process).
    """
    ray = init_ray(address, None if address else max(workers or 1, os.cpu_count() or 1))
    cpus = cpus_per_worker or spec.threads or 1
    if workers is None:
        res = ray.cluster_resources()
        workers = max(1, int(res.get("GPU", 0) // gpus_per_worker if gpus_per_worker
                             else res.get("CPU", 1) // cpus))
    # Reading is I/O: it reserves no CPU, so actors holding every CPU cannot starve it, and
    # runs as a few tasks at a time (free of CPU, Ray would start a process per block at once).
    read = ray.data.read_binary_files
    no_cpu = {"num_cpus": 0} if "num_cpus" in inspect.signature(read).parameters \
        else {"ray_remote_args": {"num_cpus": 0}}  # Ray before 2.5x
    ds = read(paths, include_paths=True, override_num_blocks=max(1, len(paths) // batch_size),
              concurrency=max(2, workers), **no_cpu)
    # One batch at a time per actor: a killed run loses at most one batch per worker.
    pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1)
    ds = ds.map_batches(
        Processor, fn_constructor_kwargs={"spec": spec}, batch_size=batch_size,
        batch_format="numpy", compute=pool,
        num_cpus=cpus, num_gpus=gpus_per_worker or None)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


__all__ = ["init_ray", "run_ray"]
