"""Video and volume propagation: frame sources, the propagator, J&F, samkit track."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from samkit import SamPredictor, build_sam, save_checkpoint
from samkit.cli import main
from samkit.errors import InputError
from samkit.eval.video import boundary_f, region_j
from samkit.registry import build_sam_from_config
from samkit.video import FrameResult, Prompt, PropagationConfig, VideoPropagator

from helpers import TINY, ct_volume, lively_state_dict, write_dicom_series

av = pytest.importorskip("av")


def moving_square_frames(n: int = 8, h: int = 72, w: int = 96) -> np.ndarray:
    """``(n, h, w, 3)``: a red square moving right over a grey gradient."""
    frames = np.empty((n, h, w, 3), np.uint8)
    ramp = np.linspace(60, 140, w).astype(np.uint8)
    for i in range(n):
        frames[i] = ramp[None, :, None]
        frames[i, 20:44, 10 + 4 * i:34 + 4 * i] = (220, 30, 30)
    return frames


@pytest.fixture(scope="module")
def tiny_model():
    model = build_sam_from_config(TINY)
    model.load_state_dict(lively_state_dict(TINY, seed=3))
    return model.eval()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_model):
    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("video") / "tiny.safetensors")


# -- frame sources -------------------------------------------------------------------------
def write_mp4(path, frames, fps=12):
    from samkit.io.video import VideoWriter

    with VideoWriter(path, fps) as writer:
        for f in frames:
            writer.write(f)
    return path


def test_video_file_reads_forward_backward_and_by_index(tmp_path):
    from samkit.io.video import VideoFrames, open_frames

    frames = moving_square_frames(11, 71, 95)  # odd sizes: the writer pads by one pixel
    path = write_mp4(tmp_path / "clip.mp4", frames)
    source = open_frames(path)
    assert isinstance(source, VideoFrames) and source.kind == "video"
    assert len(source) == 11 and source.size == (72, 96) and source.fps == pytest.approx(12)
    forward = [(i, f) for i, f in source.frames()]
    assert [i for i, _ in forward] == list(range(11))
    # lossy, but each decoded frame is close to what was written
    assert np.abs(forward[5][1][:71, :95].astype(int) - frames[5]).mean() < 6
    source.chunk = 4  # backward reads decode chunks of 4 frames, last chunk first
    backward = list(source.frames(2, 10, reverse=True))
    assert [i for i, _ in backward] == list(range(9, 1, -1))
    for i, f in backward:
        assert np.array_equal(f, forward[i][1])
    assert np.array_equal(source.read(7), forward[7][1])
    with pytest.raises(InputError, match="out of range"):
        source.read(11)
    source.close()


def test_unreadable_video_and_unknown_input_are_clear_errors(tmp_path):
    from samkit.io.video import open_frames

    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match=r"bad\.mp4"):
        open_frames(tmp_path / "bad.mp4")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a video"):
        open_frames(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        open_frames(tmp_path / "missing.mp4")


def test_frame_folder_is_ordered_by_number_and_checks_sizes(tmp_path):
    from samkit.io.video import open_frames

    frames = moving_square_frames(3)
    for i, name in enumerate(["frame_2.png", "frame_10.png", "frame_1.png"]):
        Image.fromarray(frames[i]).save(tmp_path / name)
    source = open_frames(tmp_path)
    assert source.kind == "frames"
    assert [p.name for p in source.files] == ["frame_1.png", "frame_2.png", "frame_10.png"]
    assert np.array_equal(source.read(0), frames[2])
    assert source.frame_name(2) == "frame_10"
    Image.fromarray(frames[0][:50]).save(tmp_path / "frame_11.png")
    with pytest.raises(InputError, match="same size"):
        open_frames(tmp_path).read(3)


def test_volume_slices_are_frames(tmp_path):
    from samkit.io.medical import write_nifti
    from samkit.io.video import open_frames

    pytest.importorskip("nibabel")
    hu = ct_volume(z=5)
    write_nifti(hu, np.diag([0.8, 0.8, 2.5, 1.0]), tmp_path / "ct.nii.gz")
    source = open_frames(tmp_path / "ct.nii.gz")
    assert source.kind == "volume" and len(source) == 5 and source.size == hu.shape[1:]
    image = source.read(4)
    assert image.shape == (*hu.shape[1:], 3) and image.dtype == np.uint8
    assert source.frame_name(4) == "z004"


# -- measures ------------------------------------------------------------------------------
def test_j_and_f_measures():
    a = np.zeros((60, 80), bool)
    a[10:40, 10:50] = True
    shifted = np.roll(a, 1, axis=1)
    empty = np.zeros_like(a)
    assert region_j(a, a) == 1 and boundary_f(a, a) == 1
    assert region_j(empty, empty) == 1 and boundary_f(empty, empty) == 1
    assert region_j(a, empty) == 0 and boundary_f(a, empty) == 0
    assert 0.9 < region_j(shifted, a) < 1  # one pixel off: IoU drops ...
    assert boundary_f(shifted, a) == 1  # ... the contour is within the tolerance
    far = np.zeros_like(a)
    far[45:58, 60:78] = True
    assert region_j(far, a) == 0 and boundary_f(far, a) == 0


# -- the propagator ------------------------------------------------------------------------
def run(model, frames, prompts, **kw):
    return list(VideoPropagator(model, kw.pop("config", None)).propagate(frames, prompts, **kw))


def test_every_frame_once_with_non_overlapping_masks(tiny_model):
    frames = moving_square_frames(8)
    prompts = {2: {1: Prompt(box=[18, 20, 42, 44])}, 5: {2: Prompt(points=[[60, 60]])}}
    results = run(tiny_model, list(frames), prompts)
    # forward from frame 2 (frames 2-4 held until the backward pass adds object 2), then back
    assert [r.index for r in results] == [5, 6, 7, 4, 3, 2, 1, 0]
    for r in results:
        assert isinstance(r, FrameResult)
        assert set(r.masks) == {1, 2} and set(r.status) == {1, 2}
        assert r.masks[1].shape == (72, 96) and r.masks[1].dtype == bool
        assert not (r.masks[1] & r.masks[2]).any()
        assert set(r.status.values()) <= {"prompted", "tracked", "recovered", "lost"}
        for obj, status in r.status.items():
            assert (r.scores[obj] == 0) == (status == "lost")
    by_index = {r.index: r for r in results}
    assert by_index[2].status[1] == "prompted" and by_index[5].status[2] == "prompted"


def test_forward_only_and_one_pass_iterators(tiny_model):
    frames = moving_square_frames(6)
    prompts = {3: {1: Prompt(box=[22, 20, 46, 44])}}
    assert [r.index for r in run(tiny_model, frames, prompts, backward=False)] == [3, 4, 5]
    assert [r.index for r in run(tiny_model, iter(frames), prompts)] == [3, 4, 5]
    assert [r.index for r in run(tiny_model, frames, prompts)] == [3, 4, 5, 2, 1, 0]


@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "built_inside"])
def test_propagation_under_torch_contexts(tiny_model, context):
    frames = list(moving_square_frames(4))
    prompts = {0: {1: Prompt(box=[10, 20, 34, 44])}}
    reference = run(tiny_model, frames, prompts)
    ctx = torch.no_grad() if context == "no_grad" else torch.inference_mode()
    with ctx:
        model = tiny_model
        if context == "built_inside":
            model = build_sam_from_config(TINY)
            model.load_state_dict(lively_state_dict(TINY, seed=3))
            model.eval()
        got = run(model, frames, prompts)
    for a, b in zip(reference, got):
        assert a.index == b.index and a.status == b.status
        assert np.array_equal(a.masks[1], b.masks[1])


def test_bad_prompts_are_clear_errors(tiny_model):
    frames = moving_square_frames(3)
    with pytest.raises(InputError, match="no prompts"):
        run(tiny_model, frames, {})
    with pytest.raises(InputError, match="integers >= 1"):
        run(tiny_model, frames, {0: {0: Prompt(box=[1, 1, 9, 9])}})
    with pytest.raises(InputError, match="out of range"):
        run(tiny_model, frames, {7: {1: Prompt(box=[1, 1, 9, 9])}})
    with pytest.raises(InputError, match="X1 > X0"):
        Prompt(box=[9, 1, 1, 9])
    with pytest.raises(InputError, match="points or a box"):
        Prompt()
    with pytest.raises(InputError, match="mode"):
        PropagationConfig(mode="boxes")


def test_onnx_predictor_propagates_like_torch(tiny_model, tmp_path):
    pytest.importorskip("onnxruntime")
    from samkit.backends.onnxruntime import OnnxPredictor
    from samkit.export.onnx import export_onnx

    export_onnx(tiny_model, tmp_path / "onnx")
    frames = list(moving_square_frames(4))
    prompts = {0: {1: Prompt(box=[10, 20, 34, 44])}}
    reference = run(tiny_model, frames, prompts)
    got = run(OnnxPredictor(tmp_path / "onnx", threads=1), frames, prompts)
    for a, b in zip(reference, got):
        assert a.index == b.index
        if a.masks[1].any() or b.masks[1].any():
            assert region_j(a.masks[1], b.masks[1]) > 0.95


# -- with the bundled model: it really follows objects -------------------------------------
@pytest.fixture(scope="module")
def nano_predictor():
    return SamPredictor(build_sam("nano"))


def clip_prompts(clip):
    from samkit.video import mask_box

    prompts: dict[int, dict[int, Prompt]] = {}
    for obj, f in clip.prompt_frames.items():
        prompts.setdefault(f, {})[obj] = Prompt(box=mask_box(clip.labels[f] == obj))
    return prompts


def test_nano_follows_moving_objects(nano_predictor):
    from samkit.data.video import make_video

    clip = make_video("val", 0, n_frames=10)  # "plain": objects apart, always in view
    results = run(nano_predictor, list(clip.frames), clip_prompts(clip))
    ious = [region_j(r.masks[obj], clip.labels[r.index] == obj)
            for r in results for obj in clip.prompt_frames]
    assert np.mean(ious) > 0.85
    assert all(s != "lost" for r in results for s in r.status.values())


def test_nano_loses_an_object_that_leaves_and_finds_it_again(nano_predictor):
    from samkit.data.video import make_video

    clip = make_video("val", 2, n_frames=24)  # "exit": object 1 leaves and comes back
    gone = [i for i in range(24) if not (clip.labels[i] == 1).any()]
    assert gone and gone[-1] < 22
    results = {r.index: r for r in run(nano_predictor, list(clip.frames), clip_prompts(clip))}
    assert any(results[i].status[1] == "lost" for i in gone)
    assert np.mean([not results[i].masks[1].any() for i in gone]) >= 0.8
    back = list(range(gone[-1] + 1, 24))
    assert "recovered" in {results[i].status[1] for i in back}
    assert np.mean([results[i].status[1] != "lost" for i in back]) >= 0.75
    # re-entering fast, it is followed loosely at first (the shipped nano strays for three
    # frames after re-entry, until the re-search finds it again at frame 21), then closely
    assert np.mean([region_j(results[i].masks[1], clip.labels[i] == 1) for i in back]) > 0.5
    assert min(region_j(results[i].masks[1], clip.labels[i] == 1) for i in back[-3:]) > 0.7


# -- samkit track --------------------------------------------------------------------------
def check_outputs(out, n, size, objects=(1,)):
    names = sorted((out / "masks").glob("*.png"))
    assert len(names) == n
    label = np.array(Image.open(names[0]))
    assert label.shape == size and label.dtype == np.uint8
    doc = json.loads((out / "tracks.json").read_text())
    assert doc["videos"][0]["length"] == n
    assert [a["object_id"] for a in doc["annotations"]] == list(objects)
    from samkit.io.formats import decode_segmentation

    for k, name in enumerate(names):
        label = np.array(Image.open(name))
        for ann in doc["annotations"]:
            seg = ann["segmentations"][k]
            mask = label == ann["object_id"]
            if seg is None:
                assert not mask.any()
            else:
                assert np.array_equal(decode_segmentation(seg, *size), mask)
    return doc


def test_track_mp4_writes_label_maps_tracks_and_overlay(tiny_ckpt, tmp_path, capsys):
    from samkit.io.video import open_frames

    clip = write_mp4(tmp_path / "clip.mp4", moving_square_frames(6))
    out = tmp_path / "out"
    rc = main(["track", str(clip), "-o", str(out), "--checkpoint", str(tiny_ckpt),
               "--frame", "2", "--box", "18,20,42,44", "--object", "2", "--frame", "4",
               "--point", "60,60", "--point", "5,5,0"])
    assert rc == 0
    doc = check_outputs(out, 6, (72, 96), objects=(1, 2))
    prompts = doc["info"]["prompts"]
    assert prompts["2"]["1"]["box"] == [18, 20, 42, 44]
    assert prompts["4"]["2"]["labels"] == [1, 0]
    overlay = open_frames(out / "overlay.mp4")
    assert len(overlay) == 6 and overlay.size == (72, 96)
    assert "object 1:" in capsys.readouterr().out


def test_track_frame_folder_and_prompt_file(tiny_ckpt, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(moving_square_frames(4)):
        Image.fromarray(f).save(folder / f"{i:05d}.jpg")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"object": 3, "frame": 1, "box": [14, 20, 38, 44]}]))
    out = tmp_path / "out"
    assert main(["track", str(folder), "-o", str(out), "--checkpoint", str(tiny_ckpt),
                 "--prompts", str(prompts), "--no-video"]) == 0
    check_outputs(out, 4, (72, 96), objects=(3,))
    assert not (out / "overlay.mp4").exists()


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_track_volume_writes_a_label_volume_with_the_affine(tiny_ckpt, tmp_path, kind):
    pytest.importorskip("pydicom")
    nib = pytest.importorskip("nibabel")
    from samkit.io.medical import read_volume, write_nifti

    hu = ct_volume(z=5)
    if kind == "nifti":
        src = write_nifti(hu, np.diag([0.8, 0.7, 2.5, 1.0]), tmp_path / "ct.nii.gz")
    else:
        write_dicom_series(tmp_path / "series", hu)
        src = tmp_path / "series"
    out = tmp_path / "out"
    assert main(["track", str(src), "-o", str(out), "--checkpoint", str(tiny_ckpt),
                 "--frame", "2", "--point", "29,20", "--no-video"]) == 0
    check_outputs(out, 5, hu.shape[1:])
    labels = nib.load(str(out / "labels.nii.gz"))
    assert np.allclose(labels.affine, read_volume(src).affine)
    assert labels.shape == (hu.shape[2], hu.shape[1], hu.shape[0])  # x, y, z
    stored = read_volume(out / "labels.nii.gz").data
    maps = [np.array(Image.open(p)) for p in sorted((out / "masks").glob("*.png"))]
    assert np.array_equal(stored, np.stack(maps))


def test_track_argument_errors(tiny_ckpt, tmp_path, capsys):
    clip = write_mp4(tmp_path / "clip.mp4", moving_square_frames(3))
    base = ["track", str(clip), "-o", str(tmp_path / "o"), "--checkpoint", str(tiny_ckpt)]
    assert main(base) == 2
    assert "no prompts" in capsys.readouterr().err
    assert main([*base, "--frame", "9", "--box", "1,1,9,9"]) == 2
    assert "has 3 frame(s)" in capsys.readouterr().err
    assert main([*base, "--box", "1,1,9,9", "--box", "2,2,8,8"]) == 2
    assert "one box per object" in capsys.readouterr().err
    assert main([*base, "--object", "0", "--box", "1,1,9,9"]) == 2
    assert ">= 1" in capsys.readouterr().err
    assert main([*base, "--box", "1,1,9,9", "--window", "40,400"]) == 2
    assert "--window is for volumes" in capsys.readouterr().err
    bad = tmp_path / "prompts.json"
    bad.write_text(json.dumps([{"object": 1, "frame": 0, "box": ["a", 2, 3, 4]}]))
    assert main([*base, "--prompts", str(bad)]) == 2
    assert "bad prompt" in capsys.readouterr().err


def test_eval_video_on_synthetic_clips(tmp_path, capsys):
    data = tmp_path / "clips"
    assert main(["data", "synth", "--domain", "videos", "--n", "1", "--frames", "5",
                 "--split", "val", "-o", str(data)]) == 0
    report = tmp_path / "report.json"
    assert main(["eval-video", str(data), "--model", "nano", "-o", str(report)]) == 0
    table = json.loads(report.read_text())["table"]
    assert set(table) == {"plain", "all"}
    row = table["plain"]
    assert 0 <= row["JF"] <= 1 and 0 < row["bound_JF"] <= 1
    assert row["ratio"] == pytest.approx(row["JF"] / row["bound_JF"])
    assert "bound J&F" in capsys.readouterr().out
