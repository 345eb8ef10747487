"""Medical and scientific images: DICOM series, NIfTI, TIFF stacks, windowing, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samkit.errors import InputError
from samkit.io.medical import (
    CT_PRESETS,
    Window,
    apply_window,
    parse_window,
    read_volume,
    write_nifti,
)

from helpers import ct_volume, write_dicom_series

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
tifffile = pytest.importorskip("tifffile")


def test_windowing_and_presets():
    x = np.array([[-1000, 0, 40, 240, 2000]], dtype=np.float32)
    out = apply_window(x, Window(40, 400))
    assert out[0, [0, 1, 3, 4]].tolist() == [0, 102, 255, 255]
    assert out[0, 2] in (127, 128)  # the centre maps to 127.5
    assert parse_window("lung") == Window(*CT_PRESETS["lung"])
    assert parse_window("40,400") == Window(40.0, 400.0)
    w = parse_window("p1,99")
    assert w.percentiles == (1.0, 99.0)
    ramp = np.arange(1000, dtype=np.float32).reshape(10, 100)
    stretched = apply_window(ramp, w)
    assert stretched.min() == 0 and stretched.max() == 255
    assert parse_window("minmax").percentiles == (0.0, 100.0)
    for bad in ("40", "abc", "p99,1", "40,-5"):
        with pytest.raises(InputError):
            parse_window(bad)


def test_dicom_series_sorted_rescaled_and_located(tmp_path):
    hu = ct_volume()
    write_dicom_series(tmp_path / "ct", hu)
    (tmp_path / "ct" / "README.txt").write_text("not dicom")  # ignored
    vol = read_volume(tmp_path / "ct")
    assert vol.modality == "CT" and vol.n_slices == len(hu)
    np.testing.assert_array_equal(vol.data, hu)  # sorted by position, HU restored
    # voxel (column 3, row 5, slice 2) -> RAS mm (LPS x, y flipped)
    world = vol.affine @ np.array([3, 5, 2, 1.0])
    np.testing.assert_allclose(world[:3], [20.0 - 3 * 0.7, 30.0 - 5 * 0.8, 5.0])
    img = vol.slice_image(3)
    assert img.shape == (40, 48, 3) and img.dtype == np.uint8
    # soft-tissue default window for CT: air black, bone white, water mid-grey
    assert img[0, 0, 0] == 0 and img[20, 29, 0] == 255 and 100 < img[20, 10, 0] < 160


def test_dicom_errors_name_the_file(tmp_path):
    write_dicom_series(tmp_path / "two", ct_volume(z=2))
    write_dicom_series(tmp_path / "two" / "b", ct_volume(z=2), uid="1.2.3.4")
    with pytest.raises(InputError, match="2 DICOM series"):
        read_volume(tmp_path / "two")
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(InputError, match=r"broken\.dcm"):
        read_volume(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files"):
        read_volume(tmp_path / "empty")
    with pytest.raises(InputError, match="out of range"):
        read_volume(tmp_path / "two" / "b").slice_image(5)


def test_nifti_round_trip_keeps_affine(tmp_path):
    hu = ct_volume()
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10, 5, 30]
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), affine), str(path))
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, hu)
    np.testing.assert_allclose(vol.affine, affine)
    labels = (vol.data > 500).astype(np.uint8)
    out = write_nifti(labels, vol.affine, tmp_path / "labels.nii.gz")
    back = read_volume(out)
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.affine, affine)
    four_d = tmp_path / "4d.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), str(four_d))
    with pytest.raises(InputError, match="4D"):
        read_volume(four_d)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti file")
    with pytest.raises(InputError, match=r"junk\.nii\.gz"):
        read_volume(junk)


def test_tiff_stack_16bit(tmp_path):
    rng = np.random.default_rng(0)
    stack = (rng.random((3, 30, 20)) * 4000 + 1000).astype(np.uint16)
    path = tmp_path / "cells.tif"
    tifffile.imwrite(str(path), stack, photometric="minisblack")
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, stack.astype(np.float32))
    img = vol.slice_image(1, parse_window("p0,100"))
    assert img[..., 0].min() == 0 and img[..., 0].max() == 255
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(InputError, match="not a volume"):
        read_volume(tmp_path / "x.txt")


def test_segment_cli_on_a_nifti_slice(tmp_path, capsys):
    from samkit.cli import main

    hu = ct_volume(z=5, h=64, w=64)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.eye(4)), str(path))
    rc = main(["segment", str(path), "--slice", "3", "--window", "abdomen", "--box",
               "20,20,50,44", "-o", str(tmp_path / "out")])
    assert rc == 0
    report = json.loads((tmp_path / "out" / "scan_z003.json").read_text())
    assert report["size"] == [64, 64] and report["slice"] == 3
    assert (tmp_path / "out" / "scan_z003_mask.png").exists()
    rc = main(["segment", str(path), "--slice", "9", "--box", "1,1,5,5", "-o",
               str(tmp_path / "o2")])
    assert rc == 2
    assert "slice 9 is out of range" in capsys.readouterr().err
    rc = main(["segment", str(path), "--box", "1,1,5,5", "-o", str(tmp_path / "o3")])
    assert rc == 2
    assert "--slice" in capsys.readouterr().err
