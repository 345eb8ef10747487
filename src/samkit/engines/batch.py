"""The folder-scale job: what runs on each image, where its result goes, what is done.

A job is a :class:`JobSpec` (the task, the model and its settings) over a list of image
paths (:func:`list_sources`), writing into an output folder:

``OUT/job.json``
    The spec and its fingerprint: what decides the outputs (task, model name, weights hash,
    adapter hash, generator settings). Running again into the same folder with other
    settings is refused, so results of two settings are never mixed.
``OUT/manifest.jsonl``
    One line per finished image: ``{"path", "status": "done" | "failed", "output",
    "error", "seconds"}``, appended after the image's output is in place. A re-run skips the
    paths whose last line says ``done`` (and whose output exists) and retries the others.
``OUT/masks/<2 hex>/<stem>.<12 hex>.json`` (task ``amg``)
    SA-1B layout: ``{"image": {"image_id", "file_name", "path", "width", "height"},
    "annotations": [{"id", "segmentation" (COCO RLE), "bbox" (XYWH), "area",
    "predicted_iou", "stability_score", "crop_box" (XYWH), "point_coords"}]}``; the hex
    digits are the SHA-1 of the image's absolute path, so the output path is fixed by the
    input path alone.
``OUT/.samkit/embeddings/<model id>/<image sha256>.pt`` (task ``embed``)
    The studio's embedding cache (``samkit studio OUT --images DIR`` opens with every image
    cached).

Every output file is written to a temporary name and renamed, so a killed job leaves whole
files or none. The engines (:mod:`~samkit.engines.local`, :mod:`~samkit.engines.ray`) only
decide where :class:`Processor` runs; the driver writes with :class:`ResultWriter`, so both
engines write the same bytes.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import io
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samkit.errors import InputError
from samkit.io.formats import directory_sink

TASKS = ("amg", "embed")
#: Bumped when the bytes written for the same image and settings change.
OUTPUT_VERSION = 1


@dataclass(frozen=True)
class JobSpec:
    """What to run on every image.

    Attributes:
        task: ``"amg"`` (automatic masks, SA-1B JSON) or ``"embed"`` (image embeddings in
            the studio's cache layout).
        model: Registry name (None: inferred from the checkpoint, or the bundled nano).
        checkpoint: Weights file (None: the model's bundled weights).
        adapter: A fine-tuning result to apply.
        amg: Arguments of :class:`~samkit.SamAutomaticMaskGenerator` (task ``amg``).
        device: Torch device of each worker.
        threads: Torch threads per worker (None: torch's default).
    """

    task: str = "amg"
    model: str | None = None
    checkpoint: str | None = None
    adapter: str | None = None
    amg: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"task must be one of {TASKS}, got {self.task!r}")

    def weights(self) -> tuple[str | None, Path, bool]:
        """``(model name, weights path, bundled)`` as the registry resolves them."""
        from samkit.registry import resolve_weights

        choice = resolve_weights(self.model, self.checkpoint)
        assert choice.checkpoint is not None
        return choice.name, Path(choice.checkpoint), choice.bundled

    def model_id(self) -> str:
        """The studio's id of this model (its embedding cache folder)."""
        from samkit.studio.project import project_model_id

        name, path, bundled = self.weights()
        return project_model_id(name, path, bundled, self.adapter)

    def fingerprint(self) -> dict[str, Any]:
        """What decides the outputs (not where or how fast they are computed)."""
        from samkit.studio.project import file_sha256

        name, path, _ = self.weights()
        return {"task": self.task, "output_version": OUTPUT_VERSION, "model": name,
                "weights_sha256": file_sha256(path),
                "adapter_sha256": file_sha256(self.adapter) if self.adapter else None,
                "amg": dict(sorted(self.amg.items())) if self.task == "amg" else None}


# -- inputs ----------------------------------------------------------------------------------
def list_sources(source: str | os.PathLike[str]) -> list[str]:
    """Absolute image paths, sorted and without repeats, from:

    - a folder (searched recursively for image files);
    - a glob pattern (``"photos/**/*.jpg"``);
    - a text manifest (``.txt``: one path per line; relative paths are relative to the
      manifest's folder; blank lines and ``#`` comments skipped);
    - a Parquet manifest (``.parquet``: a ``path`` column).
    """
    from samkit.io.image import IMAGE_SUFFIXES

    text = str(source)
    p = Path(source)
    if p.is_dir():
        paths = [f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    elif p.is_file() and p.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in p.read_text().splitlines()]
        paths = [p.parent / ln for ln in lines if ln and not ln.startswith("#")]
    elif p.is_file() and p.suffix.lower() == ".parquet":
        from samkit._extras import require

        pq = require("pyarrow.parquet", "ray", "Reading a Parquet manifest")
        table = pq.read_table(p)
        if "path" not in table.column_names:
            raise InputError(f"{p} has no 'path' column (columns: {table.column_names})")
        paths = [p.parent / x for x in table.column("path").to_pylist() if x]
    elif p.is_file():
        paths = [p]
    elif glob.has_magic(text):
        paths = [Path(x) for x in glob.glob(text, recursive=True) if Path(x).is_file()]
    else:
        raise FileNotFoundError(f"no such folder, image, manifest or glob match: {source}")
    out = sorted({str(Path(x).resolve()) for x in paths})
    if not out:
        raise InputError(f"no images in {source}")
    return out


def output_relpath(path: str) -> str:
    """Where the ``amg`` result of the image at absolute ``path`` goes, under OUT."""
    digest = hashlib.sha1(path.encode()).hexdigest()
    return f"masks/{digest[:2]}/{Path(path).stem}.{digest[:12]}.json"


def image_id(path: str) -> int:
    """A stable integer id of an image path (the first 52 bits of its SHA-1)."""
    return int(hashlib.sha1(path.encode()).hexdigest()[:13], 16)


# -- the work on each image ------------------------------------------------------------------
class Processor:
    """Runs the job's task on batches of image files; a callable class, so Ray Data can
    keep one per actor (``map_batches(Processor, fn_constructor_kwargs={"spec": ...})``).

    A batch is ``{"path": (B,) str, "bytes": (B,) bytes}``, the rows of
    ``ray.data.read_binary_files(..., include_paths=True)``; the answer has one row per input:
    ``{"path", "status" ("done"/"failed"), "output" (relative path or ""), "payload"
    (bytes), "error" (str), "seconds" (float)}``. An image that cannot be decoded or
    processed becomes a failed row; it never fails the batch.
    """

    def __init__(self, spec: JobSpec) -> None:
        import torch

        from samkit.registry import build_sam

        if spec.threads:
            torch.set_num_threads(spec.threads)
        name, path, bundled = spec.weights()
        self.spec = spec
        self.model = build_sam(name if bundled else spec.model, checkpoint=path,
                               device=spec.device, adapter=spec.adapter).eval()
        self.model_id = spec.model_id() if spec.task == "embed" else ""
        if spec.task == "amg":
            from samkit.amg import SamAutomaticMaskGenerator

            self.generator = SamAutomaticMaskGenerator(self.model, output_mode="coco_rle",
                                                       **spec.amg)
        else:
            from samkit.predictor import SamPredictor

            self.predictor = SamPredictor(self.model)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {k: [] for k in ("path", "status", "output", "payload",
                                                      "error", "seconds")}
        for path, data in zip(batch["path"], batch["bytes"]):
            t0 = time.perf_counter()
            path = _local_path(str(path))
            try:
                output, payload = self.process(path, bytes(data))
                status, error = "done", ""
            except Exception as exc:  # one bad image is a failed row, never a failed job
                output, payload, status = "", b"", "failed"
                error = f"{type(exc).__name__}: {exc}"
            for key, value in (("path", path), ("status", status), ("output", output),
                               ("payload", payload), ("error", error),
                               ("seconds", round(time.perf_counter() - t0, 4))):
                rows[key].append(value)
        return rows

    def process(self, path: str, data: bytes) -> tuple[str, bytes]:
        """``(relative output path, file contents)`` for one image file's bytes."""
        import torch

        from samkit.io.image import load_image_bytes

        if not data:
            raise InputError(f"{path} is empty or could not be read")
        rgb = load_image_bytes(data, path)
        h, w = rgb.shape[:2]
        if self.spec.task == "embed":
            with torch.inference_mode():
                self.predictor.set_image(rgb)
                emb = self.predictor.get_image_embedding().cpu().clone()
            buf = io.BytesIO()
            torch.save({"embedding": emb, "original_size": [h, w]}, buf)
            digest = hashlib.sha256(data).hexdigest()
            return f".samkit/embeddings/{self.model_id}/{digest}.pt", buf.getvalue()
        records = self.generator.generate(rgb)
        annotations = [{"id": i + 1, "segmentation": r["segmentation"], "bbox": r["bbox"],
                        "area": r["area"], "predicted_iou": r["predicted_iou"],
                        "stability_score": r["stability_score"], "crop_box": r["crop_box"],
                        "point_coords": r["point_coords"]} for i, r in enumerate(records)]
        doc = {"image": {"image_id": image_id(path), "file_name": Path(path).name,
                         "path": path, "width": w, "height": h},
               "annotations": annotations}
        return output_relpath(path), json.dumps(doc, separators=(",", ":")).encode()


def _local_path(path: str) -> str:
    """Ray may hand back ``local://`` or scheme-less paths; samkit keys images by absolute
    local path."""
    return path.removeprefix("local://")


def read_batch(paths: list[str]) -> dict[str, list[Any]]:
    """``{"path", "bytes"}`` of files read here (the local engine's reader); a file that
    cannot be read gets empty bytes, which the processor reports as a failed image."""
    out: dict[str, list[Any]] = {"path": [], "bytes": []}
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError:
            data = b""
        out["path"].append(p)
        out["bytes"].append(data)
    return out


# -- the driver's side -----------------------------------------------------------------------
class ResultWriter:
    """Opens (or resumes) a job's output folder and writes results as they come.

    Args:
        out: The output folder.
        spec: The job; its fingerprint must match the one already in ``out`` (if any).

    Raises:
        InputError: ``out`` holds results of other settings.
    """

    def __init__(self, out: str | os.PathLike[str], spec: JobSpec) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.out / ".lock", "w")  # noqa: SIM115 (closed by close())
        try:  # one job at a time per folder (the lock goes with the process, even killed)
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise InputError(f"another samkit job is writing to {self.out}; wait for it or "
                             "write elsewhere") from None
        self.fingerprint = spec.fingerprint()
        self._put = directory_sink(self.out)  # atomic: a temporary file, then a rename
        job = self.out / "job.json"
        if job.exists():
            try:
                old = json.loads(job.read_text()).get("fingerprint")
            except (json.JSONDecodeError, OSError):
                old = None
            if old != self.fingerprint:
                self.close()
                diff = sorted(k for k in set(old or {}) | set(self.fingerprint)
                              if (old or {}).get(k) != self.fingerprint.get(k))
                raise InputError(f"{self.out} holds results of other settings ({', '.join(diff)}"
                                 " differ); write to a new folder, or delete it to start over")
        else:
            spec_doc = {k: v for k, v in asdict(spec).items() if k not in ("device", "threads")}
            self._put("job.json", json.dumps({"fingerprint": self.fingerprint,
                                                 "spec": spec_doc}, indent=1).encode())
        self.manifest = self.out / "manifest.jsonl"
        self.done = self._read_done()
        self._log: Any = open(self.manifest, "a")  # noqa: SIM115 (closed by close())

    def _read_done(self) -> set[str]:
        last: dict[str, dict[str, Any]] = {}
        if self.manifest.exists():
            for line in self.manifest.read_text().splitlines():
                try:
                    row = json.loads(line)
                    last[row["path"]] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a kill
        return {p for p, r in last.items() if r.get("status") == "done"
                and (self.out / r.get("output", "")).is_file()}

    def pending(self, paths: Iterable[str]) -> list[str]:
        """The paths not done yet, in order."""
        return [p for p in paths if p not in self.done]

    def write(self, rows: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Write one batch of :class:`Processor` rows (outputs first, then their manifest
        lines, flushed to disk); yields each row's manifest record."""
        records = []
        n = len(rows["path"])
        for i in range(n):
            status = str(rows["status"][i])
            if status == "done":
                self._put(str(rows["output"][i]), bytes(rows["payload"][i]))
            record = {"path": str(rows["path"][i]), "status": status,
                      "output": str(rows["output"][i]), "error": str(rows["error"][i]),
                      "seconds": float(rows["seconds"][i])}
            records.append(record)
        self._log.write("".join(json.dumps(r) + "\n" for r in records))
        self._log.flush()
        os.fsync(self._log.fileno())
        for r in records:
            if r["status"] == "done":
                self.done.add(r["path"])
            yield r

    def close(self) -> None:
        """Close the manifest and release the folder."""
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


def collect(out: str | os.PathLike[str], dest: str | os.PathLike[str], fmt: str = "coco"
            ) -> dict[str, int]:
    """Gather an ``amg`` job's per-image SA-1B files into one dataset (:data:`FORMATS
    <samkit.io.formats.FORMATS>`: one COCO file, YOLO labels, PNG label maps, ...).

    Images are named by their path relative to the folder all of them share, so images of the
    same name in different folders stay apart. Only images whose last manifest line is
    ``done`` are included.

    Returns:
        ``{"images", "annotations"}`` written.
    """
    from samkit.io.formats import DatasetWriter, ImageEntry, Instance, directory_sink

    root = Path(out)
    try:
        job = json.loads((root / "job.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise InputError(f"{root} is not the output folder of a samkit job (no job.json)") \
            from None
    if job.get("fingerprint", {}).get("task") != "amg":
        raise InputError(f"{root} holds {job.get('fingerprint', {}).get('task')!r} results; "
                         "only automatic-mask (amg) jobs can be collected")
    last: dict[str, dict[str, Any]] = {}
    for line in (root / "manifest.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
            last[row["path"]] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    done = sorted((p, r["output"]) for p, r in last.items() if r.get("status") == "done")
    base = os.path.commonpath([os.path.dirname(p) for p, _ in done]) if done else ""
    writer = DatasetWriter(fmt, directory_sink(dest),
                           info={"description": "samkit amg --engine", "job": job})
    n = 0
    for path, output in done:
        try:
            doc = json.loads((root / output).read_text())
        except (OSError, json.JSONDecodeError) as exc:  # nothing written: no partial dataset
            raise InputError(f"{root / output} (the result of {path}) is missing or unreadable "
                             f"({exc.__class__.__name__}); run the same job again to redo it, "
                             "then collect") from None
        im = doc["image"]
        instances = [Instance(rle=a["segmentation"], score=a["predicted_iou"],
                              extra={k: a[k] for k in ("area", "bbox", "predicted_iou",
                                                       "stability_score", "point_coords",
                                                       "crop_box")})
                     for a in doc["annotations"]]
        writer.add(ImageEntry(os.path.relpath(path, base), im["height"], im["width"],
                              instances, id=im["image_id"]))
        n += len(instances)
    writer.close()
    return {"images": len(done), "annotations": n}


def summarize(records: list[dict[str, Any]], seconds: float, skipped: int) -> dict[str, Any]:
    """Counts and throughput of a run."""
    done = [r for r in records if r["status"] == "done"]
    failed = [r for r in records if r["status"] == "failed"]
    return {"done": len(done), "failed": len(failed), "skipped_done_before": skipped,
            "seconds": round(seconds, 2),
            "images_per_s": round(len(records) / seconds, 3) if seconds > 0 else None,
            "worker_seconds_per_image": round(float(np.mean([r["seconds"] for r in records])), 4)
            if records else None,
            "failures": [{"path": r["path"], "error": r["error"]} for r in failed][:50]}


__all__ = ["OUTPUT_VERSION", "TASKS", "JobSpec", "Processor", "ResultWriter", "collect",
           "image_id",
           "list_sources", "output_relpath", "read_batch", "summarize"]
