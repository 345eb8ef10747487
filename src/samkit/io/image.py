"""Image loading and normalisation to the ``(H, W, 3)`` uint8 arrays the models take."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from samkit.errors import InputError, InputTypeError

IMAGE_FORMATS = ("RGB", "BGR")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, applying its EXIF orientation.

    16-bit and other high-bit-depth images are rescaled by their value range; grayscale is
    replicated to three channels; alpha is dropped.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a readable image.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image not found: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a directory, not an image file")
    return _decode(p, str(p))


def load_image_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """:func:`load_image` for the contents of an image file (read elsewhere: a Ray worker's
    ``read_binary_files`` row, an upload); ``name`` is used in error messages.

    Raises:
        ValueError: The bytes are not a readable image.
    """
    import io

    return _decode(io.BytesIO(data), name)


def _decode(source: Any, name: str) -> np.ndarray:
    try:
        with Image.open(source) as img:
            img = ImageOps.exif_transpose(img)
            array = _pil_to_array(img)
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {name}: not an image file, or a format Pillow "
                         "cannot decode") from None
    except (OSError, SyntaxError) as exc:
        raise InputError(f"cannot read image {name}: {exc}") from exc
    return to_rgb_uint8(array)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.uint16)
    if img.mode in ("I", "F", "L", "RGB", "RGBA"):
        return np.asarray(img)
    if img.mode == "LA":
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))


def _rescale_to_uint8(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    scaled = (x.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb_uint8(image: Any, image_format: str = "RGB") -> np.ndarray:
    """Validate an image and convert it to a contiguous ``(H, W, 3)`` uint8 RGB array.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` and ``(H, W, 4)`` (alpha dropped) arrays of
    dtype uint8 (as is), uint16 and other integers (rescaled by the image's value range), float
    in [0, 1] (times 255), and PIL images. ``image_format="BGR"`` reverses the channels.

    Raises:
        TypeError: ``image`` is not an array or PIL image, or has an unsupported dtype.
        ValueError: Bad shape, empty image, NaN/inf values, float values outside [0, 1], or an
            unknown ``image_format``.
    """
    if image_format not in IMAGE_FORMATS:
        raise InputError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if isinstance(image, Image.Image):
        image = _pil_to_array(image)
    if not isinstance(image, np.ndarray):
        hint = " (for torch tensors use SamPredictor.set_torch_image)" if hasattr(
            image, "detach") else ""
        raise InputTypeError(
            f"image must be a numpy array of shape (H, W, 3) or a PIL image, got "
            f"{type(image).__name__}{hint}"
        )
    if image.ndim not in (2, 3):
        raise InputError(
            f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {image.shape}"
        )
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        if image.shape[0] in (1, 3, 4):
            raise InputError(
                f"image has shape {image.shape}, which looks channels-first; pass (H, W, C), "
                "e.g. image.transpose(1, 2, 0)"
            )
        raise InputError(
            f"image must have 1, 3 or 4 channels in its last axis; got shape {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image is empty: shape {image.shape}")
    if image.dtype == np.uint8:
        out = image
    elif image.dtype == np.bool_:
        raise InputTypeError("image is boolean (a mask?); pass the picture itself, not a mask")
    elif np.issubdtype(image.dtype, np.integer):
        out = _rescale_to_uint8(image)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise InputError("image contains NaN or infinite values")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"float images must hold values in [0, 1]; this one spans [{lo:g}, {hi:g}]. "
                "Scale it to [0, 1] or convert it to uint8 first"
            )
        out = np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    else:
        raise InputTypeError(f"unsupported image dtype {image.dtype}; use uint8, uint16 or float")
    if out.ndim == 2:
        out = out[:, :, None]
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        out = out[:, :, :3]
    if image_format == "BGR":
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def list_images(path: str | os.PathLike[str]) -> list[Path]:
    """Image files in a directory (sorted), or the file itself."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not p.exists():
        raise FileNotFoundError(f"no such image or directory: {p}")
    return [p]


def load_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """A label-map image (8- or 16-bit PNG, TIFF) as an ``(H, W)`` integer array, values
    as stored (no colour conversion or rescaling)."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            arr = np.asarray(img)
    except Exception as exc:
        raise InputError(f"cannot read label map {p}: {exc}") from None
    if arr.ndim != 2:
        raise InputError(f"{p} is not a single-channel label map (shape {arr.shape})")
    return arr
