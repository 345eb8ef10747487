"""The local engine: the job's :class:`~samkit.engines.batch.Processor` in this process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from samkit.engines.batch import JobSpec, Processor, read_batch


def run_local(paths: list[str], spec: JobSpec, batch_size: int = 4
              ) -> Iterator[dict[str, Any]]:
    """Process ``paths`` in batches of ``batch_size`` here; yields each batch's rows as the
    :class:`~samkit.engines.batch.Processor` returns them."""
    processor = Processor(spec)
    for start in range(0, len(paths), batch_size):
        yield processor(read_batch(paths[start:start + batch_size]))


__all__ = ["run_local"]
