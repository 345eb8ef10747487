"""Threads: how many CPUs this process may use, and PyTorch's intra-op thread count."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from samkit.errors import InputError


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers
    started with ``--cpus``), at least 1."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = None
    try:  # cgroup v2
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if q != "max":
            quota = int(q) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if q > 0:
                quota = q / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        n = min(n, int(quota))  # a fractional CPU left over would only time-slice
    return max(1, n)


def set_threads(n: int | None = None) -> int:
    """Set PyTorch's intra-op threads and return the number set.

    Args:
        n: Threads to use; None: keep PyTorch's choice (one per physical core) but never more
            than :func:`available_cpus`. PyTorch counts the host's cores, so in a container
            limited to 2 CPUs on a 64-core host it would start 64 threads that fight over 2
            CPUs; the samkit command line calls this at start-up.
    """
    if n is not None and n < 1:
        raise InputError(f"threads must be >= 1, got {n}")
    target = n if n is not None else min(torch.get_num_threads(), available_cpus())
    if target != torch.get_num_threads():
        torch.set_num_threads(target)
    return target


__all__ = ["available_cpus", "set_threads"]
