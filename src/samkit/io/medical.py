"""Medical and scientific images: DICOM series, NIfTI, multi-page and 16-bit TIFF, windowing.

Every reader returns a :class:`Volume`: ``data`` ``(Z, H, W)`` float32 in the modality's own
units (CT: Hounsfield units, the DICOM rescale slope and intercept applied), slice ``z`` being
the image ``data[z]`` with rows ``H`` and columns ``W``, and ``affine`` ``(4, 4)`` mapping a
voxel index ``(w, h, z, 1)`` (column, row, slice) to world millimetres in RAS+ (NIfTI's
convention), so a label volume written with it lines up with the scan. A 2D file is a
one-slice volume.

The encoder takes 8-bit RGB, so a slice goes through a window first (:func:`apply_window`):
``center,width`` (CT: ``40,400``), a CT preset name (:data:`CT_PRESETS`), or percentiles
(``p1,99``, the default for anything that is not CT; a DICOM file's own window when it has
one).

pydicom and nibabel are the optional ``samkit[medical]`` extra; TIFF uses tifffile from it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samkit.errors import InputError

#: CT windows ``(center, width)`` in Hounsfield units, as radiology viewers name them.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "soft-tissue": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "mediastinum": (50.0, 350.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
DEFAULT_PERCENTILES = (1.0, 99.0)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")


@dataclass
class Window:
    """How to map values to 0-255: a ``center``/``width`` window, or the ``percentiles``
    ``(low, high)`` of the data (slice by slice)."""

    center: float | None = None
    width: float | None = None
    percentiles: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.percentiles is None and (self.center is None or self.width is None):
            self.percentiles = DEFAULT_PERCENTILES
        if self.width is not None and self.width <= 0:
            raise InputError(f"window width must be positive, got {self.width:g}")
        if self.percentiles is not None:
            lo, hi = self.percentiles
            if not 0 <= lo < hi <= 100:
                raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got "
                                 f"{lo:g},{hi:g}")


def parse_window(text: str | None) -> Window | None:
    """``"40,400"`` (center,width), a preset (``"lung"``), ``"p1,99"`` (percentiles) or
    ``"minmax"`` -> :class:`Window`; None -> None (the file's default)."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in CT_PRESETS:
        return Window(*CT_PRESETS[t])
    if t == "minmax":
        return Window(percentiles=(0.0, 100.0))
    try:
        if t.startswith("p"):
            lo, hi = (float(v) for v in t[1:].split(","))
            return Window(percentiles=(lo, hi))
        center, width = (float(v) for v in t.split(","))
    except ValueError:
        raise InputError(
            f"--window {text!r}: expected CENTER,WIDTH (e.g. 40,400), pLOW,HIGH percentiles "
            f"(e.g. p1,99), minmax, or a CT preset: {', '.join(CT_PRESETS)}") from None
    return Window(center, width)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Map an ``(H, W)`` (or any shape) array to uint8 through ``window``; values outside it
    clip to 0 or 255. Non-finite values become 0."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    if window.percentiles is not None:
        data = x[finite]
        if data.size == 0:
            return np.zeros(x.shape, dtype=np.uint8)
        lo, hi = np.percentile(data, window.percentiles)
    else:
        assert window.center is not None and window.width is not None
        lo, hi = window.center - window.width / 2, window.center + window.width / 2
    if hi <= lo:
        return np.where(finite & (x > lo), 255, 0).astype(np.uint8)
    scaled = (np.where(finite, x, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@dataclass
class Volume:
    """A scan or stack: ``data`` ``(Z, H, W)`` float32, ``affine`` voxel ``(w, h, z)`` ->
    RAS+ mm, the modality (``"CT"``, ``"MR"``, ... or ``""``) and the file's own window."""

    data: np.ndarray
    affine: np.ndarray
    source: Path
    modality: str = ""
    window: Window | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[0])

    def default_window(self) -> Window:
        """The file's own window, else the CT soft-tissue window for CT, else percentiles."""
        if self.window is not None:
            return self.window
        if self.modality == "CT":
            return Window(*CT_PRESETS["soft-tissue"])
        return Window()

    def slice_image(self, index: int, window: Window | None = None) -> np.ndarray:
        """Slice ``index`` as ``(H, W, 3)`` uint8 RGB through ``window`` (default:
        :meth:`default_window`)."""
        if not -self.n_slices <= index < self.n_slices:
            raise InputError(f"{self.source}: slice {index} is out of range; it has "
                             f"{self.n_slices} slice(s), 0..{self.n_slices - 1}")
        gray = apply_window(self.data[index], window or self.default_window())
        return np.repeat(gray[:, :, None], 3, axis=2)


def _require(module: str) -> Any:
    from samkit._extras import require

    return require(module, "medical", "reading medical images")


def is_volume_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is read by :func:`read_volume` rather than as a plain image: a folder
    (a DICOM series), NIfTI or DICOM file (TIFF is both; see :func:`read_volume`)."""
    p = Path(path)
    name = p.name.lower()
    return p.is_dir() or name.endswith(NIFTI_SUFFIXES) or name.endswith(DICOM_SUFFIXES)


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read a DICOM series folder, a DICOM file, a NIfTI file or a (multi-page) TIFF.

    Raises:
        FileNotFoundError: Nothing at ``path``.
        InputError: The file is unreadable or of an unsupported kind (the message names it).
        MissingExtraError: pydicom / nibabel / tifffile are missing (``samkit[medical]``).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    name = p.name.lower()
    if p.is_dir():
        return read_dicom_series(p)
    if name.endswith(NIFTI_SUFFIXES):
        return read_nifti(p)
    if name.endswith(TIFF_SUFFIXES):
        return read_tiff(p)
    if name.endswith(DICOM_SUFFIXES) or _has_dicom_preamble(p):
        return read_dicom_series([p])
    raise InputError(f"{p}: not a volume format samkit reads (a DICOM series folder, .dcm, "
                     f"{', '.join(NIFTI_SUFFIXES)}, {', '.join(TIFF_SUFFIXES)})")


def _has_dicom_preamble(p: Path) -> bool:
    try:
        with p.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


# -- NIfTI ---------------------------------------------------------------------------------
def read_nifti(path: str | os.PathLike[str]) -> Volume:
    """A NIfTI-1/2 file as a :class:`Volume`: the stored ``(X, Y, Z)`` array becomes
    ``(Z, Y, X)`` (slice, row, column) and the affine is the file's (``qform``/``sform`` as
    nibabel picks it). 4D files are refused (pick a time point first)."""
    nib = _require("nibabel")
    p = Path(path)
    try:
        img = nib.load(str(p))
        arr = np.asanyarray(img.dataobj, dtype=np.float32)  # scl_slope/inter applied
    except Exception as exc:  # nibabel raises many kinds for damaged files
        raise InputError(f"cannot read NIfTI file {p}: {exc}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InputError(f"{p}: a {arr.ndim}D NIfTI image (shape {arr.shape}); samkit reads "
                         "2D and 3D ones: select one volume of a 4D series first")
    return Volume(np.ascontiguousarray(arr.transpose(2, 1, 0)), np.asarray(img.affine,
                  dtype=np.float64), p, meta={"shape_xyz": tuple(arr.shape)})


def write_nifti(labels: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a ``(Z, H, W)`` label volume (the :class:`Volume` layout) as NIfTI with
    ``affine``: the inverse of :func:`read_nifti`'s layout."""
    nib = _require("nibabel")
    p = Path(path)
    data = np.ascontiguousarray(np.asarray(labels).transpose(2, 1, 0))
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    nib.save(nib.Nifti1Image(data, affine), str(p))
    return p


# -- DICOM ---------------------------------------------------------------------------------
def read_dicom_series(source: str | os.PathLike[str] | list[Path]) -> Volume:
    """A DICOM series (a folder, or a list of files) as a :class:`Volume` in its units
    (``RescaleSlope`` / ``RescaleIntercept`` applied: CT in Hounsfield units), slices sorted
    along the slice normal by ``ImagePositionPatient`` (``InstanceNumber`` when positions
    are missing). A folder holding several series is refused with their UIDs listed."""
    pydicom = _require("pydicom")
    files = source if isinstance(source, list) else sorted(
        f for f in Path(source).rglob("*") if f.is_file())
    where = source if not isinstance(source, list) else files[0]
    if not files:
        raise InputError(f"{where}: no files in this DICOM folder")
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=False)
        except Exception as exc:  # InvalidDicomError, truncated files, ...
            if len(files) == 1 or f.suffix.lower() in DICOM_SUFFIXES:
                raise InputError(f"cannot read DICOM file {f}: {exc}") from None
            continue  # a README or thumbnail beside the series
        if "PixelData" in ds:
            slices.append((f, ds))
    if not slices:
        raise InputError(f"{where}: no DICOM images found")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        uids = ", ".join(sorted(series))[:200]
        raise InputError(f"{where} holds {len(series)} DICOM series ({uids}); put each "
                         "series in its own folder")
    slices.sort(key=_slice_order(slices))
    arrays = []
    for f, ds in slices:
        try:
            px = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # compressed transfer syntax without a decoder, bad data
            raise InputError(f"cannot decode the pixels of DICOM file {f}: {exc} (compressed "
                             "DICOM needs a decoder plugin, e.g. pip install pylibjpeg "
                             "pylibjpeg-libjpeg)") from None
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        px = px * slope + intercept
        arrays.extend(px if px.ndim == 3 else [px])  # multi-frame files hold their slices
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"{where}: slices of different sizes {sorted(shapes)}")
    first = slices[0][1]
    return Volume(np.stack(arrays).astype(np.float32), _dicom_affine(slices), Path(where),
                  modality=str(getattr(first, "Modality", "")), window=_dicom_window(first),
                  meta={"series_uid": next(iter(series)), "files": len(slices)})


def _orientation(ds: Any) -> tuple[np.ndarray, np.ndarray] | None:
    iop = getattr(ds, "ImageOrientationPatient", None)
    if iop is None or len(iop) != 6:
        return None
    v = np.asarray(iop, dtype=np.float64)
    return v[:3], v[3:]


def _slice_order(slices: list[tuple[Path, Any]]) -> Any:
    orient = _orientation(slices[0][1])
    have_pos = all(getattr(ds, "ImagePositionPatient", None) is not None for _, ds in slices)
    if orient is not None and have_pos:
        normal = np.cross(*orient)
        return lambda item: float(np.dot(normal, np.asarray(item[1].ImagePositionPatient,
                                                            dtype=np.float64)))
    return lambda item: int(getattr(item[1], "InstanceNumber", 0) or 0)


def _dicom_affine(slices: list[tuple[Path, Any]]) -> np.ndarray:
    """Voxel ``(column, row, slice)`` -> RAS+ mm (DICOM positions are LPS: x and y flip)."""
    ds0 = slices[0][1]
    orient = _orientation(ds0)
    spacing = [float(v) for v in getattr(ds0, "PixelSpacing", [1.0, 1.0])]
    affine = np.eye(4)
    if orient is None:
        affine[0, 0], affine[1, 1] = spacing[1], spacing[0]
        affine[2, 2] = float(getattr(ds0, "SliceThickness", 1.0) or 1.0)
        return affine
    row_dir, col_dir = orient  # direction of increasing column index, of increasing row
    origin = np.asarray(getattr(ds0, "ImagePositionPatient", [0, 0, 0]), dtype=np.float64)
    if len(slices) > 1 and getattr(slices[-1][1], "ImagePositionPatient", None) is not None:
        last = np.asarray(slices[-1][1].ImagePositionPatient, dtype=np.float64)
        step = (last - origin) / (len(slices) - 1)
    else:
        step = np.cross(row_dir, col_dir) * float(getattr(ds0, "SliceThickness", 1.0) or 1.0)
    lps = np.column_stack([row_dir * spacing[1], col_dir * spacing[0], step, origin])
    affine[:3, :] = lps * np.array([-1.0, -1.0, 1.0])[:, None]
    return affine


def _dicom_window(ds: Any) -> Window | None:
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is None or width is None:
        return None
    def first(v: Any) -> float:  # the tags may hold several windows: take the first
        return float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)

    try:
        c, w = first(center), first(width)
    except (TypeError, ValueError):
        return None
    return Window(c, w) if w > 0 else None


# -- TIFF ----------------------------------------------------------------------------------
def read_tiff(path: str | os.PathLike[str]) -> Volume:
    """A (multi-page, 8/16/32-bit, grayscale) TIFF as a :class:`Volume` of its pages. RGB
    pages keep their first channel only when all channels are equal; otherwise they are
    refused here (read colour TIFFs as images)."""
    tifffile = _require("tifffile")
    p = Path(path)
    try:
        arr = np.asarray(tifffile.imread(str(p)))
    except Exception as exc:
        raise InputError(f"cannot read TIFF file {p}: {exc}") from None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        if not (arr[..., 0] == arr[..., 1]).all():
            raise InputError(f"{p} is a colour TIFF; open it as an image, not a volume")
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{p}: TIFF of shape {arr.shape}; expected pages of 2D images")
    return Volume(arr.astype(np.float32), np.eye(4), p, meta={"dtype": str(arr.dtype)})


# -- one 2D image from any of these --------------------------------------------------------
@dataclass
class LoadedImage:
    """An ``(H, W, 3)`` uint8 image ready for the encoder, with where it came from: ``slice``
    is None for plain 2D images; ``stem`` names outputs (``scan_z040`` for a slice)."""

    image: np.ndarray
    stem: str
    slice: int | None = None
    volume: Volume | None = None


def file_stem(path: str | os.PathLike[str]) -> str:
    """The name without its suffix (``scan.nii.gz`` -> ``scan``)."""
    p = Path(path)
    name = p.name
    for suffix in (".nii.gz", *(s for s in (p.suffix,) if s)):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_any(path: str | os.PathLike[str], slice_index: int | None = None,
             window: Window | None = None) -> LoadedImage:
    """A plain image (:func:`samkit.io.image.load_image`), or slice ``slice_index`` of a
    volume (DICOM series or file, NIfTI, multi-page TIFF) through ``window``.

    A volume of several slices needs ``slice_index``; ``window`` also applies to a 2D
    single-channel image (e.g. 16-bit microscopy), which is otherwise stretched min to max.

    Raises:
        InputError: A missing ``--slice`` for a volume, a slice out of range, an unreadable
            or unsupported file (named in the message).
    """
    from samkit.io.image import load_image

    p = Path(path)
    stem = file_stem(p)
    tiff = p.suffix.lower() in TIFF_SUFFIXES
    if not (is_volume_path(p) or (tiff and (slice_index is not None or window is not None
                                            or _tiff_pages(p) > 1))):
        if slice_index is not None:
            raise InputError(f"{p} is a 2D image; --slice is for volumes (DICOM, NIfTI, "
                             "multi-page TIFF)")
        if window is None:
            return LoadedImage(load_image(p), stem)
        gray = _single_channel(p)
        return LoadedImage(np.repeat(apply_window(gray, window)[:, :, None], 3, axis=2), stem)
    volume = read_volume(p)
    if slice_index is None:
        if volume.n_slices > 1:
            raise InputError(f"{p} is a volume of {volume.n_slices} slices: pass --slice Z "
                             f"(0..{volume.n_slices - 1})")
        slice_index = 0
    image = volume.slice_image(slice_index, window)
    index = slice_index % volume.n_slices
    return LoadedImage(image, f"{stem}_z{index:03d}" if volume.n_slices > 1 else stem, index,
                       volume)


def _tiff_pages(p: Path) -> int:
    from PIL import Image

    try:
        with Image.open(p) as img:
            return int(getattr(img, "n_frames", 1))
    except Exception:  # unreadable by Pillow: let the volume reader name the problem
        return 2


def _single_channel(p: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    from samkit.io.image import _pil_to_array

    try:
        with Image.open(p) as img:
            arr = _pil_to_array(ImageOps.exif_transpose(img))
    except Exception as exc:
        raise InputError(f"cannot read image {p}: {exc}") from None
    if arr.ndim == 3:
        if not (arr[..., :1] == arr[..., : min(3, arr.shape[2])]).all():
            raise InputError(f"{p} is a colour image; --window applies to single-channel "
                             "images (CT, MR, 16-bit microscopy)")
        arr = arr[..., 0]
    return arr
