"""Export a studio project in any of :data:`samkit.io.formats.FORMATS` (the one writer the
CLI uses too) and import COCO to continue work.

Masks are always those of the image in its EXIF orientation. Only the RLE forms are lossless:
COCO RLE export -> import -> export gives the same masks bit for bit.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any

from samkit.io.formats import (
    FORMATS,
    DatasetWriter,
    ImageEntry,
    Instance,
    decode_segmentation,
    mask_to_polygons,
    zip_sink,
)
from samkit.studio.store import ProjectStore, StoreError

__all__ = ["FORMATS", "coco_dict", "export_zip", "import_coco", "mask_to_polygons"]


def _entries(store: ProjectStore) -> tuple[list[dict[str, Any]], list[ImageEntry]]:
    """Readable images and their instances (the stored RLE, area and box carried as is)."""
    images = [im for im in store.list_images()[0] if im["error"] is None]
    groups: dict[int, list[Instance]] = {im["id"]: [] for im in images}
    sizes = {im["id"]: (im["height"], im["width"]) for im in images}
    for inst in store.instances():
        if inst.image_id not in groups:
            continue
        h, w = sizes[inst.image_id]
        groups[inst.image_id].append(Instance(
            rle={"size": [h, w], "counts": inst.rle}, category_id=inst.class_id, id=inst.id,
            score=inst.score,
            extra={"area": inst.area, "bbox": list(inst.bbox), "samkit_source": inst.source}))
    entries = [ImageEntry(im["file_name"], im["height"], im["width"], groups[im["id"]],
                          id=im["id"], extra={"samkit_status": im["status"]}) for im in images]
    return images, entries


def _categories(store: ProjectStore) -> list[dict[str, Any]]:
    return [{"id": c["id"], "name": c["name"]} for c in store.list_classes()]


def _info(store: ProjectStore) -> dict[str, Any]:
    return {"description": f"samkit studio export of {store.dir.name}",
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def coco_dict(store: ProjectStore, polygons: bool = False) -> dict[str, Any]:
    """The whole project as a COCO instance-segmentation dict (done and in-progress images
    alike; ``images[i].samkit_status`` says which)."""
    files: dict[str, bytes] = {}
    writer = DatasetWriter("coco_polygons" if polygons else "coco", files.__setitem__,
                           _categories(store), _info(store))
    for entry in _entries(store)[1]:
        writer.add(entry)
    writer.close()
    return json.loads(files["annotations.json"])


def export_zip(store: ProjectStore, fmt: str) -> bytes:
    """A zip archive of the project in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        writer = DatasetWriter(fmt, zip_sink(z), _categories(store), _info(store))
        for entry in _entries(store)[1]:
            writer.add(entry)
        writer.close()
    return buf.getvalue()


# -- import --------------------------------------------------------------------------------
def import_coco(store: ProjectStore, coco: dict[str, Any]) -> dict[str, Any]:
    """Add the annotations of a COCO dict to the project (images matched by ``file_name``).

    Returns counts of imported annotations and of those skipped, with reasons.
    """
    if not isinstance(coco, dict) or not isinstance(coco.get("annotations"), list):
        raise StoreError("not a COCO instances file: it needs 'images', 'annotations' and "
                         "'categories' lists")
    cats = {c["id"]: store.add_class(str(c["name"])) for c in coco.get("categories", [])}
    local: dict[int, dict[str, Any]] = {}
    skipped: list[str] = []
    for im in coco.get("images", []):
        row = store.image_by_name(str(im.get("file_name", "")))
        if row is None:
            skipped.append(f"image {im.get('file_name')!r} is not in the project")
        elif row["error"]:
            skipped.append(f"image {row['file_name']!r} is unreadable: {row['error']}")
        else:
            local[im["id"]] = row
    n = 0
    for ann in coco["annotations"]:
        row = local.get(ann.get("image_id"))
        if row is None or ann.get("category_id") not in cats:
            skipped.append(f"annotation {ann.get('id')}: unknown image or category")
            continue
        try:
            mask = decode_segmentation(ann.get("segmentation"), row["height"], row["width"])
            store.add_instance(row["id"], cats[ann["category_id"]], mask,
                               score=ann.get("score"), source="import")
            n += 1
        except (ValueError, TypeError, KeyError, StoreError) as exc:
            skipped.append(f"annotation {ann.get('id')}: {exc}")
    return {"imported": n, "skipped": len(skipped), "reasons": skipped[:50]}
