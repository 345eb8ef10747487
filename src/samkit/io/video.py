"""Frames from videos, folders of numbered images and volumes, read one at a time.

:func:`open_frames` returns a :class:`FrameSource` over an mp4/mov/avi/mkv/webm file (PyAV,
extra ``samkit[video]``), a folder of numbered frames (``00000.jpg``, ``frame_12.png``, ...)
or a volume (DICOM series, NIfTI, multi-page TIFF: slices are frames, extra
``samkit[medical]``). Frames are ``(H, W, 3)`` uint8 RGB, indexed from 0 in display order.

Videos are decoded as they are read, never held whole: forward reading decodes from the
keyframe before the first frame asked for; backward reading decodes chunks of
``chunk`` frames, each from its keyframe, and hands them out last first. Memory is
a chunk of frames, whatever the video's length. Volumes are read whole (scanners write them
that way); each slice is windowed to uint8 when it is read.

:class:`VideoWriter` writes H.264 mp4 files one frame at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from samkit.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def _require_av() -> Any:
    from samkit._extras import require

    return require("av", "video", "reading and writing videos")


class FrameSource:
    """Frames by index. Subclasses fill ``kind``, ``n_frames``, ``size`` and ``fps``.

    Attributes:
        kind: ``"video"``, ``"frames"`` (a folder) or ``"volume"``.
        source: The path it reads.
        n_frames: Number of frames (slices for a volume).
        size: ``(H, W)`` of every frame.
        fps: Frames per second (videos; 10 for folders and volumes unless given).
        volume: The :class:`samkit.io.medical.Volume` for a volume source, else None.
    """

    kind = ""
    volume: Any = None
    # Subclasses implement read(index); frames() reads them one by one unless overridden.

    def __init__(self, source: Path) -> None:
        self.source = source
        self.n_frames = 0
        self.size = (0, 0)
        self.fps = 10.0

    def __len__(self) -> int:
        return self.n_frames

    def check_index(self, index: int) -> int:
        """``index`` if it names a frame, else an :class:`InputError` saying the range."""
        if not 0 <= index < self.n_frames:
            raise InputError(f"{self.source}: frame {index} is out of range; it has "
                             f"{self.n_frames} frame(s), 0..{self.n_frames - 1}")
        return index

    def frame_name(self, index: int) -> str:
        """The name outputs for frame ``index`` use (``00012``)."""
        return f"{index:05d}"

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``(H, W, 3)`` uint8 RGB."""
        raise NotImplementedError

    def frames(self, start: int = 0, stop: int | None = None, reverse: bool = False
               ) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` for ``start <= index < stop``, in order or last first."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        order = range(stop - 1, start - 1, -1) if reverse else range(start, stop)
        for i in order:
            yield i, self.read(i)

    def close(self) -> None:
        """Release the file (videos)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoFrames(FrameSource):
    """Frames of a video file, decoded by PyAV (FFmpeg) as they are read.

    Args:
        path: The video.
        chunk: Frames decoded at a time when reading backward.
    """

    kind = "video"

    def __init__(self, path: Path, chunk: int = 16) -> None:
        super().__init__(path)
        av = _require_av()
        self.chunk = max(1, int(chunk))
        try:
            self._container = av.open(str(path))
            streams = self._container.streams.video
            if not streams:
                raise InputError(f"{path} has no video stream")
            self._stream = streams[0]
            self._stream.thread_type = "AUTO"
            # Presentation timestamps of every frame, from the packets (no decoding): they
            # map a frame index to the position to seek to.
            stamps = [p.pts for p in self._container.demux(self._stream) if p.size]
        except InputError:
            raise
        except Exception as exc:  # FFmpeg's errors name the problem; keep them one line
            raise InputError(f"cannot read video {path}: {exc}") from None
        self._seekable = bool(stamps) and all(s is not None for s in stamps)
        if self._seekable:
            self._pts = sorted(stamps)
            self._index = {pts: i for i, pts in enumerate(self._pts)}
            self.n_frames = len(self._pts)
        else:  # no timestamps (some AVI files): count by decoding, read from the start
            self._pts = []
            self._index = {}
            self.n_frames = sum(1 for _ in self._decode_from(None))
        if self.n_frames == 0:
            raise InputError(f"{path}: no frames could be decoded")
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        first = next(self.frames(0, 1))[1]
        self.size = (int(first.shape[0]), int(first.shape[1]))

    def _decode_from(self, index: int | None) -> Iterator[Any]:
        """Decoded frames from the keyframe at or before frame ``index`` (None: the start)."""
        if index is None or not self._seekable:
            self._container.seek(0, stream=self._stream)
        else:
            self._container.seek(self._pts[index], stream=self._stream, backward=True,
                                 any_frame=False)
        try:
            yield from self._container.decode(self._stream)
        except Exception as exc:
            raise InputError(f"{self.source}: decoding failed ({exc})") from None

    def _positioned(self, start: int) -> Iterator[tuple[int, Any]]:
        """``(index, av frame)`` from frame ``start`` on."""
        if self._seekable:
            for frame in self._decode_from(start):
                i = self._index.get(frame.pts)
                if i is not None and i >= start:
                    yield i, frame
        else:
            for i, frame in enumerate(self._decode_from(None)):
                if i >= start:
                    yield i, frame

    @staticmethod
    def _rgb(frame: Any) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        turns = round(getattr(frame, "rotation", 0) or 0) // 90 % 4
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb

    def read(self, index: int) -> np.ndarray:
        self.check_index(index)
        return next(self.frames(index, index + 1))[1]

    def frames(self, start: int = 0, stop: int | None = None, reverse: bool = False
               ) -> Iterator[tuple[int, np.ndarray]]:
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        if start >= stop:
            return
        if not reverse:
            for i, frame in self._positioned(start):
                if i >= stop:
                    break
                yield i, self._rgb(frame)
            return
        hi = stop
        while hi > start:  # chunks [lo, hi), last chunk first
            lo = max(start, hi - self.chunk)
            held: list[tuple[int, np.ndarray]] = []
            for i, frame in self._positioned(lo):
                if i >= hi:
                    break
                held.append((i, self._rgb(frame)))
            yield from reversed(held)
            hi = lo

    def close(self) -> None:
        self._container.close()


_NUMBER = re.compile(r"(\d+)")


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in _NUMBER.split(p.name)]


class FolderFrames(FrameSource):
    """A folder of numbered frame images (any format :func:`samkit.io.load_image` reads),
    ordered by the numbers in their names."""

    kind = "frames"

    def __init__(self, path: Path, fps: float = 10.0) -> None:
        from samkit.io.image import list_images

        super().__init__(path)
        self.files = sorted(list_images(path), key=_natural_key)
        if not self.files:
            raise InputError(f"{path} holds no images: a frame folder holds numbered images "
                             "(00000.jpg, 00001.jpg, ...)")
        self.n_frames = len(self.files)
        self.fps = fps
        self.size = self.read(0).shape[:2]

    def frame_name(self, index: int) -> str:
        return self.files[index].stem

    def read(self, index: int) -> np.ndarray:
        from samkit.io.image import load_image

        self.check_index(index)
        image = load_image(self.files[index])
        if index and image.shape[:2] != self.size:
            raise InputError(f"{self.files[index]} is {image.shape[1]}x{image.shape[0]} but the "
                             f"first frame is {self.size[1]}x{self.size[0]}: all frames of a "
                             "folder must have the same size")
        return image


class VolumeFrames(FrameSource):
    """The slices of a volume along its first axis (Z), each through a grey-level window."""

    kind = "volume"

    def __init__(self, path: Path, window: Any = None, fps: float = 10.0) -> None:
        from samkit.io.medical import read_volume

        super().__init__(path)
        self.volume = read_volume(path)
        self.window = window or self.volume.default_window()
        self.n_frames = self.volume.n_slices
        self.size = (int(self.volume.data.shape[1]), int(self.volume.data.shape[2]))
        self.fps = fps

    def frame_name(self, index: int) -> str:
        return f"z{index:03d}"

    def read(self, index: int) -> np.ndarray:
        self.check_index(index)
        return self.volume.slice_image(index, self.window)


class ArrayFrames(FrameSource):
    """A sequence of ``(H, W, 3)`` frames already in memory (a list or a ``(T, H, W, 3)``
    array)."""

    kind = "array"

    def __init__(self, frames: Any, fps: float = 10.0) -> None:
        super().__init__(Path("<frames>"))
        self._frames = frames
        self.n_frames = len(frames)
        self.fps = fps
        if self.n_frames:
            self.size = tuple(np.asarray(frames[0]).shape[:2])  # type: ignore[assignment]

    def read(self, index: int) -> np.ndarray:
        return np.asarray(self._frames[self.check_index(index)])


def open_frames(path: str | os.PathLike[str], window: Any = None) -> FrameSource:
    """The frames of a video file, a folder of numbered images or a volume.

    Args:
        path: ``.mp4``/``.mov``/``.avi``/... video, a folder of images, a DICOM series folder
            or file, NIfTI (``.nii``, ``.nii.gz``) or multi-page TIFF.
        window: For volumes: a :class:`samkit.io.medical.Window` (default: the file's own).

    Raises:
        FileNotFoundError: Nothing at ``path``.
        InputError: An unreadable or unsupported input (named in the message).
        MissingExtraError: PyAV (``samkit[video]``) or the medical readers
            (``samkit[medical]``) are missing.
    """
    from samkit.io.image import IMAGE_SUFFIXES
    from samkit.io.medical import DICOM_SUFFIXES, NIFTI_SUFFIXES, TIFF_SUFFIXES

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    name = p.name.lower()
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file()]
        if any(f.suffix.lower() in IMAGE_SUFFIXES and f.suffix.lower() not in TIFF_SUFFIXES
               for f in files):
            return FolderFrames(p)
        return VolumeFrames(p, window)  # a DICOM series folder
    if name.endswith(VIDEO_SUFFIXES):
        return VideoFrames(p)
    if name.endswith(NIFTI_SUFFIXES + DICOM_SUFFIXES + TIFF_SUFFIXES):
        return VolumeFrames(p, window)
    raise InputError(f"{p}: not a video ({', '.join(VIDEO_SUFFIXES)}), a folder of frames or a "
                     "volume (DICOM, NIfTI, TIFF)")


class VideoWriter:
    """Write ``(H, W, 3)`` uint8 RGB frames to an H.264 mp4 (yuv420p, odd sizes padded by one
    pixel), one at a time.

    Args:
        path: The ``.mp4`` to write.
        fps: Frames per second.
        crf: x264 quality (lower is better; 18-23 is visually lossless to good).
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, crf: int = 20) -> None:
        self._av = _require_av()
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self._container: Any = None
        self._stream: Any = None
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        """Append ``frame`` ``(H, W, 3)`` uint8 RGB; every frame must have the first's size."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"a video frame must be (H, W, 3) uint8, got {frame.shape} "
                             f"{frame.dtype}")
        h, w = frame.shape[:2]
        if self._container is None:
            self._container = self._av.open(str(self.path), "w")
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf)}
            self._size = (h, w)
        if (h, w) != self._size:
            raise InputError(f"frame {self.frames_written} is {w}x{h}, the video is "
                             f"{self._size[1]}x{self._size[0]}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        av_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(av_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
