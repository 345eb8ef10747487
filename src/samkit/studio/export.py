"""Export a studio project (COCO RLE / polygons, YOLO segmentation, PNG masks, LabelMe) and
import COCO to continue work.

Coordinates: COCO boxes are XYWH in pixels; polygons are ``[x0, y0, x1, y1, ...]`` in pixel
units with (0, 0) the top-left corner of the top-left pixel. YOLO polygons are normalised by
the image width / height. Masks are always those of the image in its EXIF orientation.

Only the RLE forms are lossless: COCO RLE export -> import -> export gives the same masks bit
for bit. Polygons trace pixel boundaries with OpenCV contours; holes are kept by joining each
hole to its outer contour with a zero-width cut, and disconnected parts are separate polygons
of one annotation (COCO) or joined the same way (YOLO, which allows one polygon per line).
"""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from typing import Any

import cv2
import numpy as np
from PIL import Image

from samkit.ops.rle import decode_coco_rle
from samkit.studio.store import ProjectStore, StoreError

FORMATS = ("coco", "coco_polygons", "yolo", "png", "labelme")


# -- polygons ------------------------------------------------------------------------------
def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Outer boundaries of an ``(H, W)`` bool mask, each with its holes joined in by a
    zero-width cut, as ``(K, 2)`` float arrays of XY pixel-corner coordinates."""
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


# -- exports -------------------------------------------------------------------------------
def coco_dict(store: ProjectStore, polygons: bool = False) -> dict[str, Any]:
    """The whole project as a COCO instance-segmentation dict (done and in-progress images
    alike; ``images[i].samkit_status`` says which)."""
    images, _ = store.list_images()
    ok = [im for im in images if im["error"] is None]
    sizes = {im["id"]: (im["height"], im["width"]) for im in ok}
    anns = []
    for inst in store.instances():
        if inst.image_id not in sizes:
            continue
        h, w = sizes[inst.image_id]
        if polygons:
            seg: Any = [p.ravel().round(2).tolist()
                        for p in mask_to_polygons(inst.mask(h, w))]
        else:
            seg = {"size": [h, w], "counts": inst.rle}
        anns.append({"id": inst.id, "image_id": inst.image_id, "category_id": inst.class_id,
                     "segmentation": seg, "area": inst.area, "bbox": list(inst.bbox),
                     "iscrowd": 0, "score": inst.score, "samkit_source": inst.source})
    return {
        "info": {"description": f"samkit studio export of {store.dir.name}",
                 "date_created": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "images": [{"id": im["id"], "file_name": im["file_name"], "height": im["height"],
                    "width": im["width"], "samkit_status": im["status"]} for im in ok],
        "categories": [{"id": c["id"], "name": c["name"], "supercategory": "object"}
                       for c in store.list_classes()],
        "annotations": anns,
    }


def _by_image(store: ProjectStore) -> tuple[list[dict[str, Any]], dict[int, list[Any]]]:
    images = [im for im in store.list_images()[0] if im["error"] is None]
    groups: dict[int, list[Any]] = {im["id"]: [] for im in images}
    for inst in store.instances():
        groups.setdefault(inst.image_id, []).append(inst)
    return images, groups


def export_zip(store: ProjectStore, fmt: str) -> bytes:
    """A zip archive of the project in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        if fmt in ("coco", "coco_polygons"):
            z.writestr("annotations.json",
                       json.dumps(coco_dict(store, polygons=fmt == "coco_polygons")))
        else:
            _write_per_image(z, store, fmt)
    return buf.getvalue()


def _write_per_image(z: zipfile.ZipFile, store: ProjectStore, fmt: str) -> None:
    classes = store.list_classes()
    index = {c["id"]: i for i, c in enumerate(classes)}
    images, groups = _by_image(store)
    if fmt == "yolo":
        z.writestr("classes.txt", "".join(c["name"] + "\n" for c in classes))
    for im in images:
        h, w = im["height"], im["width"]
        stem = im["file_name"].rsplit(".", 1)[0]
        insts = groups.get(im["id"], [])
        if fmt == "yolo":
            lines = []
            for inst in insts:
                ring = join_parts(mask_to_polygons(inst.mask(h, w)))
                if ring is None:
                    continue
                xy = (ring / np.array([w, h])).clip(0, 1).ravel()
                lines.append(f"{index[inst.class_id]} " + " ".join(f"{v:.6f}" for v in xy))
            z.writestr(f"labels/{stem}.txt", "".join(line + "\n" for line in lines))
        elif fmt == "png":
            inst_map = np.zeros((h, w), np.uint16)
            sem = np.zeros((h, w), np.uint16)
            for k, inst in enumerate(insts, start=1):
                m = inst.mask(h, w)
                inst_map[m] = k
                sem[m] = inst.class_id
            z.writestr(f"instances/{stem}.png", _png(inst_map))
            z.writestr(f"semantic/{stem}.png", _png(sem))
        else:  # labelme
            z.writestr(f"{stem}.json", json.dumps(_labelme(im, insts, classes)))
    if fmt == "png":
        z.writestr("classes.json", json.dumps(
            {"0": "background", **{str(c["id"]): c["name"] for c in classes}}))


def _png(a: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(a).save(out, format="PNG")
    return out.getvalue()


def _labelme(im: dict[str, Any], insts: list[Any], classes: list[dict[str, Any]]
             ) -> dict[str, Any]:
    """LabelMe 5 JSON with one ``mask`` shape per instance (keeps holes exactly)."""
    names = {c["id"]: c["name"] for c in classes}
    shapes = []
    for inst in insts:
        x, y, bw, bh = inst.bbox
        crop = inst.mask(im["height"], im["width"])[y: y + bh, x: x + bw]
        shapes.append({
            "label": names[inst.class_id], "group_id": inst.id, "shape_type": "mask",
            "points": [[x, y], [x + bw - 1, y + bh - 1]], "flags": {}, "description": "",
            "mask": base64.b64encode(_png(crop.astype(np.uint8) * 255)).decode("ascii"),
        })
    return {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": im["file_name"],
            "imageData": None, "imageHeight": im["height"], "imageWidth": im["width"]}


# -- import --------------------------------------------------------------------------------
def import_coco(store: ProjectStore, coco: dict[str, Any]) -> dict[str, Any]:
    """Add the annotations of a COCO dict to the project (images matched by ``file_name``).

    Returns counts of imported annotations and of those skipped, with reasons.
    """
    from pycocotools import mask as mask_utils

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
        h, w = row["height"], row["width"]
        seg = ann.get("segmentation")
        try:
            if isinstance(seg, list):
                rles = mask_utils.frPyObjects(seg, h, w)
                mask = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
            else:
                if list(seg["size"]) != [h, w]:
                    raise ValueError(f"size {seg['size']} != image ({h}, {w})")
                mask = decode_coco_rle(seg)
            store.add_instance(row["id"], cats[ann["category_id"]], mask,
                               score=ann.get("score"), source="import")
            n += 1
        except (ValueError, TypeError, KeyError, StoreError) as exc:
            skipped.append(f"annotation {ann.get('id')}: {exc}")
    return {"imported": n, "skipped": len(skipped), "reasons": skipped[:50]}
