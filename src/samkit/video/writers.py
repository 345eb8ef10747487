"""What ``samkit track`` writes: label maps, per-object RLE tracks, an overlay video and, for
volumes, a label volume."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from samkit.video.propagate import FrameResult


class TrackWriter:
    """Collects :class:`~samkit.video.FrameResult` s (in any frame order) into
    ``directory``:

    - ``masks/<frame>.png``: one label map per frame (0 background, k object k; uint8, or
      uint16 past 255 objects), empty for frames no object reached;
    - ``tracks.json``: YouTube-VIS style (COCO for videos): per object, per frame a COCO
      RLE (or null), an XYWH box, the area, the predicted IoU and the status;
    - ``overlay.mp4``: the frames with the masks drawn (H.264), from a second, in-order read;
    - ``labels.nii.gz``: for volumes, the label volume with the input's affine.

    Memory: the per-object RLEs (a few hundred bytes a frame) and, for volumes, the label
    volume.

    Args:
        directory: Output folder (created).
        source: The :class:`samkit.io.video.FrameSource` tracked.
        objects: The object ids.
    """

    def __init__(self, directory: str | os.PathLike[str], source: Any, objects: list[int]
                 ) -> None:
        self.out = Path(directory)
        (self.out / "masks").mkdir(parents=True, exist_ok=True)
        self.source = source
        self.objects = sorted(objects)
        n = len(source)
        self.dtype = np.uint8 if max(self.objects) < 256 else np.uint16
        self.tracks: dict[int, dict[str, list[Any]]] = {
            obj: {k: [None] * n for k in ("segmentations", "bboxes", "areas", "scores",
                                         "status")} for obj in self.objects}
        self.written = np.zeros(n, dtype=bool)
        self.volume = (np.zeros((n, *source.size), self.dtype)
                       if source.kind == "volume" else None)

    def _path(self, index: int) -> Path:
        return self.out / "masks" / f"{self.source.frame_name(index)}.png"

    def add(self, result: FrameResult) -> None:
        """Write one frame's label map and keep its RLEs."""
        from PIL import Image

        from samkit.io.formats import encode_rle, mask_bbox

        label = np.zeros(self.source.size, self.dtype)
        for obj, mask in result.masks.items():
            label[mask] = obj
            track = self.tracks[obj]
            i = result.index
            if mask.any():
                track["segmentations"][i] = encode_rle(mask)
                track["bboxes"][i] = list(mask_bbox(mask))
                track["areas"][i] = int(mask.sum())
            track["scores"][i] = round(float(result.scores.get(obj, 0.0)), 4)
            track["status"][i] = result.status.get(obj)
        Image.fromarray(label).save(self._path(result.index))
        self.written[result.index] = True
        if self.volume is not None:
            self.volume[result.index] = label

    def summary(self) -> dict[int, dict[str, int]]:
        """Per object, how many frames had each status."""
        return {obj: dict(Counter(s for s in t["status"] if s is not None))
                for obj, t in self.tracks.items()}

    def finish(self, video: bool = True, meta: dict[str, Any] | None = None) -> list[Path]:
        """Fill frames never reached with empty maps, write ``tracks.json``, the overlay video
        and the label volume; returns the paths written."""
        from PIL import Image

        empty = np.zeros(self.source.size, self.dtype)
        for i in np.nonzero(~self.written)[0]:
            Image.fromarray(empty).save(self._path(int(i)))
        h, w = self.source.size
        names = [f"{self.source.frame_name(i)}" for i in range(len(self.source))]
        doc = {
            "info": {"source": str(self.source.source), "kind": self.source.kind,
                     "fps": self.source.fps, **(meta or {})},
            "videos": [{"id": 1, "width": w, "height": h, "length": len(self.source),
                        "file_names": names}],
            "categories": [{"id": 1, "name": "object"}],
            "annotations": [{"id": obj, "video_id": 1, "category_id": 1, "object_id": obj,
                             "width": w, "height": h, **self.tracks[obj]}
                            for obj in self.objects],
        }
        outputs = [self.out / "masks"]
        (self.out / "tracks.json").write_text(json.dumps(doc))
        outputs.append(self.out / "tracks.json")
        if video:
            outputs.append(self._overlay())
        if self.volume is not None:
            from samkit.io.medical import write_nifti

            outputs.append(write_nifti(self.volume, self.source.volume.affine,
                                       self.out / "labels.nii.gz"))
        return outputs

    def _overlay(self) -> Path:
        from samkit.io.image import load_label_map
        from samkit.io.video import VideoWriter
        from samkit.viz import overlay

        path = self.out / "overlay.mp4"
        with VideoWriter(path, self.source.fps) as writer:
            for i, frame in self.source.frames():
                label = load_label_map(self._path(i))
                writer.write(overlay(frame, [label == obj for obj in self.objects]))
        return path
