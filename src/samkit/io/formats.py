"""Mask dataset formats, read and written in one place (CLI, studio and eval all use it).

Formats (:data:`FORMATS`):

- ``coco``: one ``annotations.json`` with COCO compressed RLE segmentations (lossless).
- ``coco_polygons``: the same with polygon segmentations.
- ``yolo``: ``labels/<stem>.txt`` YOLO segmentation lines (class index, then normalised XY
  pairs) and ``classes.txt``.
- ``png``: ``instances/<stem>.png`` (uint16 instance ids, 0 = background) and
  ``semantic/<stem>.png`` (uint16 category ids), with ``classes.json``.
- ``labelme``: ``<stem>.json`` in LabelMe 5 with one ``mask`` shape per instance.
- ``mask_pngs``: ``<stem>/<i>.png`` one 0/255 PNG per mask plus ``<stem>/metadata.json``
  (overlapping masks stay whole: what the automatic generator makes).
- ``rle_json``: ``<stem>.json``, a list of records with COCO RLE ``segmentation``.

Coordinates: boxes are XYWH pixels; polygons are ``[x0, y0, x1, y1, ...]`` in pixel units,
(0, 0) the top-left corner of the top-left pixel; YOLO normalises by width / height. Only the
RLE forms are lossless. Polygons trace pixel boundaries with OpenCV contours; holes are kept by
joining each hole to its outer contour with a zero-width cut; disconnected parts are separate
polygons of one annotation (COCO) or joined the same way (YOLO: one polygon per line).
"""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samkit.errors import InputError

FORMATS = ("coco", "coco_polygons", "yolo", "png", "labelme", "mask_pngs", "rle_json")


# -- masks <-> RLE / polygons ----------------------------------------------------------------
def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE ``{"size": [H, W], "counts": str}`` of an ``(H, W)`` bool mask."""
    from samkit.ops.rle import encode_coco_masks

    return encode_coco_masks(np.asarray(mask, dtype=bool)[None])[0]


def decode_segmentation(seg: Any, h: int, w: int) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO segmentation: compressed RLE (str or bytes counts),
    uncompressed RLE (list counts) or polygons.

    Raises:
        InputError: For a malformed segmentation or one whose size is not ``(h, w)``.
    """
    from pycocotools import mask as mask_utils

    try:
        if isinstance(seg, list):
            if not seg:
                return np.zeros((h, w), bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        else:
            if [int(v) for v in seg["size"]] != [h, w]:
                raise InputError(f"segmentation size {seg['size']} is not the image's "
                                 f"({h}, {w})")
            from samkit.ops.rle import decode_coco_rle

            return decode_coco_rle(seg)  # compressed or list counts
        return mask_utils.decode(rle).astype(bool)
    except InputError:
        raise
    except (TypeError, KeyError, ValueError, IndexError) as exc:
        raise InputError(f"not a COCO segmentation (RLE or polygons): {exc}") from None


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight XYWH box of an ``(H, W)`` bool mask (zeros for an empty mask)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(ys) == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Outer boundaries of an ``(H, W)`` bool mask, each with its holes joined in by a
    zero-width cut, as ``(K, 2)`` float arrays of XY pixel-corner coordinates."""
    import cv2

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    polys = []
    hier = hierarchy[0]
    for i, c in enumerate(contours):
        if hier[i][3] != -1:  # a hole; handled with its parent
            continue
        outer = c[:, 0, :].astype(np.float64)
        child = hier[i][2]
        while child != -1:
            outer = _join(outer, contours[child][:, 0, :].astype(np.float64))
            child = hier[child][0]
        if len(outer) >= 3:
            polys.append(outer + 0.5)  # contour points are pixel centres
    return polys


def _join(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """One ring that walks ``outer``, cuts in to ``inner``, walks it, and cuts back."""
    d = ((outer[:, None, :] - inner[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(d.argmin()), d.shape)
    inner_loop = np.concatenate([inner[j:], inner[: j + 1]])
    return np.concatenate([outer[: i + 1], inner_loop, outer[i:]])


def join_parts(polys: list[np.ndarray]) -> np.ndarray | None:
    """All parts as one ring (for formats with one polygon per object)."""
    if not polys:
        return None
    ring = polys[0]
    for p in polys[1:]:
        ring = _join(ring, p)
    return ring


def png_bytes(array: np.ndarray) -> bytes:
    """PNG file contents of a uint8 / uint16 ``(H, W)`` or ``(H, W, 3)`` array."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


# -- reading ---------------------------------------------------------------------------------
def read_coco(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A COCO instances file as a dict, with a clear error for missing or malformed files."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p} is not valid JSON: {exc}") from None
    check_coco(data, str(p))
    return data


def check_coco(data: Any, where: str = "the file") -> None:
    """Raise :class:`InputError` unless ``data`` has COCO's ``images`` and ``annotations``."""
    if not (isinstance(data, dict) and isinstance(data.get("images"), list)
            and isinstance(data.get("annotations"), list)):
        raise InputError(f"{where} is not a COCO instances file: it needs 'images' and "
                         "'annotations' lists (and 'categories')")


# -- writing ---------------------------------------------------------------------------------
@dataclass
class Instance:
    """One mask to write.

    Attributes:
        mask: ``(H, W)`` bool mask; may be None when ``rle`` is given.
        category_id: Category (see :class:`DatasetWriter`'s ``categories``).
        id: Annotation id (default: running number).
        score: Optional confidence (predicted IoU, detector score).
        extra: More fields for the COCO / JSON records (e.g. ``stability_score``,
            ``point_coords``, ``crop_box``).
        rle: The mask's COCO RLE when already encoded (a store of annotations): COCO output
            then copies it, and the mask is decoded only for formats that draw it.
    """

    mask: np.ndarray | None = None
    category_id: int = 1
    id: int | None = None
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    rle: dict[str, Any] | None = None

    def get_mask(self) -> np.ndarray:
        """The ``(H, W)`` bool mask (decoded from ``rle`` if need be)."""
        if self.mask is None:
            if self.rle is None:
                raise InputError("an Instance needs a mask or an rle")
            self.mask = decode_segmentation(self.rle, *self.rle["size"])
        return self.mask


@dataclass
class ImageEntry:
    """One image and its instances. ``file_name`` is the image's file name (its stem names
    the per-image outputs); ``height`` / ``width`` are those of the masks."""

    file_name: str
    height: int
    width: int
    instances: list[Instance]
    id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Sink = Callable[[str, bytes], None]


def directory_sink(out_dir: str | os.PathLike[str]) -> Sink:
    """Write each output file under ``out_dir`` (atomically: a temporary file renamed)."""
    root = Path(out_dir)

    def put(relpath: str, data: bytes) -> None:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    return put


def zip_sink(archive: zipfile.ZipFile) -> Sink:
    """Write each output file into an open zip archive."""
    return lambda relpath, data: archive.writestr(relpath, data)


class DatasetWriter:
    """Writes images with their instances in one of :data:`FORMATS`.

    Per-image formats write as images are added; COCO formats write ``annotations.json`` on
    :meth:`close`.

    Args:
        fmt: One of :data:`FORMATS` (``-`` may stand for ``_``).
        sink: Where files go: :func:`directory_sink` or :func:`zip_sink`.
        categories: ``[{"id": int, "name": str}, ...]`` (default: one ``object`` category).
        info: The COCO ``info`` block.
    """

    def __init__(self, fmt: str, sink: Sink, categories: list[dict[str, Any]] | None = None,
                 info: dict[str, Any] | None = None) -> None:
        fmt = fmt.replace("-", "_")
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        self.fmt = fmt
        self.sink = sink
        self.categories = categories or [{"id": 1, "name": "object"}]
        self.info = info or {}
        self._index = {c["id"]: i for i, c in enumerate(self.categories)}
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._next_id = 0

    def add(self, entry: ImageEntry) -> None:
        """Write (or, for COCO, collect) one image's instances."""
        image_id = entry.id if entry.id is not None else len(self._images) + 1
        stem = Path(entry.file_name).stem
        h, w = entry.height, entry.width
        for inst in entry.instances:
            shape = tuple(inst.rle["size"]) if inst.mask is None and inst.rle is not None \
                else inst.get_mask().shape
            if tuple(shape) != (h, w):
                raise InputError(f"a mask of {entry.file_name} is {tuple(shape)}, "
                                 f"not the image's ({h}, {w})")
            if inst.category_id not in self._index:
                raise InputError(f"category {inst.category_id} is not in the categories")
        if self.fmt in ("coco", "coco_polygons"):
            self._images.append({"id": image_id, "file_name": entry.file_name, "height": h,
                                 "width": w, **entry.extra})
            for inst in entry.instances:
                self._annotations.append(self._coco_annotation(inst, image_id))
        elif self.fmt == "yolo":
            lines = []
            for inst in entry.instances:
                ring = join_parts(mask_to_polygons(inst.get_mask()))
                if ring is None:
                    continue
                xy = (ring / np.array([w, h])).clip(0, 1).ravel()
                lines.append(f"{self._index[inst.category_id]} "
                             + " ".join(f"{v:.6f}" for v in xy))
            self.sink(f"labels/{stem}.txt", "".join(x + "\n" for x in lines).encode())
        elif self.fmt == "png":
            inst_map = np.zeros((h, w), np.uint16)
            sem = np.zeros((h, w), np.uint16)
            for k, inst in enumerate(entry.instances, start=1):
                inst_map[inst.get_mask()] = k
                sem[inst.get_mask()] = inst.category_id
            self.sink(f"instances/{stem}.png", png_bytes(inst_map))
            self.sink(f"semantic/{stem}.png", png_bytes(sem))
        elif self.fmt == "labelme":
            self.sink(f"{stem}.json", json.dumps(self._labelme(entry)).encode())
        elif self.fmt == "mask_pngs":
            meta = []
            for i, inst in enumerate(entry.instances):
                self.sink(f"{stem}/{i}.png", png_bytes(inst.get_mask().astype(np.uint8) * 255))
                record = self._coco_annotation(inst, image_id, segmentation=False)
                meta.append({**record, "file": f"{i}.png"})
            self.sink(f"{stem}/metadata.json", json.dumps(meta, indent=1).encode())
        else:  # rle_json
            records = [self._coco_annotation(inst, image_id) for inst in entry.instances]
            self.sink(f"{stem}.json", json.dumps(records).encode())

    def close(self) -> None:
        """Write the files that cover the whole dataset."""
        if self.fmt in ("coco", "coco_polygons"):
            coco = {"info": self.info, "images": self._images,
                    "categories": [{"supercategory": "object", **c} for c in self.categories],
                    "annotations": self._annotations}
            self.sink("annotations.json", json.dumps(coco).encode())
        elif self.fmt == "yolo":
            self.sink("classes.txt", "".join(c["name"] + "\n" for c in self.categories).encode())
        elif self.fmt == "png":
            names = {"0": "background", **{str(c["id"]): c["name"] for c in self.categories}}
            self.sink("classes.json", json.dumps(names).encode())

    def _coco_annotation(self, inst: Instance, image_id: int, segmentation: bool = True
                         ) -> dict[str, Any]:
        self._next_id += 1
        record: dict[str, Any] = {"id": inst.id if inst.id is not None else self._next_id,
                                  "image_id": image_id, "category_id": inst.category_id}
        if segmentation:
            if self.fmt == "coco_polygons":
                record["segmentation"] = [p.ravel().round(2).tolist()
                                          for p in mask_to_polygons(inst.get_mask())]
            elif inst.rle is not None:
                record["segmentation"] = inst.rle
            else:
                record["segmentation"] = encode_rle(inst.get_mask())
        if inst.rle is not None and "area" in inst.extra and "bbox" in inst.extra:
            record.update(iscrowd=0)  # area and bbox come with the stored RLE (in extra)
        else:
            mask = inst.get_mask()
            record.update(area=int(mask.sum()), bbox=list(mask_bbox(mask)), iscrowd=0)
        if inst.score is not None:
            record["score"] = float(inst.score)
        record.update(inst.extra)
        return record

    def _labelme(self, entry: ImageEntry) -> dict[str, Any]:
        """LabelMe 5 JSON with one ``mask`` shape per non-empty instance (keeps holes exactly)."""
        names = {c["id"]: c["name"] for c in self.categories}
        shapes = []
        for k, inst in enumerate(entry.instances, start=1):
            mask = inst.get_mask()
            x, y, bw, bh = mask_bbox(mask)
            if bw == 0:
                continue  # an empty mask has no shape
            crop = mask[y: y + bh, x: x + bw]
            shapes.append({
                "label": names[inst.category_id], "group_id": inst.id or k,
                "shape_type": "mask", "points": [[x, y], [x + bw - 1, y + bh - 1]],
                "flags": {}, "description": "",
                "mask": base64.b64encode(png_bytes(crop.astype(np.uint8) * 255)).decode("ascii"),
            })
        return {"version": "5.5.0", "flags": {}, "shapes": shapes,
                "imagePath": entry.file_name, "imageData": None,
                "imageHeight": entry.height, "imageWidth": entry.width}


def write_dataset(fmt: str, entries: Iterable[ImageEntry], sink: Sink,
                  categories: list[dict[str, Any]] | None = None,
                  info: dict[str, Any] | None = None) -> None:
    """Write ``entries`` in ``fmt`` to ``sink`` (see :class:`DatasetWriter`)."""
    writer = DatasetWriter(fmt, sink, categories, info)
    for entry in entries:
        writer.add(entry)
    writer.close()


__all__ = ["FORMATS", "DatasetWriter", "ImageEntry", "Instance", "check_coco",
           "decode_segmentation", "directory_sink", "encode_rle", "join_parts", "mask_bbox",
           "mask_to_polygons", "png_bytes", "read_coco", "write_dataset", "zip_sink"]
