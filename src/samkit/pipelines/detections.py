"""Detections: boxes with scores and class names, from the places detectors leave them.

Every reader returns :class:`Detections` with boxes as ``(N, 4)`` float32 XYXY in pixels of
the image as loaded (EXIF-rotated), ``(0, 0)`` the top-left corner of the top-left pixel.

Sources: a COCO detection file (a full instances file, or a results list), YOLO txt files
(``class cx cy w h [conf]``, normalised), an ultralytics ``Results`` object and the output
dict of a torchvision detection model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samkit.errors import InputError


@dataclass
class Detections:
    """Objects found in one image.

    Attributes:
        boxes: ``(N, 4)`` float32 XYXY pixels.
        scores: ``(N,)`` float32 detector confidences (1 for boxes given by hand).
        class_ids: ``(N,)`` int64 indices into ``names``; -1 means unknown.
        names: The class names the indices refer to.
        masks: ``(N, H, W)`` bool masks once segmented (:func:`samkit.pipelines.segment_boxes`).
        mask_scores: ``(N,)`` float32 predicted IoU of each mask.
        label_scores: ``(N,)`` float32 probability of each class label (CLIP), if scored.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: list[str]
    masks: np.ndarray | None = None
    mask_scores: np.ndarray | None = None
    label_scores: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if len(self.scores) != n or len(self.class_ids) != n:
            raise InputError(f"detections need one score and one class per box: {n} boxes, "
                             f"{len(self.scores)} scores, {len(self.class_ids)} classes")
        if n and (self.class_ids.max() >= len(self.names) or self.class_ids.min() < -1):
            raise InputError(f"a class index is outside the {len(self.names)} class names")
        self.names = [str(x) for x in self.names]

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, names: Sequence[str] = ()) -> Detections:
        """No detections (with the class names kept)."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), list(names))

    def labels(self) -> list[str]:
        """The class name of each detection (``"unknown"`` for index -1)."""
        return [self.names[i] if i >= 0 else "unknown" for i in self.class_ids]

    def select(self, keep: np.ndarray | Sequence[int] | Sequence[bool]) -> Detections:
        """The detections at ``keep`` (indices or a bool mask), masks and scores included."""
        idx = np.asarray(keep)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Detections(self.boxes[idx], self.scores[idx], self.class_ids[idx], self.names,
                          pick(self.masks), pick(self.mask_scores), pick(self.label_scores))

    def clip_to(self, height: int, width: int) -> Detections:
        """Boxes clipped to the image; boxes with no area left are dropped."""
        b = self.boxes.copy()
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        out = self.select(keep)
        out.boxes = b[keep]
        return out


# -- COCO ------------------------------------------------------------------------------------
def read_coco_detections(source: str | os.PathLike[str] | Mapping[str, Any] | list[Any],
                         names: Sequence[str] | None = None) -> dict[str, Detections]:
    """Detections per image from a COCO file.

    Two layouts are read:

    - an instances file (``images``, ``annotations`` with XYWH ``bbox``, ``categories``):
      keyed by each image's ``file_name``; annotations without ``score`` get 1;
    - a results list (``[{"image_id", "category_id", "bbox", "score"}, ...]``, what COCO
      evaluation takes): keyed by ``str(image_id)``, which should then be the image's file
      name or stem. Class names come from ``category_name`` fields or from ``names``
      (``category_id`` 1 is ``names[0]``, as in COCO files written by samkit).

    Args:
        source: A path to the JSON file, or its parsed contents.
        names: Class names for a results list without ``category_name``.

    Returns:
        ``{image key: Detections}``; class names are shared by all images.
    """
    where = "the COCO detections"
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        try:
            source = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"box file not found: {where}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{where} is not valid JSON: {exc}") from None
    if isinstance(source, Mapping) and isinstance(source.get("annotations"), list):
        cats = source.get("categories") or []
        order = [c["id"] for c in cats]
        index = {cid: i for i, cid in enumerate(order)}
        class_names = [str(c.get("name", c["id"])) for c in cats]
        files = {im["id"]: im["file_name"] for im in source.get("images", [])}
        records = source["annotations"]
        key_of = lambda r: files.get(r["image_id"])  # noqa: E731
    elif isinstance(source, list):
        records = source
        class_names, index = _results_names(records, names, where)
        key_of = lambda r: str(r["image_id"])  # noqa: E731
        files = {}
    else:
        raise InputError(f"{where} is neither a COCO instances file (images, annotations, "
                         "categories) nor a COCO results list")
    grouped: dict[str, list[tuple[list[float], float, int]]] = {k: [] for k in files.values()}
    for r in records:
        try:
            key = key_of(r)
            x, y, w, h = (float(v) for v in r["bbox"])
            cid = r["category_id"]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: an annotation needs image_id, category_id and a "
                             f"4-number bbox ({exc!r} in {r!r:.120})") from None
        if key is None:
            raise InputError(f"{where}: annotation for unknown image_id {r['image_id']!r}")
        if cid not in index:
            raise InputError(f"{where}: category_id {cid!r} is not among the categories")
        grouped.setdefault(key, []).append(([x, y, x + w, y + h], float(r.get("score", 1.0)),
                                            index[cid]))
    return {k: _from_rows(v, class_names) for k, v in grouped.items()}


def _results_names(records: list[Any], names: Sequence[str] | None, where: str
                   ) -> tuple[list[str], dict[Any, int]]:
    named = {r["category_id"]: str(r["category_name"]) for r in records
             if isinstance(r, Mapping) and "category_name" in r and "category_id" in r}
    if named:
        ids = sorted(named)
        return [named[i] for i in ids], {cid: i for i, cid in enumerate(ids)}
    if names is None:
        raise InputError(f"{where} is a COCO results list without category names: give the "
                         "class names (--text \"cat, dog\": category_id 1 is the first)")
    return list(names), {i + 1: i for i in range(len(names))}


def _from_rows(rows: list[tuple[list[float], float, int]], names: list[str]) -> Detections:
    if not rows:
        return Detections.empty(names)
    boxes, scores, ids = zip(*rows)
    return Detections(np.array(boxes), np.array(scores), np.array(ids), names)


# -- YOLO ------------------------------------------------------------------------------------
def read_yolo_boxes(path: str | os.PathLike[str], image_size: tuple[int, int],
                    names: Sequence[str]) -> Detections:
    """Detections from one YOLO txt file: ``class cx cy w h [confidence]`` per line,
    normalised by the image's width and height.

    Args:
        path: The ``.txt`` file (a missing file means no detections, as YOLO writes none).
        image_size: ``(H, W)`` of the image the file describes.
        names: Class names by index (``classes.txt`` or the ``names`` of a data YAML).
    """
    p = Path(path)
    if not p.exists():
        return Detections.empty(names)
    h, w = image_size
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (5, 6):
            raise InputError(f"{p}:{n}: a YOLO box line has 5 or 6 numbers (class cx cy w h "
                             f"[conf]), got {len(parts)}; segmentation lines are not boxes")
        try:
            cls = int(float(parts[0]))
            cx, cy, bw, bh = (float(v) for v in parts[1:5])
            conf = float(parts[5]) if len(parts) == 6 else 1.0
        except ValueError:
            raise InputError(f"{p}:{n}: not numbers: {line!r}") from None
        if not 0 <= cls < len(names):
            raise InputError(f"{p}:{n}: class {cls} is not among the {len(names)} names")
        rows.append(([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                      (cy + bh / 2) * h], conf, cls))
    return _from_rows(rows, list(names))


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names from ``classes.txt`` (one per line) or a YOLO data YAML's ``names``
    (a list or an ``{index: name}`` mapping)."""
    p = Path(path)
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        from samkit._extras import require

        yaml = require("yaml", "text", "Reading a YOLO data YAML")

        data = yaml.safe_load(text) or {}
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names, key=int)]
        if isinstance(names, list):
            return [str(x) for x in names]
        raise InputError(f"{p} has no 'names' list or mapping")
    return [line.strip() for line in text.splitlines() if line.strip()]


class BoxFile:
    """Boxes per image from a file or folder, for labelling a folder of images.

    Args:
        path: A COCO JSON (instances file or results list), or a folder of YOLO txt files
            (``<stem>.txt``, or under ``labels/``) with ``classes.txt`` / ``data.yaml`` in it
            or beside it.
        names: Class names where the source has none (a results list, YOLO without
            ``classes.txt``).
    """

    def __init__(self, path: str | os.PathLike[str], names: Sequence[str] | None = None
                 ) -> None:
        p = Path(path)
        self.path = p
        self._coco: dict[str, Detections] | None = None
        self._yolo_dir: Path | None = None
        if p.is_dir():
            self._yolo_dir = p / "labels" if (p / "labels").is_dir() else p
            found = [f for d in (self._yolo_dir, self._yolo_dir.parent, p)
                     for f in (d / "classes.txt", d / "data.yaml", d / "dataset.yaml")
                     if f.is_file()]
            if found:
                self.names = read_class_names(found[0])
            elif names is not None:
                self.names = list(names)
            else:
                raise InputError(f"{p}: YOLO boxes need class names: a classes.txt beside them "
                                 "or --text \"cat, dog\" (class 0 first)")
        elif p.is_file():
            self._coco = read_coco_detections(p, names)
            first = next(iter(self._coco.values()), None)
            self.names = first.names if first is not None else list(names or [])
        else:
            raise FileNotFoundError(f"box file not found: {p}")

    def for_image(self, image_path: str | os.PathLike[str], size: tuple[int, int]
                  ) -> Detections:
        """The boxes of one image (matched by file name, then by stem; none if absent).

        Args:
            image_path: The image's path.
            size: ``(H, W)`` of the image as loaded (YOLO boxes are normalised by it).
        """
        ip = Path(image_path)
        if self._yolo_dir is not None:
            return read_yolo_boxes(self._yolo_dir / f"{ip.stem}.txt", size, self.names)
        assert self._coco is not None
        for key in (ip.name, ip.stem, str(image_path)):
            if key in self._coco:
                return self._coco[key]
        by_name = {Path(k).name: v for k, v in self._coco.items()}
        return by_name.get(ip.name, Detections.empty(self.names))


# -- detector objects ------------------------------------------------------------------------
def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def from_ultralytics(result: Any) -> Detections:
    """Detections of one ultralytics ``Results`` (``model(image)[0]``): ``boxes.xyxy``,
    ``boxes.conf``, ``boxes.cls`` and the ``names`` dict, in the original image's pixels."""
    try:
        boxes = result.boxes
        raw_names = result.names
    except AttributeError:
        raise InputError("expected an ultralytics Results object (model(image)[0]) with "
                         "boxes and names") from None
    if boxes is None:
        raise InputError("this ultralytics result has no boxes (a classification model?)")
    if isinstance(raw_names, Mapping):
        names = [str(raw_names[k]) for k in sorted(raw_names)]
    else:
        names = [str(x) for x in raw_names]
    return Detections(_numpy(boxes.xyxy), _numpy(boxes.conf), _numpy(boxes.cls).astype(np.int64),
                      names)


def from_torchvision(output: Mapping[str, Any], categories: Sequence[str],
                     score_threshold: float = 0.0) -> Detections:
    """Detections from a torchvision detection model's output for one image (``{"boxes",
    "scores", "labels"}``, boxes XYXY pixels).

    Args:
        output: One element of ``model([image])``.
        categories: Names by label index, e.g. ``weights.meta["categories"]`` (index 0 is
            the background, ``"__background__"``).
        score_threshold: Drop detections scored below this.
    """
    try:
        boxes, scores, labels = output["boxes"], output["scores"], output["labels"]
    except (KeyError, TypeError):
        raise InputError("expected one torchvision detection output: a dict with boxes, "
                         "scores and labels") from None
    labels = _numpy(labels).astype(np.int64)
    if len(labels) and labels.max() >= len(categories):
        raise InputError(f"label {labels.max()} is outside the {len(categories)} categories")
    det = Detections(_numpy(boxes), _numpy(scores), labels, list(categories))
    return det.select(det.scores >= score_threshold)


__all__ = ["BoxFile", "Detections", "from_torchvision", "from_ultralytics", "read_class_names",
           "read_coco_detections", "read_yolo_boxes"]
