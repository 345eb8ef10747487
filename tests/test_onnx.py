"""ONNX export and the ONNX Runtime predictor: parity with the PyTorch predictor, the official
ONNX decoder's convention, plain-onnxruntime use without samkit, any image size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from samkit import SamAutomaticMaskGenerator, SamConfig, SamPredictor, build_sam
from samkit.errors import InputError

from helpers import TINY, model_pair, scene

ort = pytest.importorskip("onnxruntime") if not os.environ.get("CI") else __import__(
    "onnxruntime")  # a dev dependency: CI must run these tests, never skip them

from samkit.backends.onnxruntime import OnnxPredictor  # noqa: E402
from samkit.export import encode_prompts, export_onnx, read_metadata  # noqa: E402


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    ours, official = model_pair(TINY, seed=5)
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(ours, out, model_name="tiny-test")
    return ours, official, out


@pytest.fixture(scope="module")
def pair(exported):
    ours, _, out = exported
    return SamPredictor(ours), OnnxPredictor(out)


def test_files_pass_the_checker_and_say_what_they_are(exported):
    import onnx

    _, _, out = exported
    metas = []
    for name in ("image_encoder.onnx", "decoder.onnx", "decoder_official.onnx"):
        onnx.checker.check_model(str(out / name))
        metas.append(read_metadata(out / name))
    assert [m["samkit_part"] for m in metas] == ["image_encoder", "decoder", "decoder_official"]
    assert len({m["samkit_weights_sha256"] for m in metas}) == 1
    m = metas[1]
    assert m["samkit_model"] == "tiny-test" and m["samkit_version"]
    assert SamConfig.from_dict(json.loads(m["samkit_config"])) == TINY
    assert m["samkit_image_size"] == str(TINY.image_size)


@pytest.mark.parametrize("size", [(120, 160), (257, 61), (40, 300), (256, 256)])
def test_prompts_match_the_pytorch_predictor_at_any_image_size(pair, size):
    tp, op = pair
    img = scene(*size, seed=sum(size))
    tp.set_image(img)
    op.set_image(img)
    emb_t, emb_o = tp.get_image_embedding(), op.get_image_embedding()
    assert torch.allclose(emb_t, emb_o, atol=1e-4 * float(emb_t.abs().max()) + 1e-5)
    h, w = size
    box = np.array([0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h])
    pts, labels = np.array([[w * 0.4, h * 0.5], [w * 0.6, h * 0.3]]), np.array([1, 0])
    cases = [dict(point_coords=pts[:1], point_labels=labels[:1]),
             dict(point_coords=pts, point_labels=labels, multimask_output=False),
             dict(box=box, multimask_output=False),
             dict(box=box, point_coords=pts, point_labels=labels, multimask_output=False),
             dict(box=box, multimask_output=True)]
    for kw in cases:
        mt, st, lt = tp.predict(**kw)
        mo, so, lo = op.predict(**kw)
        assert mt.shape == mo.shape == (st.shape[0], h, w), kw
        for a, b in zip(mt, mo):
            assert iou(a, b) >= 0.999, kw
        np.testing.assert_allclose(st, so, atol=1e-3)
        np.testing.assert_allclose(lt, lo, atol=1e-3 * float(np.abs(lt).max()) + 1e-4)
    # refinement: the best low-res logits fed back
    mt, st, lt = tp.predict(**cases[0])
    prev = lt[np.argmax(st)][None]
    a = tp.predict(**cases[0], mask_input=prev, multimask_output=False)
    b = op.predict(**cases[0], mask_input=prev, multimask_output=False)
    assert iou(a[0][0], b[0][0]) >= 0.999
    # logits, not masks, when asked
    logits = op.predict(**cases[2], return_logits=True)[0]
    assert logits.dtype == np.float32 and ((logits > 0) == op.predict(**cases[2])[0]).all()


def test_many_boxes_in_one_call(pair):
    tp, op = pair
    img = scene(150, 210, seed=3)
    tp.set_image(img)
    op.set_image(img)
    boxes = torch.tensor([[5, 5, 100, 90], [50, 40, 200, 140], [0, 0, 209, 149]], dtype=torch.float)
    tb = tp.transform.apply_boxes_torch(boxes, (150, 210))
    mt, st, lt = tp.predict_torch(None, None, boxes=tb, multimask_output=False)
    mo, so, lo = op.predict_torch(None, None, boxes=tb, multimask_output=False)
    assert mo.shape == (3, 1, 150, 210) and mo.dtype == torch.bool
    for a, b in zip(mt, mo):
        assert iou(a[0].numpy(), b[0].numpy()) >= 0.999
    torch.testing.assert_close(st, so, atol=1e-3, rtol=0)
    torch.testing.assert_close(lt, lo, atol=1e-3 * float(lt.abs().max()), rtol=0)
    # 64 boxes, each with a point, in one decoder call
    rng = np.random.default_rng(0)
    xy0 = rng.uniform(0, 120, (64, 2))
    many = np.concatenate([xy0, xy0 + rng.uniform(20, 80, (64, 2))], 1)
    pts = (xy0 + 10)[:, None]
    t_boxes = tp.transform.apply_boxes_torch(torch.tensor(many, dtype=torch.float), (150, 210))
    t_pts = tp.transform.apply_coords_torch(torch.tensor(pts, dtype=torch.float), (150, 210))
    lab = torch.ones(64, 1, dtype=torch.int)
    mt, _, _ = tp.predict_torch(t_pts, lab, boxes=t_boxes, multimask_output=False)
    mo, _, _ = op.predict_torch(t_pts, lab, boxes=t_boxes, multimask_output=False)
    assert min(iou(a.numpy(), b.numpy()) for a, b in zip(mt, mo)) >= 0.99


def test_the_official_convention_decoder_matches_the_official_onnx_model(exported, pair):
    """decoder_official.onnx against segment_anything.utils.onnx.SamOnnxModel (the reference's
    own export wrapper) on the same weights, in PyTorch."""
    from segment_anything.utils.onnx import SamOnnxModel

    _, official, out = exported
    tp, _ = pair
    img = scene(130, 90, seed=7)
    tp.set_image(img)
    emb = tp.get_image_embedding().numpy()
    session = ort.InferenceSession(str(out / "decoder_official.onnx"))
    for pts, labels in [([[40, 60]], [1]), ([[40, 60], [20, 20]], [1, 0]),
                        ([[10, 10], [70, 120], [45, 60]], [2, 3, 1])]:
        coords, lab = encode_prompts(np.array(pts, float), np.array(labels, float))
        if 2 in labels:  # the corners are already in the list: no padding point
            coords, lab = coords[:, :-1], lab[:, :-1]
        coords = tp.transform.apply_coords(coords, (130, 90)).astype(np.float32)
        feeds = {"image_embeddings": emb, "point_coords": coords, "point_labels": lab,
                 "mask_input": np.zeros((1, 1, 64, 64), np.float32),
                 "has_mask_input": np.zeros(1, np.float32),
                 "orig_im_size": np.array([130, 90], np.float32)}
        masks, scores, low = session.run(None, feeds)
        ref = SamOnnxModel(official, return_single_mask=True)
        with torch.no_grad():
            rm, rs, rl = ref(*(torch.from_numpy(v) for v in feeds.values()))
        assert masks.shape == tuple(rm.shape) == (1, 1, 130, 90)
        assert iou(masks > 0, rm.numpy() > 0) >= 0.999
        np.testing.assert_allclose(scores, rs.numpy(), atol=1e-4)
        np.testing.assert_allclose(low, rl.numpy(), atol=1e-3 * float(np.abs(low).max()))


PLAIN = textwrap.dedent("""
    import sys
    sys.modules["samkit"] = None  # any import of samkit fails
    sys.modules["torch"] = None  # and of torch
    import numpy as np
    import onnxruntime as ort
    d, data = sys.argv[1], np.load(sys.argv[2])
    enc = ort.InferenceSession(d + "/image_encoder.onnx")
    dec = ort.InferenceSession(d + "/decoder.onnx")
    emb = enc.run(None, {"image": data["resized"]})[0]
    masks, scores, low = dec.run(None, {
        "image_embeddings": emb, "point_coords": data["coords"], "point_labels": data["labels"],
        "mask_input": np.zeros((2, 1, 64, 64), np.float32),
        "has_mask_input": np.zeros(2, np.float32), "orig_im_size": data["orig"],
        "mask_indices": np.array([0], np.int64)})
    np.save(sys.argv[3], masks > 0)
""")


def test_exported_files_run_in_plain_onnxruntime_without_samkit(exported, pair, tmp_path):
    _, _, out = exported
    tp, _ = pair
    img = scene(100, 170, seed=11)
    # Two prompt sets in original-image pixels: a click (with its padding point) and a box.
    coords = np.array([[[60, 40], [0, 0]], [[10, 20], [120, 90]]], np.float32)
    labels = np.array([[1, -1], [2, 3]], np.float32)
    np.savez(tmp_path / "in.npz", resized=tp.transform.apply_image(img), coords=coords,
             labels=labels, orig=np.array([100, 170], np.int64))
    subprocess.run([sys.executable, "-c", PLAIN, str(out), str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npy")], check=True)
    plain = np.load(tmp_path / "out.npy")
    tp.set_image(img)
    click = tp.predict(point_coords=coords[0, :1], point_labels=np.array([1]),
                       multimask_output=False)[0]
    box = tp.predict(box=coords[1].reshape(4), multimask_output=False)[0]
    assert plain.shape == (2, 1, 100, 170)
    assert iou(plain[0, 0], click[0]) >= 0.999 and iou(plain[1, 0], box[0]) >= 0.999


@pytest.fixture(scope="module")
def nano_pair(tmp_path_factory):
    nano = build_sam("nano")
    out = tmp_path_factory.mktemp("nano_onnx")
    export_onnx(nano, out, model_name="nano")
    return nano, OnnxPredictor(out)


def test_the_automatic_generator_runs_on_onnxruntime(nano_pair):
    from skimage import data

    nano, op = nano_pair
    img = data.coins()[::2, ::2]
    kw = dict(points_per_side=12, pred_iou_thresh=0.5, stability_score_thresh=0.9)
    ref = SamAutomaticMaskGenerator(nano, **kw).generate(img)
    got = SamAutomaticMaskGenerator(op, **kw).generate(img)
    assert len(ref) >= 5
    matched = [max(iou(r["segmentation"], g["segmentation"]) for g in got) for r in ref]
    assert np.mean(np.array(matched) >= 0.99) >= 0.95, matched
    assert abs(len(got) - len(ref)) <= max(1, len(ref) // 20)


def test_clear_errors(tmp_path, exported, pair):
    _, _, out = exported
    with pytest.raises(InputError, match="samkit export onnx"):
        OnnxPredictor(tmp_path)
    with pytest.raises(InputError, match="precision"):
        OnnxPredictor(out, precision="fp8")
    _, op = pair
    op.reset_image()
    with pytest.raises(RuntimeError, match="set_image"):
        op.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    op.set_image(scene(50, 60))
    with pytest.raises(InputError, match="box"):
        op.predict(box=np.array([1, 2, 3]))
    with pytest.raises(InputError, match="embedding"):
        op.set_image_embedding(np.zeros((1, 3, 4, 4), np.float32), (50, 60))
    with pytest.raises(TypeError, match="OnnxPredictor"):
        SamAutomaticMaskGenerator("nano")


def test_a_missing_onnxruntime_names_the_extra(monkeypatch, exported):
    from samkit._extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"samkit\[onnx\]"):
        OnnxPredictor(exported[2])


def test_int8_files_load_and_stay_close_to_fp32(exported, tmp_path):
    import shutil

    from samkit.export.quantize import quantize_int8

    _, _, out = exported
    d = tmp_path / "q"
    shutil.copytree(out, d)
    enc, dec = quantize_int8(d, [scene(120, 160, seed=s) for s in range(4)])
    assert read_metadata(enc)["samkit_precision"] == "int8"
    assert read_metadata(dec)["samkit_weights_sha256"] == read_metadata(
        out / "decoder.onnx")["samkit_weights_sha256"]
    assert enc.stat().st_size < 0.8 * (out / "image_encoder.onnx").stat().st_size
    p32, p8 = OnnxPredictor(d), OnnxPredictor(d, precision="int8")
    ious = []
    for s in range(3):
        img = scene(140, 180, seed=100 + s)
        p32.set_image(img)
        p8.set_image(img)
        for box in ([10, 10, 90, 80], [60, 40, 170, 130], [30, 60, 120, 139]):
            a = p32.predict(box=np.array(box), multimask_output=False)[0][0]
            b = p8.predict(box=np.array(box), multimask_output=False)[0][0]
            ious.append(iou(a, b))
    assert np.median(ious) >= 0.8, ious


def test_cli_exports_quantizes_and_evaluates(tmp_path, capsys):
    from samkit import save_checkpoint
    from samkit.cli import main
    from samkit.data.coco import write_synthetic_coco
    from samkit.registry import build_sam_from_config

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_sam_from_config(TINY), tmp_path / "tiny.safetensors", TINY)
    calib = tmp_path / "calib"
    calib.mkdir()
    from PIL import Image

    for s in range(2):
        Image.fromarray(scene(90, 120, seed=s)).save(calib / f"{s}.png")
    out = tmp_path / "onnx"
    assert main(["export", "onnx", "--checkpoint", str(ckpt), "-o", str(out), "--quantize",
                 "int8", "--calibration", str(calib)]) == 0
    printed = capsys.readouterr().out
    for name in ("image_encoder.onnx", "decoder.onnx", "decoder_official.onnx",
                 "image_encoder.int8.onnx", "decoder.int8.onnx"):
        assert f"{out / name}" in printed
    assert read_metadata(out / "decoder.onnx")["samkit_model"] == "tiny.safetensors"
    coco = write_synthetic_coco("val", 2, tmp_path / "data")
    assert main(["eval", str(coco), "--images", str(tmp_path / "data" / "images"), "--onnx",
                 str(out), "--int8", "--prompts", "point1,box"]) == 0
    assert "box" in capsys.readouterr().out
    assert main(["eval", str(coco), "--images", str(tmp_path / "data" / "images"),
                 "--int8"]) == 2
    assert main(["export", "onnx", "-o", str(out), "--calibration", str(calib)]) == 2
    assert "--quantize int8" in capsys.readouterr().err


def test_large_weights_go_to_external_data(monkeypatch, tmp_path):
    """ViT-H's 2.5 GB cannot sit inside a protobuf: above the threshold the weights are
    written beside the graph (here the threshold is lowered for a tiny model)."""
    import samkit.export.onnx as onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    ours, _ = model_pair(TINY, seed=1)
    export_onnx(ours, tmp_path)
    assert (tmp_path / "image_encoder.onnx.data").stat().st_size > \
        (tmp_path / "image_encoder.onnx").stat().st_size
    assert read_metadata(tmp_path / "image_encoder.onnx")["samkit_part"] == "image_encoder"
    op, tp = OnnxPredictor(tmp_path), SamPredictor(ours)
    img = scene(80, 100, seed=2)
    op.set_image(img)
    tp.set_image(img)
    box = np.array([10, 10, 70, 60])
    a = tp.predict(box=box, multimask_output=False)[0][0]
    b = op.predict(box=box, multimask_output=False)[0][0]
    assert iou(a, b) >= 0.999
