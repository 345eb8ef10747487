"""``MaskData``: per-mask fields (tensors, arrays or lists) filtered and joined together."""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy
from typing import Any

import numpy as np
import torch


class MaskData:
    """A dict of equally long per-mask fields that are filtered and concatenated as one."""

    def __init__(self, **kwargs: Any) -> None:
        for v in kwargs.values():
            self._check(v)
        self._stats = dict(kwargs)

    @staticmethod
    def _check(value: Any) -> None:
        if not isinstance(value, (list, np.ndarray, torch.Tensor)):
            raise TypeError("MaskData fields must be lists, numpy arrays or torch tensors")

    def __setitem__(self, key: str, item: Any) -> None:
        self._check(item)
        self._stats[key] = item

    def __delitem__(self, key: str) -> None:
        del self._stats[key]

    def __getitem__(self, key: str) -> Any:
        return self._stats[key]

    def __contains__(self, key: str) -> bool:
        return key in self._stats

    def items(self) -> Any:
        return self._stats.items()

    def __len__(self) -> int:
        for v in self._stats.values():
            return len(v)
        return 0

    def filter(self, keep: torch.Tensor) -> None:
        """Keep the entries selected by a bool mask or an index tensor (in that order)."""
        for k, v in self._stats.items():
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                self._stats[k] = v[keep.to(v.device)]
            elif isinstance(v, np.ndarray):
                self._stats[k] = v[keep.detach().cpu().numpy()]
            elif keep.dtype == torch.bool:
                self._stats[k] = [a for a, flag in zip(v, keep.tolist()) if flag]
            else:
                self._stats[k] = [v[i] for i in keep.tolist()]

    def cat(self, other: MaskData) -> None:
        """Append ``other``'s entries field by field."""
        for k, v in other.items():
            if k not in self._stats or self._stats[k] is None:
                self._stats[k] = deepcopy(v)
            elif isinstance(v, torch.Tensor):
                self._stats[k] = torch.cat([self._stats[k], v], dim=0)
            elif isinstance(v, np.ndarray):
                self._stats[k] = np.concatenate([self._stats[k], v], axis=0)
            else:
                self._stats[k] = self._stats[k] + deepcopy(v)

    def to_numpy(self) -> None:
        """Move every tensor field to a numpy array on the CPU."""
        for k, v in self._stats.items():
            if isinstance(v, torch.Tensor):
                self._stats[k] = v.detach().cpu().numpy()


def batch_iterator(batch_size: int, *args: Any) -> Iterator[list[Any]]:
    """Yield aligned slices of ``batch_size`` from equally long sequences."""
    if not args or any(len(a) != len(args[0]) for a in args):
        raise ValueError("batch_iterator needs sequences of the same length")
    n = len(args[0])
    for start in range(0, n, batch_size):
        yield [a[start : start + batch_size] for a in args]
