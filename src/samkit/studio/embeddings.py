"""The studio's embedding cache and the background worker that fills it.

Embeddings live on disk as ``<cache dir>/<image sha256>.pt`` (the cache directory is per
model id), written atomically, with the last few in memory. Keyed by content, a renamed image
keeps its cache and another model never serves a stale embedding.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


class EmbeddingCache:
    """Image embeddings by content hash, on disk and (the last ``memory_items``) in memory.

    Args:
        cache_dir: Folder for this model's ``<sha256>.pt`` files.
        compute: ``(H, W, 3)`` uint8 RGB -> ``(1, C, h, w)`` CPU embedding.
        memory_items: Embeddings kept in memory.
    """

    def __init__(self, cache_dir: Path, compute: Callable[[np.ndarray], torch.Tensor],
                 memory_items: int = 8) -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._compute = compute
        self._memory_items = memory_items
        self._mem: OrderedDict[str, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()
        self._guard = threading.Lock()

    def path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}.pt"

    def forget_memory(self) -> None:
        """Drop the in-memory copies (the disk cache stays): as after a restart."""
        with self._guard:
            self._mem.clear()

    def has(self, sha256: str) -> bool:
        """Whether the embedding of the image with this content hash is on disk."""
        return self.path(sha256).exists()

    def get(self, sha256: str, load_rgb: Callable[[], np.ndarray]
            ) -> tuple[torch.Tensor, tuple[int, int], bool]:
        """The embedding of the image with content hash ``sha256``, its ``(H, W)``, and whether
        it was computed now (``load_rgb`` reads the image only then)."""
        with self._guard:
            if sha256 in self._mem:
                self._mem.move_to_end(sha256)
                emb, size = self._mem[sha256]
                return emb, size, False
        path = self.path(sha256)
        computed = False
        if path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            emb, size = saved["embedding"], tuple(saved["original_size"])
        else:
            rgb = load_rgb()
            emb = self._compute(rgb)
            size = (rgb.shape[0], rgb.shape[1])
            tmp = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:6]}.tmp")
            torch.save({"embedding": emb, "original_size": list(size)}, tmp)
            tmp.replace(path)  # atomic: a crash never leaves a half-written cache entry
            computed = True
        with self._guard:
            self._mem[sha256] = (emb, size)
            while len(self._mem) > self._memory_items:
                self._mem.popitem(last=False)
        return emb, size, computed  # type: ignore[return-value]


class EmbeddingWorker:
    """A background thread that fills the embedding cache; progress is readable any time."""

    def __init__(self, embed: Callable[[int], Any], missing: Callable[[], list[int]]) -> None:
        self._embed = embed
        self._missing = missing
        self.queue: queue.Queue[int] = queue.Queue()
        self.total = self.done = 0
        self.errors: list[str] = []
        self.current: int | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def enqueue(self, image_ids: list[int]) -> None:
        with self._guard:
            for i in image_ids:
                self.queue.put(i)
                self.total += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="samkit-embeddings")
                self._thread.start()

    def enqueue_missing(self) -> int:
        """Queue every readable image whose embedding is not cached; returns how many."""
        missing = self._missing()
        if missing:
            self.enqueue(missing)
        return len(missing)

    def _run(self) -> None:
        while True:
            try:
                image_id = self.queue.get(timeout=0.5)
            except queue.Empty:
                return
            self.current = image_id
            try:
                self._embed(image_id)
            except Exception as exc:  # reported in status, never kills the worker
                self.errors.append(f"image {image_id}: {exc}")
            finally:
                self.done += 1
                self.current = None

    def status(self) -> dict[str, Any]:
        return {"total": self.total, "done": self.done, "current": self.current,
                "running": bool(self._thread and self._thread.is_alive()),
                "errors": self.errors[-20:]}

    def wait(self, timeout: float = 600) -> None:
        """Block until the queue is drained (for ``samkit studio precompute`` and tests)."""
        deadline = time.time() + timeout
        while self._thread is not None and self._thread.is_alive() and time.time() < deadline:
            self._thread.join(0.1)
