"""The samkit command line on a tiny checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samkit import save_checkpoint
from samkit.cli import main
from samkit.registry import build_sam_from_config

from helpers import TINY, lively_state_dict, scene


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = build_sam_from_config(TINY)
    model.load_state_dict(lively_state_dict(TINY, seed=2))
    ckpt = save_checkpoint(model, root / "tiny.safetensors")
    images = root / "images"
    images.mkdir()
    Image.fromarray(scene(120, 160, seed=1)).save(images / "a.png")
    Image.fromarray(scene(90, 70, seed=2)).save(images / "b.jpg")
    return root, ckpt, images


def test_segment_writes_masks_overlay_and_scores(files, tmp_path):
    _, ckpt, images = files
    rc = main(["segment", str(images / "a.png"), "--checkpoint", str(ckpt),
               "--point", "50,60", "--point", "120,100,0", "--box", "20,30,120,100",
               "--multimask", "-o", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert len(report["masks"]) == 3
    scores = [m["score"] for m in report["masks"]]
    assert scores == sorted(scores, reverse=True)
    assert report["labels"] == [1, 0]
    mask = np.array(Image.open(tmp_path / report["masks"][0]["file"]))
    assert mask.shape == (120, 160) and set(np.unique(mask)) <= {0, 255}
    assert int((mask > 0).sum()) == report["masks"][0]["area"]
    assert np.array(Image.open(tmp_path / "a_overlay.png")).shape == (120, 160, 3)


@pytest.mark.parametrize("fmt", ["coco", "png", "rle-json"])
def test_amg_directory(files, tmp_path, fmt):
    _, ckpt, images = files
    rc = main(["amg", str(images), "--checkpoint", str(ckpt), "-o", str(tmp_path),
               "--format", fmt, "--points-per-side", "8", "--crop-overlap-ratio", "0.25"])
    assert rc == 0
    if fmt == "coco":
        coco = json.loads((tmp_path / "annotations.json").read_text())
        assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.jpg"]
        assert coco["annotations"]
        ann = coco["annotations"][0]
        assert mask_utils.area(ann["segmentation"]) == ann["area"]
    elif fmt == "png":
        meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
        first = np.array(Image.open(tmp_path / "a" / meta[0]["file"]))
        assert int((first > 0).sum()) == meta[0]["area"]
    else:
        records = json.loads((tmp_path / "a.json").read_text())
        assert records and {"segmentation", "bbox", "predicted_iou"} <= set(records[0])


def test_amg_skips_unreadable_images(files, tmp_path, capsys):
    _, ckpt, _images = files
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"nope")
    Image.fromarray(scene(40, 40)).save(folder / "ok.png")
    rc = main(["amg", str(folder), "--checkpoint", str(ckpt), "-o", str(tmp_path / "out"),
               "--points-per-side", "4"])
    assert rc == 1
    assert "broken.png" in capsys.readouterr().err
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["ok.png"]


def test_missing_checkpoint_message(files, tmp_path, capsys):
    _, _, images = files
    rc = main(["segment", str(images / "a.png"), "--point", "5,5", "-o", str(tmp_path),
               "--model", "vit_b"])
    assert rc == 2
    assert "samkit models" in capsys.readouterr().err
    rc = main(["segment", str(images / "a.png"), "--point", "5,5", "-o", str(tmp_path),
               "--checkpoint", str(tmp_path / "sam_vit_b_01ec64.pth")])
    assert rc == 2
    assert "dl.fbaipublicfiles.com" in capsys.readouterr().err


def test_bad_point_syntax(files, tmp_path, capsys):
    _, ckpt, images = files
    rc = main(["segment", str(images / "a.png"), "--checkpoint", str(ckpt),
               "--point", "5;5", "-o", str(tmp_path)])
    assert rc == 2 and "--point" in capsys.readouterr().err


def test_models_lists_official_files(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("sam_vit_h_4b8939.pth", "sam_vit_l_0b3195.pth", "sam_vit_b_01ec64.pth"):
        assert name in out
    assert "93.7M" in out  # ViT-B parameter count


def test_help_for_every_command():
    for cmd in ("segment", "amg", "models"):
        with pytest.raises(SystemExit) as info:
            main([cmd, "--help"])
        assert info.value.code == 0


def test_speed_switches(files, tmp_path, capsys, monkeypatch):
    import torch

    import samkit.accel as accel

    _, ckpt, images = files
    before = torch.get_num_threads()
    try:
        rc = main(["segment", str(images / "a.png"), "--checkpoint", str(ckpt), "--point",
                   "50,60", "--fast", "--threads", "1", "-o", str(tmp_path / "fast")])
        assert rc == 0 and torch.get_num_threads() == 1
        exact = main(["segment", str(images / "a.png"), "--checkpoint", str(ckpt), "--point",
                      "50,60", "-o", str(tmp_path / "exact")])
        assert exact == 0
        a = np.array(Image.open(tmp_path / "fast" / "a_mask.png")) > 0
        b = np.array(Image.open(tmp_path / "exact" / "a_mask.png")) > 0
        assert (a ^ b).mean() <= 1e-3 and a.sum() > 0
        monkeypatch.setattr(accel.shutil, "which", lambda name: None)
        rc = main(["segment", str(images / "a.png"), "--checkpoint", str(ckpt), "--point",
                   "50,60", "--compile", "-o", str(tmp_path / "c")])
        assert rc == 2 and "needs a C++ compiler" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
