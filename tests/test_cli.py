"""The samkit command line on a tiny checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

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


@pytest.mark.parametrize("fmt", ["coco", "coco-polygons", "yolo", "png", "labelme",
                                 "mask-pngs", "rle-json"])
def test_amg_directory(files, tmp_path, fmt):
    _, ckpt, images = files
    rc = main(["amg", str(images), "--checkpoint", str(ckpt), "-o", str(tmp_path),
               "--format", fmt, "--points-per-side", "8", "--crop-overlap-ratio", "0.25",
               "--pred-iou-thresh", "0", "--stability-score-thresh", "0"])
    assert rc == 0
    # the same generator in the library: the reference every format is checked against
    from samkit import SamAutomaticMaskGenerator, build_sam
    from samkit.io.image import load_image

    gen = SamAutomaticMaskGenerator(build_sam(checkpoint=ckpt), points_per_side=8,
                                    crop_overlap_ratio=0.25, pred_iou_thresh=0,
                                    stability_score_thresh=0)
    expected = [r["segmentation"] for r in gen.generate(load_image(images / "a.png"))]
    assert expected
    if fmt in ("coco", "coco-polygons"):
        coco = json.loads((tmp_path / "annotations.json").read_text())
        assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.jpg"]
        anns = [a for a in coco["annotations"] if a["image_id"] == 1]
        assert len(anns) == len(expected)
        from samkit.io.formats import decode_segmentation

        for ann, mask in zip(anns, expected):
            got = decode_segmentation(ann["segmentation"], 120, 160)
            assert int(got.sum()) == ann["area"] or fmt == "coco-polygons"
            if fmt == "coco":
                assert np.array_equal(got, mask)
        if fmt == "coco-polygons":  # polygons trace pixel boundaries: mostly the same pixels
            got = [decode_segmentation(a["segmentation"], 120, 160) for a in anns]
            differ = sum(int((g ^ m).sum()) for g, m in zip(got, expected))
            assert differ <= 0.25 * sum(int(m.sum()) for m in expected)
    elif fmt == "mask-pngs":
        meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
        assert len(meta) == len(expected)
        for m, mask in zip(meta, expected):
            png = np.array(Image.open(tmp_path / "a" / m["file"])) > 0
            assert np.array_equal(png, mask) and m["area"] == int(mask.sum())
    elif fmt == "png":
        inst = np.array(Image.open(tmp_path / "instances" / "a.png"))
        k = max(i for i, m in enumerate(expected) if m.any())
        assert inst.shape == (120, 160) and inst.max() == k + 1
        assert np.array_equal(inst == k + 1, expected[k])  # painted last, so whole
        assert json.loads((tmp_path / "classes.json").read_text())["1"] == "object"
    elif fmt == "yolo":
        lines = (tmp_path / "labels" / "a.txt").read_text().splitlines()
        assert len(lines) == sum(m.any() for m in expected)
        xy = np.array(lines[0].split()[1:], dtype=float)
        assert lines[0].split()[0] == "0" and xy.min() >= 0 and xy.max() <= 1
        assert (tmp_path / "classes.txt").read_text() == "object\n"
    elif fmt == "labelme":
        doc = json.loads((tmp_path / "a.json").read_text())
        assert doc["imageHeight"] == 120
        assert len(doc["shapes"]) == sum(m.any() for m in expected)
        assert {s["shape_type"] for s in doc["shapes"]} == {"mask"}
    else:
        records = json.loads((tmp_path / "a.json").read_text())
        assert len(records) == len(expected)
        assert {"segmentation", "bbox", "predicted_iou", "stability_score"} <= set(records[0])


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


def test_help_for_every_command(capsys):
    from samkit.cli import build_parser

    commands = [[c] for c in build_parser()._subparsers._group_actions[0].choices]
    assert {"segment", "amg", "models", "demo", "studio", "data", "train", "eval"} <= {
        c[0] for c in commands}
    for cmd in [*commands, ["data", "synth"]]:
        with pytest.raises(SystemExit) as info:
            main([*cmd, "--help"])
        assert info.value.code == 0, cmd
        assert "usage: samkit " + " ".join(cmd) in capsys.readouterr().out


def test_negative_and_outside_prompts(files, tmp_path, capsys):
    _, ckpt, images = files
    rc = main(["segment", str(images / "a.png"), "--checkpoint", str(ckpt),
               "--point", "-5,50", "--point", "60,50", "--box", "-10,5,90,100",
               "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 0
    assert "--point -5,50 is outside the 160x120 image" in err
    assert "reaches outside" in err and "60,50" not in err
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["points"][0] == [-5.0, 50.0] and report["box"][0] == -10.0


def test_user_errors_and_bugs_are_told_apart(files, tmp_path, capsys, monkeypatch):
    _, ckpt, images = files
    rc = main(["segment", str(images / "a.png"), "--checkpoint", str(ckpt),
               "--point", "5,5,7", "-o", str(tmp_path)])  # label 7: the user's mistake
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "Traceback" not in err

    import samkit.predictor

    def broken(*args, **kwargs):
        raise ValueError("a library bug that happens to be a ValueError")

    monkeypatch.setattr(samkit.predictor.SamPredictor, "predict", broken)
    rc = main(["segment", str(images / "a.png"), "--checkpoint", str(ckpt),
               "--point", "5,5", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 3 and "internal error" in err and "Traceback" in err


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


def test_amg_fast_strategy_and_onnx_backend(files, tmp_path):
    _, ckpt, images = files
    common = ["--points-per-side", "8", "--pred-iou-thresh", "0", "--stability-score-thresh",
              "0", "--format", "rle-json"]
    assert main(["amg", str(images / "a.png"), "--checkpoint", str(ckpt), "-o",
                 str(tmp_path / "fast"), "--strategy", "fast", *common]) == 0
    assert main(["amg", str(images / "a.png"), "--checkpoint", str(ckpt), "-o",
                 str(tmp_path / "bad"), "--strategy", "fastest", *common]) == 2
    pytest.importorskip("onnxruntime")
    assert main(["export", "onnx", "--checkpoint", str(ckpt), "-o", str(tmp_path / "x")]) == 0
    assert main(["amg", str(images / "a.png"), "--onnx", str(tmp_path / "x"), "-o",
                 str(tmp_path / "ort"), *common]) == 0
    assert main(["amg", str(images / "a.png"), "--checkpoint", str(ckpt), "-o",
                 str(tmp_path / "torch"), *common]) == 0
    by_ort = json.loads(next((tmp_path / "ort").glob("*.json")).read_text())
    by_torch = json.loads(next((tmp_path / "torch").glob("*.json")).read_text())
    assert len(by_ort) == len(by_torch) > 0


def test_onnx_with_model_flags_is_a_user_error(files, tmp_path, capsys):
    _, ckpt, images = files
    rc = main(["amg", str(images / "a.png"), "--onnx", str(tmp_path), "--checkpoint", str(ckpt),
               "-o", str(tmp_path / "out")])
    assert rc == 2
    assert "--checkpoint" in capsys.readouterr().err
